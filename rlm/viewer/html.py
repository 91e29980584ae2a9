"""Building blocks of the viewer's pages: escaping, folded text, the document shell.

Every string from a trace or a results file is untrusted.  It reaches the page in one of
two ways only: escaped by ``esc`` into the HTML, or stored in the page's JSON data block
(``Page.finish`` escapes ``<``, ``>`` and ``&`` there, so no ``</script>`` or ``<!--`` can
end it) from which the page's script makes text nodes.  Nothing is ever parsed as markup.
"""

from __future__ import annotations

import html
import json
import re
import secrets
from typing import Any

from rlm.core.text import terminal_text
from rlm.viewer import assets
from rlm.viewer.model import text

FOLD_CHARS = 3_000  # longer texts are folded; their bodies are made when the fold opens
FOLD_LINES = 60
PREVIEW_LINES = 8
PREVIEW_CHARS = 600

_FENCE = re.compile(r"[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[A-Za-z0-9_+.-]*).*")
_JSON_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_CODE_LANGS = frozenset({"repl", "python", "py", "python3", ""})


def clean(value: Any) -> str:
    """A trace value as text with terminal escapes, control and bidi characters removed
    (U+2028 and U+2029 become line breaks)."""
    return terminal_text(text(value))


def esc(value: Any) -> str:
    """A trace value, cleaned and escaped for HTML text and quoted attribute values."""
    return html.escape(clean(value), quote=True)


def json_for_script(value: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``."""
    data = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_UNSAFE[m.group(0)], data)


def seconds(value: float) -> str:
    if value >= 60:
        return f"{int(value // 60)}m {value % 60:04.1f}s"
    return f"{value:.2f}s" if value < 10 else f"{value:.1f}s"


def count(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "?" if value is None else esc(value)
    return f"{value:,}"


def plural(value: Any, noun: str) -> str:
    """"1 document", "3 documents", "? documents"."""
    return f"{count(value)} {noun}{'' if value == 1 else 's'}"


def segments(reply: str) -> list[tuple[str, str]]:
    """A reply split into ("prose", text) and ("code", text) parts at its fenced blocks."""
    lines = reply.split("\n")
    parts: list[tuple[str, str]] = []
    prose: list[str] = []
    i = 0
    while i < len(lines):
        m = _FENCE.fullmatch(lines[i])
        if m is None or (m.group("fence")[0] == "`" and "`" in lines[i].split(m.group("fence"), 1)[1]):
            prose.append(lines[i])
            i += 1
            continue
        fence, lang = m.group("fence"), m.group("lang").lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence[0] * len(fence)):
            j += 1
        if "\n".join(prose).strip():
            parts.append(("prose", "\n".join(prose).strip("\n")))
        prose = []
        parts.append(("code" if lang in _CODE_LANGS else "prose", "\n".join(lines[i + 1:j])))
        i = j + 1
    if "\n".join(prose).strip():
        parts.append(("prose", "\n".join(prose).strip("\n")))
    return parts


class Page:
    """One HTML document under construction; long texts go to its data block."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.blobs: list[Any] = []

    def blob(self, value: Any) -> int:
        self.blobs.append(value)
        return len(self.blobs) - 1

    def block(self, value: Any, *, cls: str = "out", code: bool = False, what: str = "text") -> str:
        """A text block: inline when short, else a preview and a fold filled on opening."""
        body = clean(value)
        hl = " hl" if code else ""
        lines = body.count("\n") + 1
        if len(body) <= FOLD_CHARS and lines <= FOLD_LINES:
            return f'<pre class="{cls}{hl}">{html.escape(body)}</pre>'
        preview = "\n".join(body[:PREVIEW_CHARS].split("\n")[:PREVIEW_LINES])
        n = self.blob(body)
        return (f'<pre class="{cls} preview">{html.escape(preview)}<span class="more">…</span></pre>'
                f'<details class="fold" data-b="{n}" data-cls="{cls}{hl}">'
                f"<summary>show all of the {what} ({len(body):,} characters, {lines:,} lines)</summary>"
                "</details>")

    def rows(self, rows: list[list[str]], *, what: str, shown: int = 8) -> str:
        """A table body: the first ``shown`` rows inline, the rest in a fold filled on opening.

        ``rows`` hold cleaned plain strings; a cell starting with "!" is marked as failed.
        """
        def row(cells: list[str]) -> str:
            tds = "".join(f'<td class="bad">{html.escape(c[1:])}</td>' if c.startswith("!")
                          else f"<td>{html.escape(c)}</td>" for c in cells)
            return f"<tr>{tds}</tr>"

        inline = "".join(row(r) for r in rows[:shown])
        rest = rows[shown:]
        fold = ""
        if rest:
            n = self.blob(rest)
            fold = (f'<details class="fold rows" data-b="{n}" data-kind="rows">'
                    f"<summary>{len(rest):,} more {what}</summary></details>")
        return f"<tbody>{inline}</tbody></table>{fold}"

    def finish(self, body: str, *, subtitle: str = "", filter_iterations: bool = True) -> str:
        nonce = secrets.token_urlsafe(16)
        csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
               "img-src data:; base-uri 'none'; form-action 'none'")
        sub = f'<span class="sub">{esc(subtitle)}</span>' if subtitle else ""
        return (
            "<!doctype html>\n<html lang=\"en\"><head>"
            '<meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="rlm trace viewer"><title>{esc(self.title)}</title>'
            f"<style>{assets.CSS}</style></head>\n<body>"
            f'<header class="top"><span class="brand">rlm</span><span class="title">{esc(self.title)}</span>{sub}'
            + ('<label class="filter"><input type="checkbox" id="only-bad"> only failed iterations</label>'
               if filter_iterations else '<span class="filter"></span>') +
            '<button type="button" id="open-all">open all folds</button></header>\n'
            f"<main>{body}</main>\n"
            f'<script type="application/json" id="rlm-data">{json_for_script(self.blobs)}</script>\n'
            f'<script nonce="{nonce}">{assets.JS}</script>'
            "</body></html>\n"
        )


__all__ = ["Page", "clean", "count", "esc", "json_for_script", "plural", "seconds", "segments"]
