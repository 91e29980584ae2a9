"""Reading model replies: code blocks and final answers; making text safe to show.

Rules (the README copies them):

1. Code is a fenced block whose info string starts with ``repl``, ``python``, ``py`` or
   ``python3`` (any case; spaces after the fence and words after the language are
   allowed).  Fences are three or more backticks (or tildes) at the start of a line; any
   indentation of the opening fence is removed from the body.  A block closes at a line
   holding only a fence of the same character, at least as long.  A block still open at
   the end of the reply runs to the end.  Blocks come back in order, without leading blank
   lines or trailing whitespace; empty blocks are skipped.
2. Bare fences and other languages (```` ```text ````, ```` ```json ````, ...) are not
   code: models use them to quote data, program output and examples, and running them
   would execute prose.  The system prompt asks for ```` ```repl ````.
3. ``FINAL(answer)`` anywhere outside code blocks is a text answer: in prose ("The answer
   is FINAL(42)"), in bold, in a non-code fence.  Inside a code block it is a function call
   that the kernel handles, so the parser ignores it there.  It is case-sensitive and must
   not follow a letter, digit or underscore (``MY_FINAL(x)`` does not count).
4. The answer runs to the matching parenthesis: nested parentheses and parentheses inside
   quoted strings are skipped, and it may span lines.  It is stripped, and one level of
   matching surrounding quotes (``"``, ``'``, ``\"\"\"``, ``'''``) is removed.  ``FINAL()`` is
   the empty answer; a ``FINAL(`` that never closes is ignored.
5. ``FINAL_VAR(name)`` answers with the value of a REPL variable; spaces and quotes around
   the name are removed and it must be a Python identifier (not a keyword), else it is
   ignored.
6. If a reply holds several, the last well-formed one wins.

Recovering from small models' mistakes (the orchestrator uses these):

7. A cell that is only ``FINAL(...)`` and fails because its argument is not Python
   (``SyntaxError``: ``FINAL(The answer is 42)``), or is a formula over undefined names
   (``NameError``: ``FINAL(0 <= x < 256)``), answers with the argument's literal text
   (``literal_final_answer``).  A plain reference (``FINAL(answer)``, ``FINAL(d['k'])``,
   a call, an f-string) is not taken literally: the model meant a value it has not made.
8. Two cells are the same cell when their code is equal after whitespace is normalised
   (``normalize_code``).
9. An answer taken from a reply that never wrote FINAL never keeps code fences or a
   ``FINAL(`` wrapper (``clean_answer``).

Anything that came from the sandbox or a model goes through ``sanitize_for_terminal``
before the host prints it, and output shown to the model is cut by ``truncate_output``.
"""

from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass
from typing import Literal

from rlm.core.text import terminal_text

CODE_LANGUAGES = frozenset({"repl", "python", "py", "python3"})

_FENCE_OPEN = re.compile(r"(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>.*)")
_FENCE_CLOSE = re.compile(r"[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*")
_LANG = re.compile(r"[A-Za-z0-9_+.-]*")
_FINAL = re.compile(r"(?<!\w)FINAL(?P<var>_VAR)?[ \t]*\(")
_STRING_PREFIXES = frozenset({"", "r", "f", "b", "u", "rb", "br", "fr", "rf"})


@dataclass(frozen=True)
class Final:
    """A final answer found in the text of a reply."""

    kind: Literal["answer", "var"]
    value: str  # the answer text, or the variable name for kind == "var"


@dataclass(frozen=True)
class _Block:
    start: int  # offset of the opening fence line
    end: int    # offset just after the closing fence line (or the end of the text)
    lang: str   # lower-cased first word of the info string; "" for a bare fence
    body: str

    @property
    def is_code(self) -> bool:
        return self.lang in CODE_LANGUAGES


# --------------------------------------------------------------------------- code blocks


def find_code_blocks(text: str) -> list[str]:
    """The bodies of the executable (repl/python) fenced blocks, in order."""
    bodies = (_clean_body(b.body) for b in _scan_blocks(text) if b.is_code)
    return [body for body in bodies if body]


def _scan_blocks(text: str) -> list[_Block]:
    """Every fenced block of ``text``, executable or not, with its offsets."""
    lines = text.split("\n")
    starts = _line_starts(lines)
    blocks: list[_Block] = []
    i = 0
    while i < len(lines):
        opening = _open_fence(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, lang = opening
        j = i + 1
        while j < len(lines) and not _closes(lines[j], fence):
            j += 1
        body = "\n".join(_dedent(line.rstrip("\r"), indent) for line in lines[i + 1 : j])
        end = starts[j + 1] if j + 1 < len(lines) else len(text)
        blocks.append(_Block(start=starts[i], end=end, lang=lang, body=body))
        i = j + 1
    return blocks


def _line_starts(lines: list[str]) -> list[int]:
    starts, pos = [], 0
    for line in lines:
        starts.append(pos)
        pos += len(line) + 1
    return starts


def _open_fence(line: str) -> tuple[str, str, str] | None:
    """(indent, fence, language) when ``line`` opens a fenced block."""
    m = _FENCE_OPEN.fullmatch(line.rstrip("\r"))
    if m is None:
        return None
    fence, info = m.group("fence"), m.group("info").strip()
    if fence[0] == "`" and "`" in info:  # ```x``` on one line is inline code, not a fence
        return None
    lang_match = _LANG.match(info)
    lang = lang_match.group(0).lower() if lang_match else ""
    return m.group("indent"), fence, lang


def _closes(line: str, fence: str) -> bool:
    m = _FENCE_CLOSE.fullmatch(line.rstrip("\r"))
    return m is not None and m.group("fence")[0] == fence[0] and len(m.group("fence")) >= len(fence)


def _dedent(line: str, indent: str) -> str:
    """Remove up to ``len(indent)`` leading spaces/tabs."""
    n = 0
    while n < len(indent) and n < len(line) and line[n] in " \t":
        n += 1
    return line[n:]


def _clean_body(body: str) -> str:
    body = re.sub(r"\A(?:[ \t]*\n)+", "", body)
    return body.rstrip()


# --------------------------------------------------------------------------- FINAL


def find_final(text: str) -> Final | None:
    """The last well-formed FINAL(...) / FINAL_VAR(...) outside executable code blocks."""
    found: Final | None = None
    for segment in _prose_segments(text):
        last = _last_final(segment)
        if last is not None:
            found = last
    return found


def _prose_segments(text: str) -> list[str]:
    """The parts of ``text`` between executable code blocks."""
    segments, pos = [], 0
    for block in _scan_blocks(text):
        if block.is_code:
            segments.append(text[pos : block.start])
            pos = block.end
    segments.append(text[pos:])
    return segments


def _last_final(segment: str) -> Final | None:
    """The last well-formed FINAL of ``segment``, in time linear in its length: the quote-aware scans
    of all its FINAL( share one budget of characters, and past it the plain parenthesis count (known
    for every ``(`` from one pass) decides (a reply of many unclosed ``FINAL(`` is not rescanned to
    its end for each)."""
    found: Final | None = None
    plain = _plain_closes(segment)
    budget = [SCAN_BUDGET_FACTOR * len(segment) + SCAN_BUDGET_MIN]
    pos = 0
    while (m := _FINAL.search(segment, pos)) is not None:
        close = _scan_parens(segment, m.end(), quote_aware=True, budget=budget) if budget[0] > 0 else None
        close = close if close is not None else plain.get(m.end() - 1)
        if close is None:
            pos = m.end()
            continue
        final = _make_final(segment[m.end() : close], is_var=m.group("var") is not None)
        if final is None:
            pos = m.end()
            continue
        found, pos = final, close + 1
    return found


SCAN_BUDGET_FACTOR = 4      # the quote-aware scans of one text step at most this many times its length,
SCAN_BUDGET_MIN = 10_000    # plus this many characters


def _plain_closes(text: str) -> dict[int, int]:
    """For every ``(`` of ``text`` that closes, the index of its ``)`` by plain counting (one pass)."""
    closes: dict[int, int] = {}
    stack: list[int] = []
    for m in _PARENS.finditer(text):
        if m.group() == "(":
            stack.append(m.start())
        elif stack:
            closes[stack.pop()] = m.start()
    return closes


_PARENS = re.compile(r"[()]")


def _make_final(inside: str, *, is_var: bool) -> Final | None:
    if not is_var:
        return Final("answer", _unquote(inside.strip()))
    name = inside.strip().strip("\"'` \t\r\n")
    if not name.isidentifier() or keyword.iskeyword(name):
        return None
    return Final("var", name)


def _matching_paren(text: str, start: int) -> int | None:
    """Index of the ``)`` closing the ``(`` just before ``start``, or None.

    Quoted strings are skipped first; if that finds no close (an apostrophe in prose
    can look like an opening quote), or the scan steps past its budget (linear in the
    text's length), plain parenthesis counting is tried.
    """
    budget = [SCAN_BUDGET_FACTOR * (len(text) - start) + SCAN_BUDGET_MIN]
    close = _scan_parens(text, start, quote_aware=True, budget=budget)
    return close if close is not None else _scan_parens(text, start, quote_aware=False)


def _scan_parens(text: str, start: int, *, quote_aware: bool, budget: list[int] | None = None) -> int | None:
    """The ``)`` closing the ``(`` before ``start``; None when none does, or when the characters
    stepped over (strings' too) exhaust ``budget[0]`` (decremented in place)."""
    special = _PAREN_OR_QUOTE if quote_aware else _PARENS
    depth, i = 1, start
    while (m := special.search(text, i)) is not None:
        if budget is not None:
            budget[0] -= m.start() - i + 1
            if budget[0] <= 0:
                return None
        i = m.start()
        ch = text[i]
        if ch in "\"'":
            end = _string_end(text, i, budget) if _opens_string(text, start, i) else None
            i = end if end is not None else i + 1
            continue
        depth += 1 if ch == "(" else -1
        if depth == 0:
            return i
        i += 1
    return None


_PAREN_OR_QUOTE = re.compile(r"[()\"']")
_STRING_STOPS = {'"': re.compile(r'[\\\n"]'), "'": re.compile(r"[\\\n']"),
                 '"""': re.compile(r'[\\"]'), "'''": re.compile(r"[\\']")}


def _opens_string(text: str, start: int, i: int) -> bool:
    """A quote opens a string unless it follows a word (``it's``), string prefixes aside."""
    j = i
    while j > start and i - j < 3 and (text[j - 1].isalnum() or text[j - 1] == "_"):
        j -= 1   # a prefix is at most two letters: a longer word is looked at no further
    if j > start and (text[j - 1].isalnum() or text[j - 1] == "_"):
        return False
    return text[j:i].lower() in _STRING_PREFIXES


def _string_end(text: str, i: int, budget: list[int] | None = None) -> int | None:
    """Index just after the string literal opening at ``i``; None if it never closes (or the
    characters stepped over exhaust ``budget[0]``)."""
    quote = text[i] * 3 if text.startswith(text[i] * 3, i) else text[i]
    stops = _STRING_STOPS[quote]
    j = i + len(quote)
    while (m := stops.search(text, j)) is not None:
        if budget is not None:
            budget[0] -= m.start() - j + 1
            if budget[0] <= 0:
                return None
        j = m.start()
        if text[j] == "\\":
            j += 2
        elif text.startswith(quote, j):
            return j + len(quote)
        elif text[j] == "\n":   # only a one-quote string stops at a line end
            return None
        else:
            j += 1
    return None


def _unquote(s: str) -> str:
    """Remove one level of matching surrounding quotes when ``s`` is one string literal."""
    for quote in ('"""', "'''", '"', "'"):
        if len(s) >= 2 * len(quote) and s.startswith(quote) and s.endswith(quote):
            inner = s[len(quote) : -len(quote)]
            if _has_unescaped(inner, quote):
                return s
            return inner if len(quote) == 3 else inner.replace("\\" + quote, quote)
    return s


def _has_unescaped(text: str, quote: str) -> bool:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text.startswith(quote, i):
            return True
        else:
            i += 1
    return False


# --------------------------------------------------------------------------- recovery

_CELL_FINAL = re.compile(r"FINAL[ \t]*\(")
# what a formula written as an answer is made of: names, numbers and operators, nothing that
# refers to a value the model meant to build (calls, attributes, subscripts, f-strings, strings)
_REFERENCE_NODES = (ast.Call, ast.Subscript, ast.JoinedStr)   # a value to build, never literal text
_FORMULA_NODES = (ast.Expression, ast.Name, ast.Load, ast.Compare, ast.BinOp, ast.BoolOp, ast.UnaryOp,
                  ast.Tuple, ast.operator, ast.cmpop, ast.boolop, ast.unaryop)


def normalize_code(code: str) -> str:
    """The code with blank lines dropped, line ends stripped and runs of spaces or tabs made one
    space: two cells are "the same cell" when these are equal."""
    lines = (re.sub(r"[ \t]+", " ", line).rstrip() for line in code.replace("\r", "").split("\n"))
    return "\n".join(line for line in lines if line.strip())


def literal_final_answer(code: str, error_name: str | None, seen: str = "") -> str | None:
    """The literal text of the argument of a cell that is only ``FINAL(...)`` and failed with a
    ``SyntaxError`` (the argument is not Python) or a ``NameError`` (a formula such as
    ``0 <= x < 256`` over names that do not exist, or a bare name that occurs as a word in
    ``seen``, the outputs the model was shown: ``FINAL(processInvoice)`` after an output that
    named ``processInvoice``, or ``FINAL(render/event_27.py)`` after one that showed that path);
    None when the rule does not apply."""
    if error_name not in ("SyntaxError", "NameError"):
        return None
    lines = [line for line in code.strip().split("\n") if line.strip() and not line.lstrip().startswith("#")]
    text = "\n".join(lines).strip()
    m = _CELL_FINAL.match(text)
    if m is None:
        return None
    close = _matching_paren(text, m.end())
    if close is None or text[close + 1 :].strip().lstrip(";").strip():
        return None
    arg = text[m.end() : close].strip()
    if not arg:
        return None
    try:
        tree = ast.parse(arg, mode="eval")
    except SyntaxError:
        return _unquote(arg) if error_name == "SyntaxError" else None
    if error_name != "NameError":
        return None
    shown = re.search(rf"(?<![\w.]){re.escape(arg)}(?!\w)", seen) is not None
    if isinstance(tree.body, ast.Name):   # an answer the output showed, or a variable never built
        return arg if shown else None
    if shown and not any(isinstance(node, _REFERENCE_NODES) for node in ast.walk(tree)):
        return arg                        # text the output showed that reads as Python: a path, a.b
    if not all(isinstance(node, _FORMULA_NODES) or _is_number(node) for node in ast.walk(tree)):
        return None
    return arg


def is_python(code: str) -> bool:
    """``code`` parses as Python."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def assigned_names(code: str) -> list[str]:
    """The names ``code`` binds at its top level or in its blocks (``x = ...``, ``x += ...``,
    ``for x in``, ``with ... as x``, ``(x := ...)``, tuple targets), ordered by where each is bound
    last (the result a cell builds is usually its last assignment); empty when it is not Python."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    last: dict[str, tuple[int, int]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            where = (node.lineno, node.col_offset)
            last[node.id] = max(where, last.get(node.id, where))
    return sorted(last, key=lambda name: last[name])


def used_names(code: str) -> set[str]:
    """The names ``code`` reads (``print(x)``, ``f(x)``, ``x.y``); empty when it is not Python."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return set()
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def unbound_name(text: str, assigned: set[str], used: set[str], seen: str) -> bool:
    """``text`` is only the name of a variable the run never bound: an identifier the run's code
    read (``used``) or a snake_case name, that no cell assigned (``assigned``) and that ``seen``
    (what the model was shown: outputs, the question) never holds as a word.  Such an answer
    names a value that does not exist (``FINAL(result)`` after a cell that failed before
    ``result = ...``)."""
    name = text.strip().strip("`'\"")
    if not name.isidentifier() or keyword.iskeyword(name) or name in assigned:
        return False
    if name not in used and "_" not in name.strip("_"):
        return False
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", seen) is None


def binds_names(code: str) -> bool:
    """``code`` assigns anything anywhere (``x = ...``, ``x[0] = ...``, ``x += ...``, ``x: int = ...``,
    ``(x := ...)``), so it computes rather than only prints; False when it is not Python."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.NamedExpr)) for node in ast.walk(tree))


def result_name(code: str, output: str) -> str | None:
    """The variable a cell built its result in, as far as the host can tell: the last name a top-level
    assignment of ``code`` binds, when ``output`` names it (``print(len(pairs), "pairs, all in the
    variable answer")``); a loop's variable, or a name the output does not mention, is no result."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    name = None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            if isinstance(target, ast.Name):
                name = target.id
    if name is None or not re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", output):
        return None
    return name


def names_a_variable(text: str, assigned: set[str], question: str) -> str | None:
    """The variable a text answer ``FINAL(text)`` names: ``text`` is a name the model's code
    assigned (``assigned``) and not a word of the question (a label or function the question
    asks about is an answer, not a reference); None otherwise."""
    name = text.strip()
    if not name.isidentifier() or keyword.iskeyword(name) or name not in assigned:
        return None
    if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", question, flags=re.IGNORECASE):
        return None
    return name


def _is_number(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float, complex)) \
        and not isinstance(node.value, bool)


def clean_answer(text: str) -> str:
    """A reply used as the answer without a FINAL: fence lines removed (their text kept) and a
    ``FINAL(...)`` / ``FINAL_VAR(...)`` wrapper (in any case: ``Final(...)``) unwrapped; a stray
    unclosed ``FINAL(`` is dropped."""
    lines = [line for line in text.split("\n")
             if _open_fence(line) is None and _FENCE_CLOSE.fullmatch(line.rstrip("\r")) is None]
    body = "\n".join(lines).strip()
    final = find_final(body)
    if final is not None and final.kind == "answer":
        return final.value
    body = re.sub(r"(?<!\w)FINAL(?:_VAR)?[ \t]*\(", "", body, flags=re.IGNORECASE).strip()   # also Final(...)
    if body.endswith(")") and body.count(")") > body.count("("):
        body = body[:-1].rstrip()
    return body


# --------------------------------------------------------------------------- output


def truncate_output(text: str, max_chars: int) -> tuple[str, int]:
    """Keep the first and last ``max_chars // 2`` characters with a marker line between.

    Returns ``(text, number_of_characters_cut)``; nothing is cut within the limit.  The
    marker itself is not counted in ``max_chars``.
    """
    if max_chars < 0:
        raise ValueError("max_chars must be >= 0")
    if len(text) <= max_chars:
        return text, 0
    head_len = max_chars // 2
    tail_len = max_chars - head_len
    head = text[:head_len]
    tail = text[len(text) - tail_len :] if tail_len else ""
    cut = len(text) - head_len - tail_len
    marker = f"[... {cut} characters truncated ...]"
    before = "\n" if head and not head.endswith("\n") else ""
    after = "\n" if tail and not tail.startswith("\n") else ""
    return f"{head}{before}{marker}{after}{tail}", cut


# --------------------------------------------------------------------------- terminal safety

def sanitize_for_terminal(text: str) -> str:
    """Make untrusted text safe to print (``rlm.core.text.terminal_text``): no escape sequences,
    no C0/C1 controls but \\n, \\t, no bidi controls.

    Carriage returns (and U+2028, U+2029) become newlines, so output cannot overwrite what is already shown.
    """
    return terminal_text(text)


def fenced(body: str, lang: str) -> str:
    """``body`` in a fence longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{body}\n{fence}"
