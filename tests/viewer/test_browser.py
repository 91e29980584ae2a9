"""The page in headless Chromium: code highlighted as spans of its own text, folds filled from
the data block, the timeline, and a results page whose links open the traces' pages."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

from rlm.viewer import write_view
from rlm.viewer.html import FOLD_CHARS

CODE = "import re\nfor m in re.finditer(r'x', context):  # find\n    print(len(m.group(0)), 42)"


def trace_file(path: Path, *, output: str = "short output", runs: int = 1) -> Path:
    events: list[dict] = []
    for n in range(runs):
        events += [
            {"t": 0.5, "kind": "run_start", "question": f"question {n}",
             "context": {"kind": "list", "total_chars": 99, "n_documents": 3, "source": "docs/"},
             "root_model": "root-model", "sub_model": "sub-model"},
            {"t": 1.5, "kind": "model_reply", "iteration": 1, "latency_s": 1.0, "model": "root-model",
             "usage": {"prompt_tokens": 10, "completion_tokens": 5}, "text": f"Search.\n```repl\n{CODE}\n```"},
            {"t": 2.0, "kind": "cell", "iteration": 1, "code": CODE, "output": output, "error": None,
             "timed_out": False, "duration_s": 0.5, "restarted": None, "truncated_chars": 0},
            {"t": 3.0, "kind": "model_reply", "iteration": 2, "latency_s": 1.0, "model": "root-model",
             "usage": {}, "text": "```repl\nwhile True: pass\n```"},
            {"t": 8.0, "kind": "cell", "iteration": 2, "code": "while True: pass", "output": "", "error": "Timeout",
             "timed_out": True, "duration_s": 5.0, "restarted": "after a timeout", "truncated_chars": 0},
            {"t": 8.1, "kind": "run_end", "answer": f"answer {n}", "status": "ok" if n == 0 else "max_iterations",
             "iterations": 2, "sub_calls": 0, "usage": {}, "duration_s": 8.1, "error": None},
        ]
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def test_code_is_highlighted_from_its_own_text(tmp_path, browse):
    dom = browse(write_view(trace_file(tmp_path / "run.jsonl")))
    keywords = [t for t, a in dom.with_class("k")]
    assert keywords and set(keywords) == {"span"}
    markup_text = dom.text
    assert CODE in markup_text  # the spans split the text but keep all of it, in order
    classes = {c for _, a in dom.elements for c in (a.get("class") or "").split()}
    assert {"k", "s", "c", "n", "b"} <= classes


def test_long_output_is_folded_and_filled_when_opened(tmp_path, browse):
    output = "".join(f"row {i:05d} of the output\n" for i in range(FOLD_CHARS // 10))
    page = write_view(trace_file(tmp_path / "run.jsonl", output=output))
    folded = browse(page)
    assert "row 00007" in folded.text and "row 00200" not in folded.text
    assert [a.get("open") for t, a in folded.elements if "fold" in (a.get("class") or "").split()] == [None]
    opened = browse(page, "open-all")
    assert output.rstrip("\n") in opened.text


def test_status_timeouts_restarts_and_timeline(tmp_path, browse):
    dom = browse(write_view(trace_file(tmp_path / "run.jsonl", runs=2)))
    text = dom.text
    assert "the cell timed out" in text and "restarted (after a timeout)" in text
    assert [a["href"] for a in dom.tags("a") if a.get("href", "").startswith("#run-")] == ["#run-0", "#run-1"]
    columns = [a for t, a in dom.with_class("col")]
    assert len(columns) == 4 and sum("bad" in (a.get("class") or "") for a in columns) == 2
    assert len([1 for t, a in dom.with_class("badge") if "ok" in a["class"]]) == 1
    assert "max_iterations" in text
    assert "model 2.00s" in text and "sandbox 5.50s" in text  # the first run's phases


def test_results_page_links_open_the_trace_pages(tmp_path, browse):
    traces = tmp_path / "traces"
    traces.mkdir()
    records = [{"id": f"q{i}", "status": "ok", "answer": str(i), "expected": str(i), "score": 1.0,
                "duration_s": 1.5, "iterations": 2, "trace": str(trace_file(traces / f"q{i}.jsonl"))}
               for i in range(3)]
    results = tmp_path / "batch" / "out.jsonl"
    results.parent.mkdir()
    results.write_text("".join(json.dumps(r) + "\n" for r in records))
    dom = browse(write_view(results))
    hrefs = [a["href"] for a in dom.tags("a")]
    assert hrefs == ["../traces/q0.html", "../traces/q1.html", "../traces/q2.html"]
    target = (results.parent / unquote(hrefs[1])).resolve()
    linked = browse(target)
    assert "question 0" in linked.text and "data-ready-ms" in linked.root_attrs
    assert "3 queries" in dom.text and "mean score 1.000" in dom.text


def test_many_code_blocks_are_highlighted_near_the_viewport_or_all_when_opened(tmp_path, browse):
    events = [{"t": 0.1, "kind": "run_start", "question": "q", "context": {}}]
    for n in range(1, 61):
        events.append({"t": n, "kind": "model_reply", "iteration": n, "latency_s": 0.5,
                       "text": f"```repl\nfor i in range({n}): print(i)\n```"})
    trace = tmp_path / "many.jsonl"
    trace.write_text("".join(json.dumps(e) + "\n" for e in events))
    page = write_view(trace)

    def highlighted(dom) -> int:
        return sum(1 for tag, a in dom.elements if tag == "span" and a.get("class") == "k") // 2  # for, in

    assert 40 <= highlighted(browse(page)) <= 60
    assert highlighted(browse(page, "open-all")) == 60
