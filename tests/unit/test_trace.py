"""Trace files: writing, reading (also after a kill) and rendering."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from rlm.cli.trace_text import render_trace
from rlm.core.trace import TraceWriter, read_trace
from rlm.errors import UsageError


def write_run(path: Path) -> None:
    with TraceWriter(path) as trace:
        trace.event("run_start", question="How many [bold]widgets[/bold]?",
                    context={"kind": "str", "total_chars": 1_234_567, "n_documents": 1,
                             "source": "doc.txt"},
                    root_model="qwen-root", sub_model="qwen-sub", settings={"max_iterations": 20})
        trace.event("model_reply", iteration=1, text="Looking.\n```repl\nprint(len(context))\n```",
                    usage={"prompt_tokens": 1200, "completion_tokens": 40}, latency_s=1.25,
                    model="qwen-root")
        trace.event("sub_call", model="qwen-sub", prompt_chars=300, reply_chars=20, latency_s=0.5,
                    ok=True, error=None)
        trace.event("cell", iteration=1, code="print(len(context))", output="1234567\x1b]0;pwned\x07",
                    error=None, timed_out=False, duration_s=0.02, restarted=None, truncated_chars=0)
        trace.event("note", iteration=1, text="context was restored")
        trace.event("run_end", answer="42 widgets", status="ok", iterations=2, sub_calls=1,
                    usage={"prompt_tokens": 3000, "completion_tokens": 80}, duration_s=3.5)


def test_events_written_in_order_with_times(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "run.jsonl"
    write_run(path)
    events = read_trace(path)
    assert [e["kind"] for e in events] == ["run_start", "model_reply", "sub_call", "cell", "note",
                                           "run_end"]
    times = [e["t"] for e in events]
    assert times == sorted(times) and all(isinstance(t, float) for t in times)
    assert all(e["ts"].endswith("+00:00") for e in events)
    assert events[0]["context"]["total_chars"] == 1_234_567


def test_lines_visible_before_close(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    trace = TraceWriter(path)
    trace.event("note", iteration=1, text="first")
    assert json.loads(path.read_text().splitlines()[0])["text"] == "first"
    trace.close()
    trace.close()  # idempotent
    assert trace.closed


def test_appends_to_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    for n in range(2):
        with TraceWriter(path) as trace:
            trace.event("note", iteration=n, text=str(n))
    assert [e["iteration"] for e in read_trace(path)] == [0, 1]


def test_unserialisable_values_become_strings(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with TraceWriter(path) as trace:
        trace.event("note", text=tmp_path, data={1: {"x"}, (1, 2): object()})
    event = read_trace(path)[0]
    assert event["text"] == str(tmp_path)
    assert event["data"]["1"] == ["x"]


def test_reserved_fields_rejected(tmp_path: Path) -> None:
    with TraceWriter(tmp_path / "run.jsonl") as trace, pytest.raises(ValueError):
        trace.event("note", t=1)


def test_event_after_close_raises(tmp_path: Path) -> None:
    trace = TraceWriter(tmp_path / "run.jsonl")
    trace.close()
    with pytest.raises(ValueError):
        trace.event("note", text="late")


def test_partial_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_run(path)
    with path.open("a") as f:
        f.write('{"t": 9.1, "kind": "model_reply", "text": "cut mid')
    events = read_trace(path)
    assert len(events) == 6
    assert events[-1]["kind"] == "run_end"


def test_missing_file_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_trace(tmp_path / "nope.jsonl")


def test_directory_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="directory"):
        read_trace(tmp_path)


@pytest.mark.parametrize("content", ["", "\n\n", "not json\n", '{"t": 1, "no_kind": true}\n',
                                     "[1, 2, 3]\n", '{"kind": "run_st'])
def test_file_without_events_is_usage_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError, match="no events"):
        read_trace(path)


def render(events: list[dict]) -> str:
    console = Console(file=io.StringIO(), width=120)
    render_trace(events, console)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_render_shows_header_iterations_and_totals(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_run(path)
    out = render(read_trace(path))
    for expected in ("How many [bold]widgets[/bold]?",  # printed literally, not as markup
                     "1,234,567 characters", "doc.txt", "qwen-root", "qwen-sub",
                     "iteration 1", "tokens 1,200 in / 40 out", "1.25s",
                     "print(len(context))", "1234567", "sub-calls: 1 (0 failed)",
                     "context was restored", "answer: 42 widgets", "status: ok",
                     "2 iterations", "tokens 3,000 in / 80 out", "3.50s"):
        assert expected in out, expected
    assert "\x1b" not in out and "pwned" not in out


def test_render_shortens_long_output() -> None:
    events = [{"kind": "model_reply", "iteration": 1, "text": "r" * 50_000},
              {"kind": "cell", "iteration": 1, "code": "x", "output": "o" * 50_000}]
    out = render(events)
    assert "characters truncated" in out
    assert len(out) < 10_000


def test_render_incomplete_run() -> None:
    out = render([{"kind": "run_start", "question": "q?"},
                  {"kind": "model_reply", "iteration": 3, "text": "hmm"}])
    assert "incomplete" in out and "iteration 3" in out


def test_render_flags_timeouts_and_errors() -> None:
    out = render([{"kind": "cell", "iteration": 1, "code": "while True: pass", "output": "",
                   "error": "KeyboardInterrupt", "timed_out": True, "restarted": "kernel",
                   "duration_s": 30.0, "truncated_chars": 0},
                  {"kind": "something_new", "t": 1.0}])
    assert "TIMED OUT" in out and "kernel restarted" in out and "KeyboardInterrupt" in out
    assert "something_new" in out


# --------------------------------------------------------------------------- A9: no character splits or hides an event

SPLITTERS = "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e\r"


def write_hostile_run(path: Path) -> None:
    with TraceWriter(path) as trace:
        trace.event("run_start", question="q", context={"kind": "str"}, root_model="m", sub_model=None)
        trace.event("model_reply", iteration=1, text=f"```repl\nx = '{SPLITTERS}'\n```", model="m")
        trace.event("cell", iteration=1, code=f"print('a{SPLITTERS}b')", output=f"a{SPLITTERS}b\ud800\u202e",
                    error=None, timed_out=False, duration_s=0.01)
        trace.event("model_reply", iteration=2, text="FINAL(done)", model="m")
        trace.event("run_end", answer=f"done{SPLITTERS}", status="ok", iterations=2, sub_calls=0)


def test_a9_line_separators_in_code_and_output_keep_every_event(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_hostile_run(path)
    raw = path.read_bytes()
    assert raw.count(b"\n") == 5
    # even a reader that splits on every Unicode line boundary sees five whole lines
    assert len(raw.decode("utf-8").splitlines()) == 5
    events = read_trace(path)
    assert [e["kind"] for e in events] == ["run_start", "model_reply", "cell", "model_reply", "run_end"]
    assert events[2]["output"] == f"a{SPLITTERS}b\ud800\u202e" and events[4]["answer"] == f"done{SPLITTERS}"
    out = render(events)
    assert "answer: done" in out and "status: ok" in out and "incomplete" not in out
    assert "iteration 2" in out and "FINAL(done)" in out


def test_a9_reader_keeps_events_of_a_file_with_raw_separators(tmp_path: Path) -> None:
    """A trace written by another tool (raw U+2028 inside strings, CRLF line ends) reads whole."""
    path = tmp_path / "raw.jsonl"
    events = [{"kind": "run_start", "question": "q"},
              {"kind": "cell", "iteration": 1, "code": "x\u2028y", "output": "a\u2029b\x85c"},
              {"kind": "run_end", "answer": "ok\u2028", "status": "ok"}]
    path.write_bytes("\r\n".join(json.dumps(e, ensure_ascii=False) for e in events).encode())
    assert [e["kind"] for e in read_trace(path)] == ["run_start", "cell", "run_end"]


def test_a_torn_last_line_does_not_swallow_the_next_run(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text('{"kind": "note", "text": "whole"}\n{"kind": "model_reply", "text": "cut mid')
    with TraceWriter(path) as trace:
        trace.event("run_start", question="next run")
    assert [e["kind"] for e in read_trace(path)] == ["note", "run_start"]


# --------------------------------------------------------------------------- D3: a full disk

def test_a_full_device_leaves_the_run_going_and_names_the_failure(tmp_path: Path) -> None:
    from rlm.core.trace import trace_failure

    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full")
    trace = TraceWriter(full)
    trace.event("run_start", question="q")  # no exception
    trace.event("run_end", answer="42", status="ok")
    trace.close()
    assert trace.failure == "no space left on device"
    assert trace_failure(full) == "no space left on device"
    assert trace_failure(tmp_path / "other.jsonl") is None
    with pytest.raises(ValueError):
        trace.event("note", text="after close")


def test_a_path_that_cannot_be_a_file_is_still_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(UsageError, match="cannot write the trace"):
        TraceWriter(tmp_path / "plain" / "t.jsonl")
    with pytest.raises(UsageError, match="cannot write the trace"):
        TraceWriter(tmp_path)


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 64 KiB tmpfs (needs root; skipped where mount is refused)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_disk_that_fills_mid_run_keeps_the_whole_lines_before(small_tmpfs: Path) -> None:
    from rlm.core.trace import trace_failure

    path = small_tmpfs / "traces" / "run.jsonl"
    trace = TraceWriter(path)
    trace.event("run_start", question="q")
    for n in range(40):  # 40 x 4 KB: the 64 KiB disk fills on the way
        trace.event("cell", iteration=n, code="x", output="o" * 4000)
    trace.event("run_end", answer="42", status="ok")
    trace.close()
    assert trace.failure == "no space left on device" == trace_failure(path)
    events = read_trace(path)
    assert events[0]["kind"] == "run_start" and 5 < len(events) < 40
    assert all(e["kind"] == "cell" and len(e["output"]) == 4000 for e in events[1:])
    # a new writer on the same path starts clean: its own failure, if any, counts
    (small_tmpfs / "traces" / "run.jsonl").unlink()
    with TraceWriter(path) as again:
        again.event("note", text="room again")
    assert trace_failure(path) is None
