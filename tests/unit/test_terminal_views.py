"""What the CLI prints from the sandbox or a model (A8, A9, A12): progress lines, answers, tables,
errors and `rlm trace show`, with hostile strings in every field.  Nothing reaches the terminal
but text: no escape sequence, control, bidi control or line separator, and no rich markup."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from rlm.cli import app
from rlm.cli.trace_text import render_trace
from rlm.cli.views import StepView, print_error, print_warning, stats_table
from rlm.core.result import RunResult
from rlm.core.text import unsafe_chars
from rlm.core.trace import TraceWriter
from rlm.llm.base import Usage

ESC = "\x1b"
# A8: an exception class name with 16 ESC bytes: clipboard write (OSC 52), title change, screen clear
A8_CLASS = (f"Err{ESC}]52;c;cm0gLXJmIH4K\x07{ESC}]0;owned\x07{ESC}[2J{ESC}[H{ESC}[3J{ESC}c{ESC}[?1049h"
            f"{ESC}]2;t\x07{ESC}[31m{ESC}[5m{ESC}[8m{ESC}[0m{ESC}7{ESC}8{ESC}(0{ESC}[1;1H")
A8_MODEL = f"sub{ESC}]52;c;Y2xpcA==\x07{ESC}]0;title\x07{ESC}[2J\u202e\u2028"
A12_FINAL = "report\u202etxt.exe [bold red]MARKUP[/bold red] \u2066isolated\u2069"
SGR = re.compile(r"\x1b\[[0-9;]*m")  # what rich itself writes for styles


def console(terminal: bool) -> Console:
    return Console(file=io.StringIO(), width=200, force_terminal=terminal, color_system="standard" if terminal else None)


def printed(c: Console) -> str:
    return c.file.getvalue()  # type: ignore[attr-defined]


def assert_clean(out: str) -> None:
    """Only rich's own colour codes may hold an ESC; nothing else may be unsafe."""
    assert unsafe_chars(SGR.sub("", out).replace("\n", "")) == [], repr(out[:300])
    assert "owned" not in out and "cm0gLXJmIH4K" not in out and "Y2xpcA" not in out


def test_a8_payload_has_16_escs():
    assert A8_CLASS.count(ESC) == 16


@pytest.mark.parametrize("terminal", [False, True])
def test_a8_progress_lines_print_exception_names_and_model_strings_clean(terminal):
    c = console(terminal)
    view = StepView(c)
    view("model_reply", {"model": A8_MODEL, "latency_s": 0.5, "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    view("cell", {"code": f"raise {A8_CLASS}()\u2028second", "error": A8_CLASS, "duration_s": 0.01})
    view("sub_call", {"model": A8_MODEL, "ok": False, "error": f"{A8_CLASS}: {A8_MODEL}", "latency_s": 0.1})
    view("model_wait", {"message": f"server {A8_MODEL} silent"})
    out = printed(c)
    assert_clean(out)
    assert "ErrEnd" not in out and "Err" in out and "sub" in out
    assert len(out.strip().split("\n")) == 4  # one line per event: a U+2028 makes no second line


@pytest.mark.parametrize("terminal", [False, True])
def test_a12_stats_table_and_errors_never_read_markup(terminal):
    c = console(terminal)
    result = RunResult(answer=A12_FINAL, status="ok", usage={f"[link=http://x]{A8_MODEL}": Usage(1, 2)},
                       trace="/tmp/[bold]t.jsonl")
    c.print(stats_table(result))
    print_error(c, f"failed: {A8_CLASS}", f"model {A8_MODEL} said [red]no[/red]")
    print_warning(c, f"the trace is incomplete\u2028{A8_CLASS}")
    out = printed(c)
    assert_clean(out)
    assert "[link=http://x]" in out and "[bold]t.jsonl" in out and "[red]no[/red]" in out


def hostile_trace(path: Path) -> Path:
    with TraceWriter(path) as trace:
        trace.event("run_start", question=f"q {A8_MODEL}", context={"kind": A8_CLASS, "source": A8_MODEL},
                    root_model=A8_MODEL, sub_model=A8_MODEL, settings={A8_CLASS: A8_MODEL})
        trace.event("model_reply", iteration=1, text=f"```repl\nx = '\u2028'\n```{A8_CLASS}", model=A8_MODEL,
                    usage={"prompt_tokens": 1, "completion_tokens": 2}, latency_s=0.1)
        trace.event("sub_call", model=A8_MODEL, ok=False, error=A8_CLASS, latency_s=0.1, prompt_chars=1)
        trace.event("cell", iteration=1, code=f"raise {A8_CLASS}\u2028x", output=f"out\u2028put {A8_CLASS}",
                    error=A8_CLASS, timed_out=False, duration_s=0.1)
        trace.event("note", iteration=1, text=A8_MODEL)
        trace.event(A8_CLASS, text="an unknown kind")
        trace.event("run_end", answer=A12_FINAL, status="ok", iterations=1, sub_calls=1, duration_s=1.0)
    return path


@pytest.mark.parametrize("terminal", [False, True])
def test_a9_trace_show_renders_every_event_clean(tmp_path, terminal):
    from rlm.core.trace import read_trace

    events = read_trace(hostile_trace(tmp_path / "t.jsonl"))
    assert len(events) == 7
    c = console(terminal)
    render_trace(events, c)
    out = printed(c)
    assert_clean(out)
    assert "incomplete" not in out and "status: ok" in out and "reporttxt.exe [bold red]MARKUP[/bold red]" in out


def test_trace_show_command_output_is_clean(tmp_path):
    path = hostile_trace(tmp_path / "t.jsonl")
    result = CliRunner().invoke(app, ["trace", "show", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert_clean(result.stdout)
    assert "answer: reporttxt.exe" in result.stdout


def test_a12_answer_and_json_output_of_a_run(monkeypatch, capsys, tmp_path):
    """`rlm query` prints the answer sanitised, and --json as exact JSON on one line."""
    from rlm.cli import run as run_mod

    result = RunResult(answer=A12_FINAL + "\u2028" + A8_CLASS, status="ok", trace=None)

    class FakeRLM:  # the CLI's printing only: the library's run is covered elsewhere
        def run(self, *a, **k):
            return result

    monkeypatch.setattr(run_mod, "make_rlm", lambda *a, **k: FakeRLM())
    from rlm.config import load_settings

    monkeypatch.chdir(tmp_path)
    loaded = load_settings(config_file=None)
    ctx = type("Ctx", (), {"meta": {}})()
    run_mod.answer_question(ctx, loaded, "q", text="t")  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert_clean(out)
    assert out.startswith("reporttxt.exe [bold red]MARKUP[/bold red] isolated\nErr")
    run_mod.answer_question(ctx, loaded, "q", text="t", json_out=True)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and len(out.splitlines()) == 1
    assert json.loads(out)["answer"] == result.answer
    assert unsafe_chars(out.replace("\n", "")) == []
