"""Helpers offered to the model's code next to ``llm_query``: ``grep``, ``search`` and ``map_chunks``.

Small models write short calls well and long loops badly, so the two steps every long-context
answer needs are one call each:

- A folder's documents are :class:`Document` strings: the file's text, with ``.path``, its path
  relative to the folder (``context[i].path``; ``len(context)`` is the number of files).
- ``grep(pattern)`` finds every line of ``context`` that matches a regular expression and
  returns them as strings (:class:`Line`), each cut to ``width`` characters around the match,
  each with ``.offset``: where the line starts in the text (for a list of documents, the
  document's index), ``.path``: the path of the document it is in (a folder's file; else None),
  and ``.around(before, after)``: the text around the line.  Plain strings,
  because small models call ``split``, ``re.search`` and ``"\n".join`` on what grep returns.
  ``len(grep(...))`` counts matching lines.
- ``search(query, k)`` ranks the passages of ``context`` (paragraphs, or lines when the text has no
  blank lines) by BM25 against the words of ``query`` (``rank_bm25``) and returns the best ``k`` as
  strings (:class:`Passage`) with ``.offset`` (where the passage starts in its document),
  ``.index`` (the document's index for a list of documents, else None), ``.path`` (its document's
  path, for a folder), ``.score`` and ``.around()``.
- ``map_chunks(instruction)`` cuts the text into pieces at line ends and asks the sub-model the
  instruction about every piece at once (``llm_query_batched``); answers come back in order.

Nothing here knows any data format.  Pure functions over text; the REPL binds ``context``
and the query function.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator

from protocol import MAP_CHUNK_CHARS, NO_MATCH_NOTE

DEFAULT_WIDTH = 300


def compile_pattern(pattern, flags: int = re.IGNORECASE) -> re.Pattern:
    """``pattern`` as a regex; text that is not a valid regex is searched for literally."""
    if isinstance(pattern, re.Pattern):
        return pattern
    text = str(pattern)
    try:
        return re.compile(text, flags)
    except re.error:
        return re.compile(re.escape(text), flags)


class Document(str):
    """A document of a folder: the file's text (a str, printed and sliced like one) that also knows
    ``.path``, the file's path relative to the folder (``/`` between folders)."""

    __slots__ = ("path",)
    path: str

    def __new__(cls, text: str, path: str) -> Document:
        doc = super().__new__(cls, text)
        doc.path = path
        return doc

    def __repr__(self) -> str:
        head = str.__repr__(str(self[:60]))
        return f"Document(path={self.path!r}, {len(self):,} characters: {head}{'...' if len(self) > 60 else ''})"

    def __reduce__(self):
        return (Document, (str(self), self.path))


def load_folder(folder: str, read: Callable[[str], str]) -> list[Document]:
    """The files under ``folder`` as Documents, in ``os.walk`` order (folders sorted, then files sorted;
    linked folders listed, not entered), each read with ``read``; their paths relative to ``folder``."""
    docs: list[Document] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            docs.append(Document(read(full), os.path.relpath(full, folder).replace(os.sep, "/")))
    return docs


def _path(doc) -> str | None:
    path = getattr(doc, "path", None)
    return path if isinstance(path, str) else None


def _as_text(doc) -> str:
    return doc if isinstance(doc, str) else json.dumps(doc, default=str)


def _documents(text) -> Iterator[tuple[int | None, str]]:
    """(document index or None for one text, text) for a str, a list of documents or a dict."""
    if isinstance(text, str):
        yield None, text
    elif isinstance(text, dict):
        yield None, json.dumps(text, default=str)
    elif isinstance(text, (list, tuple)):
        for i, doc in enumerate(text):
            yield i, _as_text(doc)
    else:
        yield None, str(text)


def _window(length: int, start: int, end: int, width: int) -> tuple[int, int]:
    """The [lo, hi) window of about ``width`` characters of a line of ``length`` that holds the
    match at [start, end).

    Windows start at multiples of half the width, so patterns that hit the same place show the
    same text (the loop then sees that nothing new came out).
    """
    if length <= width:
        return 0, length
    step = max(1, width // 2)
    lo = (start // step) * step
    hi = max(lo + width, end)
    if hi > length:
        lo, hi = max(0, length - width), length
    return lo, hi


def _cut(line: str, start: int, end: int, width: int) -> str:
    """``line`` cut to its window around the match at [start, end), marked with ... where cut."""
    lo, hi = _window(len(line), start, end, width)
    return ("..." if lo > 0 else "") + line[lo:hi] + ("..." if hi < len(line) else "")


class Line(str):
    """A line grep found: a str (printed like one) that also knows where it starts, ``.offset``,
    which file it is in, ``.path`` (for a folder's documents; else None), can give the text around
    it, ``.around()``, and the nearest line at or above it that matches a pattern, ``.before(pattern)``."""

    __slots__ = ("offset", "path", "_doc", "_start", "_end", "_index")
    offset: int
    path: str | None

    def __new__(cls, text: str, offset: int, doc: str | None = None, start: int = 0, end: int = 0,
                index: int | None = None, path: str | None = None) -> Line:
        line = super().__new__(cls, text)
        line.offset, line.path = offset, path if path is not None else _path(doc)
        line._doc, line._start, line._end, line._index = doc, start, end, index
        return line

    def before(self, pattern, width: int = DEFAULT_WIDTH) -> Line:
        """The nearest line, this one or above it, that matches ``pattern`` (a regular expression,
        case ignored), as a Line: the function, file or section this line is in, e.g.
        ``line.before(r"def ")`` (a ``def`` line is in its own function, a heading in its own
        section); an empty Line when none matches."""
        if self._doc is None:
            return Line("", self.offset, path=self.path)
        regex = compile_pattern(pattern)
        doc = self._doc
        end = doc.find("\n", self._start)              # the line end of this line
        end = len(doc) if end < 0 else end
        while end >= 0:
            start = doc.rfind("\n", 0, end) + 1
            text = doc[start:end]
            match = regex.search(text)   # on the line alone, so ^ and $ are its start and end
            if match is not None:
                s, e = match.start(), match.end()
                lo, hi = _window(end - start, s, e, width)
                return Line(_cut(text, s, e, width), self._index if self._index is not None else start,
                            doc, start + lo, start + hi, self._index, self.path)
            end = start - 1
        return Line("", self.offset, path=self.path)

    def around(self, before: int = 1000, after: int = 300) -> str:
        """The text from ``before`` characters before this line to ``after`` characters after it
        (the file, function or section it is in usually shows there); for a long line cut
        around the match, around the part shown."""
        if self._doc is None:
            return str(self)
        return self._doc[max(0, self._start - max(0, int(before))):self._end + max(0, int(after))]

    def __reduce__(self):  # copies keep the offset and path, not the whole text around
        return (Line, (str(self), self.offset, None, 0, 0, None, self.path))


def grep(text, pattern, *, width: int = DEFAULT_WIDTH, flags: int = re.IGNORECASE) -> list[Line]:
    """Every line of ``text`` matching ``pattern``, one entry per line, with its ``.offset``; ``^`` and
    ``$`` are a line's start and end (``grep(r"^def ")``), as for ``Line.before``."""
    regex = compile_pattern(pattern, flags | re.MULTILINE)
    hits: list[Line] = []
    for index, doc in _documents(text):
        last_line = -1
        for match in regex.finditer(doc):
            line_start = doc.rfind("\n", 0, match.start()) + 1
            if line_start == last_line:
                continue  # one entry per line
            last_line = line_start
            line_end = doc.find("\n", match.end())
            line_end = len(doc) if line_end < 0 else line_end
            start, end = match.start() - line_start, match.end() - line_start
            line = _cut(doc[line_start:line_end], start, end, width)
            lo, hi = _window(line_end - line_start, start, end, width)   # around() is around what is shown
            hits.append(Line(line, index if index is not None else line_start, doc, line_start + lo, line_start + hi,
                             index))
    return hits


_TERM = re.compile(r"[^\W_]{3,}")


def no_match_hint(text, pattern, *, flags: int = re.IGNORECASE, limit: int = 4) -> str | None:
    """For a pattern of several words that matched no line: how many lines each word alone
    matches (``None`` for a single word, or when no word matches either)."""
    source = pattern.pattern if isinstance(pattern, re.Pattern) else str(pattern)
    words = list(dict.fromkeys(w.lower() for w in _TERM.findall(source)))[:limit]
    if len(words) < 2:
        return None
    counts = [(w, len(grep(text, re.escape(w), flags=flags))) for w in words]
    if not any(n for _, n in counts):
        return None
    shown = ", ".join(f"grep({w!r}) {n} lines" for w, n in counts)
    return f"grep({source!r}) {NO_MATCH_NOTE} {shown}"


PASSAGE_CHARS = 400     # a longer paragraph (or line) is cut into pieces of about this size: a hit printed whole fits the output
_WORDS = re.compile(r"[^\W_]+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


class Passage(str):
    """A passage ``search`` found: a str (printed like one) that also knows where it starts in its
    document, ``.offset``, which document that is, ``.index`` (None for one text), its BM25
    ``.score``, and can give the text around it, ``.around()``."""

    __slots__ = ("offset", "index", "score", "path", "_doc", "_end")
    offset: int
    index: int | None
    score: float
    path: str | None

    def __new__(cls, text: str, offset: int, index: int | None = None, score: float = 0.0,
                doc: str | None = None, path: str | None = None) -> Passage:
        passage = super().__new__(cls, text)
        passage.offset, passage.index, passage.score = offset, index, score
        passage.path = path if path is not None else _path(doc)
        passage._doc, passage._end = doc, offset + len(text)
        return passage

    def around(self, before: int = 1000, after: int = 1000) -> str:
        """The text from ``before`` characters before this passage to ``after`` characters after it."""
        if self._doc is None:
            return str(self)
        return self._doc[max(0, self.offset - max(0, int(before))):self._end + max(0, int(after))]

    def __repr__(self) -> str:
        where = f"doc {self.index}, " if self.index is not None else ""
        where += f"{self.path}, " if self.path is not None else ""
        return f"Passage({str.__repr__(self)}, {where}offset {self.offset}, score {self.score:.2f})"

    def __reduce__(self):  # copies keep the position, not the whole document
        return (Passage, (str(self), self.offset, self.index, self.score, None, self.path))


def tokens(text: str) -> list[str]:
    """The words of ``text``, lower case (letters and digits; any script)."""
    return _WORDS.findall(text.lower())


_SENTENCE_END = re.compile(r"[.!?。！？][\"')\]]*\s")


def _piece_end(doc: str, start: int, size: int) -> int:
    """Where a piece from ``start`` ends: after the last sentence end in its second half, else at the
    last line end or space, else at ``size`` characters (a passage printed whole reads whole sentences)."""
    last = None
    for m in _SENTENCE_END.finditer(doc, start + size // 2, start + size):
        last = m
    if last is not None:
        return last.end()
    cut = max(doc.rfind("\n", start, start + size), doc.rfind(" ", start, start + size))
    return cut + 1 if cut > start else start + size


def _pieces(doc: str, start: int, end: int, size: int) -> Iterator[tuple[int, int]]:
    """[start, end) cut into pieces of at most about ``size`` characters, at sentence ends where
    there are any, else at line ends or spaces."""
    while end - start > size:
        cut = _piece_end(doc, start, size)
        yield start, cut
        start = cut
    if end > start:
        yield start, end


def passages(doc: str, size: int = PASSAGE_CHARS) -> list[tuple[int, int]]:
    """The [start, end) spans of ``doc``'s passages: its paragraphs (text between blank lines), or its
    lines when it has no blank line; each cut to about ``size`` characters; blank ones left out."""
    spans: list[tuple[int, int]] = []
    breaks = [(m.start(), m.end()) for m in _PARAGRAPH_BREAK.finditer(doc)]
    if breaks:
        bounds, pos = [], 0
        for lo, hi in breaks:
            bounds.append((pos, lo))
            pos = hi
        bounds.append((pos, len(doc)))
    else:
        bounds, pos = [], 0
        while pos <= len(doc):
            nl = doc.find("\n", pos)
            nl = len(doc) if nl < 0 else nl
            bounds.append((pos, nl))
            pos = nl + 1
    for lo, hi in bounds:
        while lo < hi and doc[lo].isspace():
            lo += 1
        while hi > lo and doc[hi - 1].isspace():
            hi -= 1
        spans.extend(_pieces(doc, lo, hi, size))
    return spans


class PassageIndex:
    """A BM25 index over the passages of a text or a list of documents."""

    def __init__(self, text, size: int = PASSAGE_CHARS) -> None:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # numpy's BLAS: one thread, small buffers
        from rank_bm25 import BM25Okapi

        self.docs: list[tuple[int | None, str]] = list(_documents(text))
        self.spans: list[tuple[int, int, int]] = []   # (position in self.docs, start, end)
        corpus: list[list[str]] = []
        for position, (_index, doc) in enumerate(self.docs):
            for start, end in passages(doc, size):
                self.spans.append((position, start, end))
                corpus.append(tokens(doc[start:end]))
        self.bm25 = BM25Okapi(corpus) if corpus and any(corpus) else None

    def search(self, query, k: int = 5) -> list[Passage]:
        """The ``k`` passages that rank best for the words of ``query``, best first; a passage that
        shares no word with the query is never returned."""
        words = tokens(str(query))
        if self.bm25 is None or not words or k <= 0:
            return []
        scores = self.bm25.get_scores(words)
        wanted = set(words)
        order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
        hits: list[Passage] = []
        for i in order:
            if len(hits) >= k:
                break
            position, start, end = self.spans[i]
            index, doc = self.docs[position]
            text = doc[start:end]
            if not wanted.intersection(tokens(text)):
                continue
            hits.append(Passage(text, start, index, round(float(scores[i]), 4), doc))
        return hits


_INDEXES: dict[int, tuple[object, PassageIndex]] = {}   # id(text) -> (text, its index): the context's is kept


def search(text, query, k: int = 5) -> list[Passage]:
    """The ``k`` passages of ``text`` (a str, a list of documents or a dict) that rank best by BM25 for
    the words of ``query``, best first, each with ``.offset``, ``.index``, ``.score`` and ``.around()``.
    The index of a text is built once and kept while the same object is searched again."""
    key = id(text)
    cached = _INDEXES.get(key)
    if cached is None or cached[0] is not text:
        _INDEXES.clear()   # only the last text's index is kept (the context's, usually)
        cached = (text, PassageIndex(text))
        _INDEXES[key] = cached
    return cached[1].search(query, int(k))


def chunks(text, chunk_chars: int = MAP_CHUNK_CHARS) -> list[str]:
    """``text`` cut into pieces of at most ``chunk_chars`` characters, at line ends where there are any."""
    size = max(100, int(chunk_chars))
    pieces: list[str] = []
    for _index, doc in _documents(text):
        start = 0
        while start < len(doc):
            end = min(len(doc), start + size)
            if end < len(doc):
                newline = doc.rfind("\n", start, end)
                end = newline + 1 if newline > start else end
            pieces.append(doc[start:end])
            start = end
    return pieces


def map_chunks(query_batched: Callable[[list[str]], list[str]], text, instruction,
               chunk_chars: int = MAP_CHUNK_CHARS) -> list[str]:
    """The sub-model's answer to ``instruction`` for every piece of ``text``, in order."""
    pieces = chunks(text, chunk_chars)
    n = len(pieces)
    prompts = [f"{instruction}\n\nText (part {i} of {n}):\n{piece}" for i, piece in enumerate(pieces, start=1)]
    return list(query_batched(prompts)) if prompts else []

