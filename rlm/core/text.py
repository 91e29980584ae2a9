"""Text from the sandbox or a model, made safe for a terminal, a page or a JSON line (stdlib only).

Everything a model writes or a cell prints is hostile on the host: a class name, a model name
passed to ``llm_query`` or an answer can carry escape sequences (OSC 52 writes the clipboard,
OSC 0 the window title, CSI 2J clears the screen), bidi overrides that make a line read other
than it is (U+202E), or line separators that some readers split on (U+2028, U+2029, U+0085).

- ``terminal_text``: multi-line text with every escape sequence, C0/C1 control (but ``\\n`` and
  ``\\t``) and bidi control removed (U+0085 too); ``\\r``, U+2028 and U+2029 become ``\\n``; lone
  surrogates (which no terminal can encode) become U+FFFD.  Linear in the length of the text,
  whatever it holds.
- ``one_line`` / ``first_line``: the same for a view of one line (line breaks shown as `` ⏎ ``, or
  only the first line kept), cut to a width.
- ``json_line``: exact JSON on one physical line that no reader can split (U+2028, U+2029, U+0085,
  C1 controls, bidi controls and lone surrogates are written as ``\\uXXXX``).
- ``jsonl_lines`` / ``jsonl_objects``: JSON Lines read back split on ``"\\n"`` only (never
  ``str.splitlines``, which also splits on U+2028 and friends).
- ``unsafe_chars``: the characters of a text that ``terminal_text`` would remove (for checks).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterable, Iterator

ESC = "\x1b"

# bidi embeddings, overrides and isolates, the implicit marks, the Arabic letter mark, and the
# deprecated format characters next to the isolates (U+206A-206F)
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u206a-\u206f"
_BIDI_CHARS = re.compile(f"[{_BIDI}]")
_LINE_BREAKS = re.compile("\r\n?|[\u2028\u2029]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_DROP = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")  # after line breaks were made \n
_UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}\u2028\u2029\ud800-\udfff]")

# escape sequences (ECMA-48): what starts one, and how each kind ends
_INTRO = re.compile("[\x1b\x90\x98\x9b\x9d\x9e\x9f]")
_STRING_C1 = frozenset("\x90\x98\x9d\x9e\x9f")   # DCS, SOS, OSC, PM, APC: a string up to ST or BEL
_STRING_ESC = frozenset("]PX^_")                  # their ESC forms
_STRING_END = re.compile("[\x07\x1b\x9c]")         # BEL, ESC (ESC \ is ST), ST
_CSI = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]")
_ESC_SEQ = re.compile(r"\x1b[ -/]*[0-~]")


def strip_escapes(text: str) -> str:
    """``text`` without its escape sequences; a stray or unfinished introducer is dropped alone
    (other controls are kept).

    One pass: each search starts where the last ended, and the end of a control string found
    for one introducer is reused by the next, so hostile text (a million unterminated OSCs)
    costs linear time.
    """
    if not _INTRO.search(text):
        return text
    out: list[str] = []
    i, n = 0, len(text)
    string_end = -1  # where the control string that starts before it ends (n: nowhere)
    while i < n:
        m = _INTRO.search(text, i)
        if m is None:
            out.append(text[i:])
            break
        k = m.start()
        out.append(text[i:k])
        c = text[k]
        if c in _STRING_C1 or (c == ESC and k + 1 < n and text[k + 1] in _STRING_ESC):
            body = k + 1 if c != ESC else k + 2
            if string_end < body:
                end = _STRING_END.search(text, body)
                string_end = end.start() if end else n
            if string_end == n:  # never terminated: drop the introducer, keep the text as text
                i = body
            elif text[string_end] == ESC:  # ESC \ (ST) ends it; another ESC ends it and starts anew
                i = string_end + 2 if text[string_end + 1:string_end + 2] == "\\" else string_end
            else:
                i = string_end + 1
            continue
        seq = (_CSI if c == "\x9b" or text[k + 1:k + 2] == "[" else _ESC_SEQ).match(text, k)
        if seq is not None:
            i = seq.end()
        else:  # an unfinished sequence: drop its introducer
            i = k + (2 if text[k + 1:k + 2] == "[" else 1)
    return "".join(out)


def terminal_text(value: Any) -> str:
    """``value`` (any object; ``None`` is "") as text safe to print on a terminal, keeping lines.

    Removed: escape sequences (CSI, OSC, DCS, SOS, PM, APC, two-byte ESC), C0 and C1 controls
    but ``\\n`` and ``\\t``, DEL, and bidi controls (U+202A-202E, U+2066-2069, U+200E, U+200F,
    U+061C, U+206A-206F).  ``\\r\\n``, ``\\r``, U+2028 and U+2029 become ``\\n`` (so
    output cannot overwrite what is already shown); lone surrogates become U+FFFD.
    """
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if not _UNSAFE.search(text):
        return text
    text = strip_escapes(text)
    text = _LINE_BREAKS.sub("\n", text)
    text = _SURROGATES.sub("\ufffd", text)
    return _DROP.sub("", text)


def one_line(value: Any, width: int | None = None) -> str:
    """``terminal_text`` for a one-line view: tabs become spaces, each line break `` ⏎ ``; cut to
    ``width`` characters with "…"."""
    text = terminal_text(value).replace("\t", " ").strip()
    if "\n" in text:
        text = " ⏎ ".join(part.strip() for part in text.split("\n") if part.strip())
    return _cut(text, width)


def first_line(value: Any, width: int | None = None) -> str:
    """The first non-blank line of ``terminal_text(value)``, stripped and cut to ``width``."""
    text = terminal_text(value)
    line = next((part.strip() for part in text.split("\n") if part.strip()), "")
    return _cut(line.replace("\t", " "), width)


def _cut(text: str, width: int | None) -> str:
    if width is None or len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…"


def unsafe_chars(text: str) -> list[str]:
    """The characters of ``text`` a terminal must not get raw (controls but \\n and \\t, bidi
    controls, U+2028, U+2029, lone surrogates), in order, repeated as they occur."""
    return _UNSAFE.findall(text)


# --------------------------------------------------------------------------- JSON lines

# JSON leaves these raw with ensure_ascii=False: line separators some readers split on, C1
# controls (a raw CSI \x9b), bidi controls and lone surrogates (which UTF-8 cannot encode)
_JSON_RAW = re.compile(f"[\x7f-\x9f{_BIDI}\u2028\u2029\ud800-\udfff]")
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in
                 [*range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x2070),
                  0x2028, 0x2029, *range(0xD800, 0xE000)]}


def json_line(value: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """``value`` as exact JSON on one line (no trailing newline) that no character can split.

    Like ``json.dumps(value, ensure_ascii=False)`` (non-ASCII text stays readable), but
    U+0085, U+2028, U+2029, C1 controls, bidi controls and lone surrogates are escaped as
    ``\\uXXXX``: ``json.loads`` gives back the same value, and the line encodes as UTF-8.
    """
    data = json.dumps(value, ensure_ascii=False, default=default)
    return data.translate(_JSON_ESCAPES) if _JSON_RAW.search(data) else data


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSON Lines text, split on ``"\\n"`` only (a ``\\r`` before it is dropped).

    ``str.splitlines`` also splits on U+2028, U+2029, U+0085, \\x0b, \\x0c and \\x1c-\\x1e, which
    a JSON string may hold raw: a record written by another tool would be torn apart.
    """
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def jsonl_objects(lines: Iterable[str]) -> Iterator[dict]:
    """The JSON objects among ``lines``; blank lines, torn lines (a killed writer), lines that
    are not objects and lines nested too deep for the parser are skipped."""
    for line in lines:
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            yield value


__all__ = ["ESC", "first_line", "json_line", "jsonl_lines", "jsonl_objects", "one_line", "strip_escapes",
           "terminal_text", "unsafe_chars"]
