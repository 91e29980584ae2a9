"""A9 and A12 in the viewer: a U+2028 (or U+2029, U+0085) in code, output or an answer hides no
event of a trace and no record of a results file, and no bidi control reaches the page's text."""

from __future__ import annotations

import json
from pathlib import Path

from rlm.core.trace import TraceWriter
from rlm.jobs.results import ResultWriter, read_results
from rlm.viewer import load, write_view
from rlm.viewer.model import split_runs

SPLIT = "\u2028\u2029\x85"
BIDI = "\u202e\u2066\u2069\u200f\u061c"


def events() -> list[dict]:
    return [
        {"kind": "run_start", "question": "q", "context": {"kind": "str", "total_chars": 1, "n_documents": 1,
                                                          "source": "doc.txt"}, "root_model": "m", "sub_model": None},
        {"kind": "model_reply", "iteration": 1, "text": f"```repl\nprint('a{SPLIT}b')\n```", "model": "m"},
        {"kind": "cell", "iteration": 1, "code": f"print('a{SPLIT}b')", "output": f"a{SPLIT}b{BIDI}",
         "error": None, "timed_out": False, "duration_s": 0.01},
        {"kind": "model_reply", "iteration": 2, "text": "FINAL(fig\u202e.exe)", "model": "m"},
        {"kind": "run_end", "answer": f"report{BIDI}txt.exe{SPLIT}", "status": "ok", "iterations": 2,
         "sub_calls": 0, "duration_s": 1.0},
    ]


def written_by_rlm(path: Path) -> Path:
    with TraceWriter(path) as trace:
        for e in events():
            trace.event(**e)
    return path


def written_raw(path: Path) -> Path:
    """As rlm wrote traces before (ensure_ascii=False: U+2028 raw in the file), or another tool."""
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events()), encoding="utf-8")
    return path


def test_a9_every_event_of_the_trace_is_read(tmp_path):
    for path in (written_by_rlm(tmp_path / "rlm.jsonl"), written_raw(tmp_path / "raw.jsonl")):
        kind, read = load(path)
        assert kind == "trace" and [e["kind"] for e in read] == [e["kind"] for e in events()], path.name
        (run,) = split_runs(read)
        assert run.status == "ok" and len(run.iterations) == 2


def test_a9_a12_the_page_shows_the_end_of_the_run_without_bidi_controls(tmp_path):
    markup = write_view(written_raw(tmp_path / "raw.jsonl")).read_text(encoding="utf-8")
    assert "no run_end event" not in markup and "reporttxt.exe" in markup and "fig.exe" in markup
    assert not set(BIDI) & set(markup)
    assert not set(SPLIT) & set(markup)  # line breaks in the page's text, escaped in its data block


def test_a9_the_results_page_keeps_every_record(tmp_path):
    results = tmp_path / "results.jsonl"
    with ResultWriter(results) as writer:
        writer.write({"id": "q1", "status": "ok", "answer": f"one{SPLIT}two", "duration_s": 1.0, "trace": None})
        writer.write({"id": "q2", "status": "ok", "answer": f"three{BIDI}", "duration_s": 1.0, "trace": None})
        writer.write({"id": "q3", "status": "error", "answer": None, "error": f"boom{SPLIT}", "trace": None})
    kind, records = load(results)
    assert kind == "results" and [r["id"] for r in records] == ["q1", "q2", "q3"]
    assert list(read_results(results)) == ["q1", "q2", "q3"]  # the batch's own reader (resume) too
    markup = write_view(results).read_text(encoding="utf-8")
    assert all(f"<td>{i}</td>" in markup for i in ("q1", "q2", "q3"))
    assert not (set(BIDI) | set(SPLIT)) & set(markup)


def test_a12_the_browser_shows_no_bidi_control(tmp_path, browse):
    dom = browse(write_view(written_raw(tmp_path / "raw.jsonl")), "open-all")
    assert "reporttxt.exe" in dom.text
    assert not (set(BIDI) | {"\u2028", "\u2029"}) & set(dom.text)
