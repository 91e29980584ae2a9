"""The DOM that headless Chromium dumps, parsed into elements and text, and a probed copy of a
page that records whether injected script ran (shared by the viewer tests)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path


@dataclass
class Dom:
    """The elements (tag, attributes) and the text of a serialised DOM."""

    elements: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    root_attrs: dict[str, str | None] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.elements if tag == name]

    def with_class(self, cls: str) -> list[tuple[str, dict[str, str | None]]]:
        return [(t, a) for t, a in self.elements if cls in (a.get("class") or "").split()]


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.dom = Dom()
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.dom.elements.append((tag, dict(attrs)))
        if tag == "html":
            self.dom.root_attrs = dict(attrs)
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.dom.texts.append(data)


def parse_dom(markup: str) -> Dom:
    parser = _Parser()
    parser.feed(markup)
    parser.close()
    return parser.dom


PROBE = ("<script nonce=\"{nonce}\">window.addEventListener('load', function () {{"
         "document.documentElement.setAttribute('data-pwned', String(window.__pwned));"
         "document.documentElement.setAttribute('data-scripts', String(document.scripts.length));}});</script>")


def probed_copy(page: Path, dest: Path, *, keep_csp: bool) -> Path:
    """A copy of ``page`` with a probe script that records window.__pwned after load.

    Without ``keep_csp`` the Content-Security-Policy is removed, so the copy shows whether
    escaping alone keeps injected markup out (the policy would also stop inline handlers).
    """
    markup = page.read_text(encoding="utf-8")
    nonce = re.search(r'<script nonce="([^"]+)">', markup).group(1)
    if not keep_csp:
        markup, n = re.subn(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", markup, count=1)
        assert n == 1
    markup = markup.replace("</body>", PROBE.format(nonce=nonce) + "</body>", 1)
    dest.write_text(markup, encoding="utf-8")
    return dest
