"""Untrusted text (model replies, cell output, the context's name, the question, results
fields) reaches the page only as text: rendered in headless Chromium, the DOM holds no
injected element, attribute or script, nothing ran, and the text shows up verbatim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from viewer_dom import Dom, probed_copy

from rlm.viewer import write_view
from rlm.viewer.html import FOLD_CHARS

ESC = "\x1b"
PAYLOADS = [
    "<script>window.__pwned=1</script>",
    "<img src=x onerror=window.__pwned=2>",
    "\"><svg onload=window.__pwned=3>",
    "' onmouseover='window.__pwned=4' x='",
    "</script><script>window.__pwned=5</script>",
    "<!--<script>window.__pwned=6</script>-->",
    "</textarea></pre></details><iframe src=javascript:window.__pwned=7>",
    f"{ESC}[31mRED{ESC}[0m {ESC}]0;title{ESC}\\ {ESC}[2J",
]
EVIL = " ".join(PAYLOADS)
ALLOWED_TAGS = {"html", "head", "body", "meta", "title", "style", "script", "header", "main", "section",
                "div", "span", "label", "input", "button", "nav", "a", "h1", "h2", "p", "pre", "dl",
                "dt", "dd", "details", "summary", "table", "thead", "tbody", "tr", "th", "td", "i"}
HANDLER_FREE = ("onerror", "onload", "onmouseover", "src", "x")


def evil_trace(path: Path) -> Path:
    long_evil = (EVIL + "\n") * (FOLD_CHARS // len(EVIL) + 5)  # long enough to be folded
    events = [
        {"t": 0.5, "kind": "run_start", "question": f"Question {EVIL}",
         "context": {"kind": EVIL, "total_chars": 10, "n_documents": 1, "source": f"{EVIL}.txt"},
         "root_model": EVIL, "sub_model": EVIL, "settings": {EVIL: EVIL}},
        {"t": 1.0, "kind": "model_reply", "iteration": 1, "model": EVIL, "latency_s": 0.5,
         "usage": {"prompt_tokens": 1, "completion_tokens": 2},
         "text": f"Prose {EVIL}\n```repl\nprint('{EVIL}')  # {EVIL}\n```\n```repl\n" + long_evil + "```"},
        {"t": 1.2, "kind": "sub_call", "model": EVIL, "prompt_chars": 5, "reply_chars": 5, "latency_s": 0.1,
         "ok": False, "error": EVIL, "prompt": EVIL, "answer": EVIL},
        {"t": 1.5, "kind": "cell", "iteration": 1, "code": f"x = '{EVIL}'", "output": f"out {EVIL}",
         "error": EVIL, "timed_out": True, "duration_s": 0.4, "restarted": EVIL, "truncated_chars": 3},
        {"t": 1.6, "kind": "cell", "iteration": 1, "code": "y", "output": long_evil, "error": None,
         "timed_out": False, "duration_s": 0.1, "restarted": None, "truncated_chars": 0},
        {"t": 1.7, "kind": "note", "iteration": 1, "text": EVIL},
        {"t": 1.8, "kind": EVIL},
        {"t": 2.0, "kind": "run_end", "answer": f"Answer {EVIL}\n{long_evil}", "status": EVIL, "iterations": 1,
         "sub_calls": 1, "usage": {EVIL: {"prompt_tokens": 1, "completion_tokens": 2}}, "duration_s": 2.0,
         "error": EVIL},
    ]
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    return path


def assert_inert(dom: Dom, *, scripts: int) -> None:
    tags = {tag for tag, _ in dom.elements}
    assert tags <= ALLOWED_TAGS, f"injected elements: {tags - ALLOWED_TAGS}"
    assert not dom.tags("img") and not dom.tags("svg") and not dom.tags("iframe")
    for tag, attrs in dom.elements:
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
        assert "window.__pwned" not in "".join(str(v) for v in attrs.values()), (tag, attrs)
    assert len(dom.tags("script")) == scripts
    assert dom.root_attrs.get("data-pwned") == "undefined"
    assert dom.root_attrs.get("data-scripts") == str(scripts)
    assert "data-ready-ms" in dom.root_attrs  # the page's own script ran
    assert ESC not in dom.text and "[31m" not in dom.text and "]0;title" not in dom.text


@pytest.mark.parametrize("keep_csp", [True, False], ids=["as-shipped", "without-csp"])
@pytest.mark.parametrize("fragment", ["", "open-all"], ids=["folded", "all-open"])
def test_injected_markup_stays_text(tmp_path, browse, keep_csp, fragment):
    page = write_view(evil_trace(tmp_path / "evil.jsonl"))
    copy = probed_copy(page, tmp_path / "probed.html", keep_csp=keep_csp)
    dom = browse(copy, fragment)
    assert_inert(dom, scripts=3)  # the data block, the page's script, the probe
    text = dom.text
    clean = EVIL.replace(f"{ESC}[31m", "").replace(f"{ESC}[0m", "").replace(f"{ESC}]0;title{ESC}\\", "") \
        .replace(f"{ESC}[2J", "")
    assert f"Question {clean}" in text
    assert f"{clean}.txt" in text  # the context's name
    assert f"Prose {clean}" in text and f"out {clean}" in text and f"Answer {clean}" in text
    assert "RED" in text
    if fragment == "open-all":  # the folded bodies, made from the data block, are text too
        assert text.count(clean) > 3 * (FOLD_CHARS // len(EVIL))


def test_injected_results_file_stays_text(tmp_path, browse):
    trace = evil_trace(tmp_path / "q1.jsonl")
    results = tmp_path / "out.jsonl"
    results.write_text(json.dumps({"id": EVIL, "question": EVIL, "answer": EVIL, "status": EVIL,
                                   "expected": EVIL, "score": 0.5, "duration_s": 1.0, "iterations": 1,
                                   "error": EVIL, "trace": str(trace)}) + "\n"
                       + json.dumps({"id": "q2", "answer": "fine", "status": "ok", "duration_s": 0.5,
                                     "trace": f"{EVIL}.jsonl"}) + "\n")
    page = write_view(results)
    dom = browse(probed_copy(page, tmp_path / "probed.html", keep_csp=False), "open-all")
    assert_inert(dom, scripts=3)
    links = [a["href"] for a in dom.tags("a")]
    assert links == ["q1.html"]  # the trace found; the evil trace name is not a link
    assert (tmp_path / "q1.html").is_file()
    assert "trace not found" in dom.text and "RED" in dom.text
