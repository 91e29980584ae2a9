"""Helpers offered to the model's code next to ``llm_query``: ``grep`` and ``map_chunks``.

Small models write short calls well and long loops badly, so the two steps every long-context
answer needs are one call each:

- ``grep(pattern)`` finds every line of ``context`` that matches a regular expression and
  returns them as strings (:class:`Line`), each cut to ``width`` characters around the match,
  each with ``.offset``: where the line starts in the text (for a list of documents, the
  document's index), and ``.around(before, after)``: the text around the line.  Plain strings,
  because small models call ``split``, ``re.search`` and ``"\n".join`` on what grep returns.
  ``len(grep(...))`` counts matching lines.
- ``map_chunks(instruction)`` cuts the text into pieces at line ends and asks the sub-model the
  instruction about every piece at once (``llm_query_batched``); answers come back in order.

Nothing here knows any data format.  Pure functions over text; the REPL binds ``context``
and the query function.
"""

from __future__ import annotations

import json
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
    can give the text around it, ``.around()``, and the nearest line at or above it that matches
    a pattern, ``.before(pattern)``."""

    __slots__ = ("offset", "_doc", "_start", "_end", "_index")
    offset: int

    def __new__(cls, text: str, offset: int, doc: str | None = None, start: int = 0, end: int = 0,
                index: int | None = None) -> Line:
        line = super().__new__(cls, text)
        line.offset = offset
        line._doc, line._start, line._end, line._index = doc, start, end, index
        return line

    def before(self, pattern, width: int = DEFAULT_WIDTH) -> Line:
        """The nearest line, this one or above it, that matches ``pattern`` (a regular expression,
        case ignored), as a Line: the function, file or section this line is in, e.g.
        ``line.before(r"def ")`` (a ``def`` line is in its own function, a heading in its own
        section); an empty Line when none matches."""
        if self._doc is None:
            return Line("", self.offset)
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
                            doc, start + lo, start + hi, self._index)
            end = start - 1
        return Line("", self.offset)

    def around(self, before: int = 1000, after: int = 300) -> str:
        """The text from ``before`` characters before this line to ``after`` characters after it
        (the file, function or section it is in usually shows there); for a long line cut
        around the match, around the part shown."""
        if self._doc is None:
            return str(self)
        return self._doc[max(0, self._start - max(0, int(before))):self._end + max(0, int(after))]

    def __reduce__(self):  # copies keep the offset, not the whole text around
        return (Line, (str(self), self.offset))


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

