"""Answer attacks: huge or forged FINAL, state floods, huge errors, escape sequences, bidi controls and
line separators in what the host prints and traces."""

from __future__ import annotations

import json

from rlm.core.parsing import sanitize_for_terminal
from rlm.core.text import json_line, one_line, terminal_text, unsafe_chars
from rlm.sandbox.execution import Execution
from rlm.security.budget import HostBudget
from rlm.security.model import attack
from rlm.security.runner import CheckContext
from rlm.security.verify import _CONTROL_CHARS, report_of


# --------------------------------------------------------------------------- the answer
def _verify_final_cap(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    limit = ctx.session.settings.final_limit_chars
    final = execution.final or ""
    ok = 0 < len(final) <= limit + 200 and "truncated" in final[-100:]
    return ok, f"FINAL of 20M characters kept as {len(final)} (final_limit_chars {limit})"


attack("answer_huge_final", "answer", "a huge FINAL is cut at final_limit_chars", r"""
    FINAL("A" * 20_000_000)
""", _verify_final_cap)


def _verify_forged_state(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    limit = ctx.session.settings.final_limit_chars
    final = execution.final or ""
    ok = len(final) <= limit + 200
    return ok, f"forged state message: final of {len(final)} characters reached the host (limit {limit})"


attack("answer_forged_final", "answer", "the host caps FINAL itself (a forged state message)", r"""
    from IPython.display import publish_display_data
    publish_display_data({"application/vnd.rlm.state+json": {"final": "F" * 5_000_000}})
""", _verify_forged_state)


def _verify_state_flood(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    size = len(json.dumps(execution.meta))
    limit = ctx.session.settings.output_limit_bytes
    ok = size <= limit
    return ok, f"forged state keys: {len(execution.meta)} keys, {size} bytes kept on the host (cap {limit})"


attack("answer_state_flood", "answer", "forged state messages cannot grow host memory (meta capped)", r"""
    from IPython.display import publish_display_data
    for i in range(12):
        publish_display_data({"application/vnd.rlm.state+json": {f"key{i}": "M" * 2_000_000}})
""", _verify_state_flood)


def _verify_error_cap(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    limit = ctx.session.settings.output_limit_bytes
    size = len((execution.error or "").encode())
    ok = execution.error_name == "ValueError" and size <= limit + 1024
    return ok, f"exception message of 5 MB: error text of {size} bytes reached the host (cap {limit})"


attack("answer_huge_error", "answer", "a huge exception message is capped like output", r"""
    raise ValueError("E" * 5_000_000)
""", _verify_error_cap)


def _verify_ansi_output(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    raw = execution.output
    clean = sanitize_for_terminal(raw)
    ok = "\x1b" in raw and not _CONTROL_CHARS.search(clean) and all(w in clean for w in ("red", "bell", "boom"))
    return ok, (f"{sum(raw.count(c) for c in chr(27) + chr(7) + chr(13) + chr(0x9b))} control characters "
                f"arrive as data; none left after sanitize_for_terminal" if ok else f"sanitised: {clean[:80]!r}")


attack("answer_ansi_output", "answer", "escape sequences in output/errors are removed before printing", r"""
    import sys
    from IPython.display import display
    E = "\x1b"
    print(E + "[2J" + E + "[31mred" + E + "]0;pwned title\x07 over\rwrite \x9b31m" + E + "P1;2|x" + E + "\\")
    sys.stderr.write(E + "[1;1H\x08\x08\x07bell\n")
    display({"text/plain": E + "]52;c;Y2xpcGJvYXJk\x07clip"}, raw=True)
    raise RuntimeError(E + "[41mboom" + E + "]8;;http://evil.example\x07link" + E + "]8;;\x07")
""", _verify_ansi_output)


def _verify_ansi_final(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    final = execution.final or ""
    clean = sanitize_for_terminal(final)
    ok = "\x1b" in final and not _CONTROL_CHARS.search(clean) and "answer 42" in clean
    return ok, f"FINAL with escapes sanitised to {clean!r}"


attack("answer_ansi_final", "answer", "escape sequences in FINAL are removed before printing", r"""
    FINAL("\x1b]0;pwned\x07\x1b[2J\x1b[1;1Hanswer 42\r\x1b[1A\x1b[Kfake line\x9b2J")
""", _verify_ansi_final)


def _verify_final_var_missing(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    ok = (execution.error_name == "NameError" and execution.final is None
          and "no_such_variable" in (execution.error or ""))
    return ok, f"error as data: {execution.error_name}; final {execution.final!r}"


attack("answer_final_var_missing", "answer", "FINAL_VAR of a missing variable: NameError as data, no answer",
       r"""
    FINAL_VAR("no_such_variable")
""", _verify_final_var_missing)


# --------------------------------------------------------------------------- what the host prints (A8, A9, A12)
# The cell's hostile strings are written into a trace as the run writes them, read back, and
# rendered by the CLI (`rlm trace show`'s renderer and `rlm query`'s progress lines, in a child
# process) and by the trace viewer.  Containment: they arrive as data, and nothing unsafe for a terminal (an escape
# sequence, a C0/C1 control, a bidi control, U+2028/U+2029) is left in what the host shows;
# no event is lost on the way.

# run in a child process (the library never imports the CLI): the trace as `rlm trace show` renders
# it, then the events as `rlm query` shows them live (its progress lines), on a plain console
_RENDER = """
import sys
from rich.console import Console
from rlm.cli.trace_text import render_trace
from rlm.cli.views import StepView
from rlm.core.trace import read_trace
events = read_trace(sys.argv[1])
console = Console(file=sys.stdout, width=160)
render_trace(events, console)
console.print("@@PROGRESS@@", markup=False)
view = StepView(console)
for event in events:
    view(event["kind"], event)
"""


# writing, reading and rendering a few small events: little memory and CPU here (the CLI's rendering
# runs in a child process, whose start-up dominates the time)
_RENDER_BUDGET = HostBudget(rss_mb=64, cpu_s=5, seconds=60)


def _host_render(events: list[dict]) -> tuple[str, str, list[dict], int]:
    """``events`` written with the run's TraceWriter and read back: (what `rlm trace show` and the
    progress lines of `rlm query` print, the viewer's page, the events read, the lines of the file
    as str.splitlines counts them)."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from rlm.core.trace import TraceWriter, read_trace
    from rlm.viewer.trace_page import render_trace_page

    with tempfile.TemporaryDirectory(prefix="rlm-check-") as tmp:
        path = Path(tmp) / "trace.jsonl"
        with TraceWriter(path) as trace:
            for event in events:
                trace.event(**event)
        read = read_trace(path)
        lines = len(path.read_text(encoding="utf-8").splitlines())
        shown = subprocess.run([sys.executable, "-c", _RENDER, str(path)], capture_output=True,
                               text=True, timeout=120, cwd=tmp, env={**os.environ, "COLUMNS": "160"})
    if shown.returncode != 0:
        return f"(the CLI's rendering exited {shown.returncode}: {one_line(shown.stderr, 300)})", "", read, lines
    return shown.stdout, render_trace_page(read, title="check"), read, lines


def _left(text: str) -> list[str]:
    """What is still unsafe in ``text`` (line breaks and tabs are fine)."""
    return unsafe_chars(text.replace("\n", ""))


def _run_events(code: str, execution: Execution, *, answer: str | None, model: str | None = None,
                sub_error: str | None = None) -> list[dict]:
    """The events a run with this one cell writes (the fields the loop gives them)."""
    events: list[dict] = [
        {"kind": "run_start", "question": "q", "context": {"kind": "str", "total_chars": 1, "n_documents": 1,
                                                          "source": "ctx"}, "root_model": "root", "sub_model": None},
        {"kind": "model_reply", "iteration": 1, "text": f"```repl\n{code}\n```", "model": "root",
         "usage": {"prompt_tokens": 1, "completion_tokens": 1}, "latency_s": 0.1}]
    if model is not None:
        events.append({"kind": "sub_call", "model": model, "prompt_chars": 2, "reply_chars": 0, "latency_s": 0.0,
                       "ok": False, "error": sub_error})
    events += [
        {"kind": "cell", "iteration": 1, "code": code, "output": execution.output, "error": execution.error_name,
         "timed_out": execution.timed_out, "duration_s": execution.duration_s, "restarted": None,
         "truncated_chars": 0},
        {"kind": "run_end", "answer": answer, "status": "ok", "iterations": 1, "sub_calls": 0, "duration_s": 1.0}]
    return events


_A8_CODE = r"""
    E = chr(27)
    # 16 ESC bytes: a clipboard write (OSC 52), a title change, a screen clear, the alternate screen, ...
    name = ("Err" + E + "]52;c;cm0gLXJmIH4K" + chr(7) + E + "]0;TITLE" + chr(7) + E + "[2J" + E + "[H" + E + "[3J"
            + E + "c" + E + "[?1049h" + E + "]2;t" + chr(7) + E + "[31m" + E + "[5m" + E + "[8m" + E + "[0m"
            + E + "7" + E + "8" + E + "(0" + E + "[1;1H")
    model = "m" + E + "]52;c;Y2xpcA==" + chr(7) + E + "]0;TITLE" + chr(7) + chr(0x202e) + chr(0x9b) + "2J"
    try:
        refusal = str(llm_query("hi", model=model))
    except Exception as exc:
        refusal = type(exc).__name__ + ": " + str(exc)
    report(name=name, model=model, refusal=refusal[:500])
    raise type(name, (Exception,), {})("boom" + E + "]0;TITLE" + chr(7))
"""


def _verify_escape_names(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution) or {}
    name, model = execution.error_name or "", str(data.get("model", ""))
    if name.count("\x1b") != 16 or "\x1b" not in model:
        return False, f"the hostile strings did not arrive as data: error name {one_line(name, 80)!r}"
    events = _run_events("raise Err()", execution, answer="done", model=model, sub_error=str(data.get("refusal")))
    shown, page, read, _ = _host_render(events)
    left = _left(shown) + _left(page)
    whole = (len(read) == len(events) and "error: Err\n" in shown  # the name's sequences went, bodies too
             and ", Err)" in shown.split("@@PROGRESS@@")[-1])  # the progress line of the cell
    ok = not left and whole
    return ok, (f"an exception name with 16 ESC bytes and a sub-call model string: trace show, the progress lines "
                f"and the page hold {len(left)} unsafe characters" + ("" if ok else f" ({left[:5]!r})")
                + ("" if whole else f"; not shown whole: {len(read)} of {len(events)} events, {one_line(shown, 300)}"))


attack("answer_escape_names", "answer", "an exception name or sub-call model with escape sequences prints clean "
       "(A8)", _A8_CODE, _verify_escape_names, host_budget=_RENDER_BUDGET)


_A9_CODE = r"""
    S = chr(0x2028) + chr(0x2029) + chr(0x85)
    text = "a" + S + "b"
    print("before" + S + "after")
    FINAL(text)
"""


def _verify_line_separators(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    final = execution.final or ""
    if "\u2028" not in final or "\u2028" not in execution.output:
        return False, f"no U+2028 arrived: output {one_line(execution.output, 80)!r}"
    code = "print('before\u2028\u2029after')"
    events = _run_events(code, execution, answer=final)
    shown, page, read, lines = _host_render(events)
    kinds = [e.get("kind") for e in read]
    ok = (kinds == [e["kind"] for e in events] and lines == len(events) and "status: ok" in shown
          and "incomplete" not in shown and "no run_end event" not in page and not _left(shown) + _left(page))
    return ok, (f"U+2028/U+2029/U+0085 in code, output and answer: {len(read)} of {len(events)} events read back, "
                f"{lines} lines for str.splitlines; trace show says "
                f"{'ok' if 'status: ok' in shown else 'incomplete'}")


attack("answer_line_separators", "answer", "line separators in code and output hide no trace event (A9)",
       _A9_CODE, _verify_line_separators, host_budget=_RENDER_BUDGET)


_A12_CODE = r"""
    FINAL("invoice_" + chr(0x202e) + "fdp.exe" + chr(0x2066) + " [bold red]MARKUP[/bold red]" + chr(0x200f))
"""


def _verify_bidi_final(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    final = execution.final or ""
    if "\u202e" not in final:
        return False, f"the bidi override did not arrive: FINAL {one_line(final, 80)!r}"
    shown, page, read, _ = _host_render(_run_events("FINAL(...)", execution, answer=final))
    answer = next((line for line in shown.splitlines() if line.startswith("answer: ")), "")
    printed = terminal_text(final)
    left = _left(shown) + _left(page) + _left(printed) + _left(json_line(final))
    ok = not left and answer == "answer: invoice_fdp.exe [bold red]MARKUP[/bold red]" and printed in answer
    return ok, f"FINAL with U+202E: printed as {one_line(answer, 80)!r}, {len(left)} unsafe characters left"


attack("answer_bidi_final", "answer", "a bidi override in FINAL prints neutralised (A12)", _A12_CODE,
       _verify_bidi_final, host_budget=_RENDER_BUDGET)
