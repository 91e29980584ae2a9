"""The page as written (no browser): where it goes, what it holds, how input errors are told."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rlm.errors import UsageError
from rlm.viewer import load, write_view
from rlm.viewer.html import FOLD_CHARS, json_for_script, segments
from rlm.viewer.model import Iteration, split_runs


def write_events(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def run_events(question: str = "What is the code?", answer: str = "7421", status: str = "ok") -> list[dict]:
    return [
        {"t": 0.8, "kind": "run_start", "question": question,
         "context": {"kind": "str", "total_chars": 1234, "n_documents": 1, "source": "doc.txt"},
         "root_model": "root-model", "sub_model": "sub-model", "settings": {"max_iterations": 5}},
        {"t": 1.8, "kind": "model_reply", "iteration": 1, "text": "```repl\nprint(1)\n```", "latency_s": 1.0,
         "usage": {"prompt_tokens": 100, "completion_tokens": 10}, "model": "root-model"},
        {"t": 2.0, "kind": "sub_call", "model": "sub-model", "prompt_chars": 50, "reply_chars": 4,
         "latency_s": 0.15, "ok": True, "error": None},
        {"t": 2.3, "kind": "cell", "iteration": 1, "code": "print(1)", "output": "1\n", "error": None,
         "timed_out": False, "duration_s": 0.5, "restarted": None, "truncated_chars": 0},
        {"t": 2.4, "kind": "run_end", "answer": answer, "status": status, "iterations": 1, "sub_calls": 1,
         "usage": {"root-model": {"prompt_tokens": 100, "completion_tokens": 10}}, "duration_s": 2.4,
         "error": None},
    ]


def test_page_is_written_next_to_the_trace_by_default(tmp_path):
    trace = write_events(tmp_path / "run.jsonl", run_events())
    page = write_view(trace)
    assert page == tmp_path / "run.html"
    markup = page.read_text()
    assert "What is the code?" in markup and "7421" in markup and "doc.txt" in markup
    other = write_view(trace, tmp_path / "sub" / "elsewhere.html")
    assert other.is_file() and other.read_text().count("What is the code?") == 1


def test_page_needs_no_network(tmp_path):
    markup = write_view(write_events(tmp_path / "run.jsonl", run_events())).read_text()
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", markup)
    assert "default-src 'none'" in markup  # the page may not fetch anything
    assert "http://" not in markup and "https://" not in markup


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("", "holds no JSON lines"),
    ("not json\n{torn", "holds no JSON lines"),
    ('{"a": 1}\n[1, 2]\n', "holds neither trace events nor query results"),
])
def test_bad_input_is_a_usage_error_with_a_hint(tmp_path, content, message):
    path = tmp_path / "x.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=message) as info:
        write_view(path)
    assert info.value.hint and "trace" in info.value.hint
    assert not (tmp_path / "x.html").exists()


def test_a_directory_and_an_overwrite_are_refused(tmp_path):
    with pytest.raises(UsageError, match="directory"):
        write_view(tmp_path)
    trace = write_events(tmp_path / "run.jsonl", run_events())
    with pytest.raises(UsageError, match="overwrite"):
        write_view(trace, trace)
    assert json.loads(trace.read_text().splitlines()[0])["kind"] == "run_start"


def test_a_torn_last_line_is_skipped(tmp_path):
    trace = tmp_path / "run.jsonl"
    trace.write_text("".join(json.dumps(e) + "\n" for e in run_events()[:2]) + '{"t": 3, "kind": "ce')
    kind, events = load(trace)
    assert kind == "trace" and [e["kind"] for e in events] == ["run_start", "model_reply"]
    assert "incomplete" in write_view(trace).read_text()


def test_results_are_told_from_traces_by_content(tmp_path):
    (tmp_path / "traces").mkdir()
    trace = write_events(tmp_path / "traces" / "q1-abc.jsonl", run_events())
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"id": "q1", "status": "error", "answer": None, "trace": str(trace)}) + "\n"
                       + json.dumps({"id": "q1", "status": "ok", "answer": "7421", "expected": "7421",
                                     "score": 1.0, "duration_s": 2.5, "trace": str(trace)}) + "\n"
                       + json.dumps({"id": "q2", "status": "error", "answer": None, "error": "boom",
                                     "trace": None}) + "\n")
    kind, records = load(results)
    assert kind == "results" and [(r["id"], r["status"]) for r in records] == [("q1", "ok"), ("q2", "error")]
    markup = write_view(results).read_text()
    assert 'href="traces/q1-abc.html"' in markup  # relative: works from file://
    assert (tmp_path / "traces" / "q1-abc.html").is_file()
    assert "1.000" in markup and "boom" in markup and "no trace" in markup


def test_long_texts_go_to_the_data_block(tmp_path):
    events = run_events()
    events[3]["output"] = "line of output\n" * (FOLD_CHARS // 10)
    markup = write_view(write_events(tmp_path / "run.jsonl", events)).read_text()
    assert markup.count("line of output") < 20 + FOLD_CHARS // 10  # a preview inline, the rest as data
    data = re.search(r'<script type="application/json" id="rlm-data">(.*?)</script>', markup, re.S).group(1)
    assert json.loads(data)[0] == events[3]["output"].rstrip("\n")
    assert 'data-b="0"' in markup


def test_json_for_script_cannot_end_the_script():
    value = ["</script><script>x</script>", "<!-- -->", "a & b", "\u2028"]
    text = json_for_script(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == value


def test_several_runs_and_the_final_request():
    first = run_events()
    second = run_events(question="second", status="max_iterations")
    second.insert(4, {**second[1], "t": 2.35})  # the extra reply after the last iteration
    runs = split_runs(first + second)
    assert [r.question for r in runs] == ["What is the code?", "second"]
    assert [r.status for r in runs] == ["ok", "max_iterations"]
    assert [it.final_request for it in runs[1].iterations] == [False, True]


def test_time_is_split_between_model_sandbox_and_sub_calls():
    it = Iteration(number=1, reply={"latency_s": 2.0},
                   cells=[{"duration_s": 1.0}],
                   sub_calls=[{"t": 10.5, "latency_s": 0.4}, {"t": 10.6, "latency_s": 0.4},  # overlap: 0.5s
                              {"t": 11.0, "latency_s": 0.1}])
    assert it.model_s == 2.0 and round(it.sub_s, 3) == 0.6 and round(it.sandbox_s, 3) == 0.4
    runs = split_runs(run_events())
    phases = runs[0].phases()
    assert round(phases["model"], 3) == 1.0 and round(phases["sub-calls"], 3) == 0.15
    assert round(phases["sandbox"], 3) == 0.35 and round(phases["start-up"], 3) == 0.8


def test_reply_segments():
    reply = "Let me look.\n```repl\nx = 1\n```\nThen:\n```text\nnot code\n```\n~~~python\ny = 2\n~~~"
    assert segments(reply) == [("prose", "Let me look."), ("code", "x = 1"), ("prose", "Then:"),
                               ("prose", "not code"), ("code", "y = 2")]
    assert segments("inline ```x``` only") == [("prose", "inline ```x``` only")]
