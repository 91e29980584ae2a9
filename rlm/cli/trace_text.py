"""`rlm trace show`: a trace rendered for a terminal (every string sanitized, never markup)."""

from __future__ import annotations

from typing import Any, Iterable

from rich.console import Console
from rich.syntax import Syntax
from rich.text import Text

from rlm.core.parsing import truncate_output
from rlm.core.text import terminal_text

REPLY_SHOWN_CHARS = 1_200
OUTPUT_SHOWN_CHARS = 1_500
ANSWER_SHOWN_CHARS = 4_000


# --------------------------------------------------------------------------- rendering


def render_trace(events: Iterable[dict], console: Console) -> None:
    """Print a trace for people: header, each iteration, the answer and totals.

    Every string from the trace is sanitized and printed as plain text (never as markup).
    """
    runs = _split_runs(list(events))
    for n, run in enumerate(runs):
        if n:
            console.print()
        _render_run(run, console)


def _split_runs(events: list[dict]) -> list[list[dict]]:
    """One list per run: a file may hold several runs (interactive sessions append)."""
    runs: list[list[dict]] = []
    for event in events:
        if event.get("kind") == "run_start" or not runs:
            runs.append([])
        runs[-1].append(event)
    return runs


def _render_run(events: list[dict], console: Console) -> None:
    start = next((e for e in events if e.get("kind") == "run_start"), None)
    if start is not None:
        _render_header(start, console)
    iteration: Any = None
    sub_calls: list[dict] = []
    end: dict | None = None
    for event in events:
        kind = event.get("kind")
        if kind == "model_reply":
            _flush_sub_calls(sub_calls, console)
            iteration = event.get("iteration")
            _render_reply(event, console)
        elif kind == "cell":
            _render_cell(event, console)
            _flush_sub_calls(sub_calls, console)  # sub-calls are made while a cell runs
        elif kind == "sub_call":
            sub_calls.append(event)
        elif kind == "note":
            console.print(Text("note: ", style="yellow") + _text(event.get("text")))
        elif kind == "rule":   # a rule of the loop's policy fired (rlm/core/policy)
            console.print(Text("rule: ", style="cyan") + _text(f"{event.get('id')}: {event.get('message')}"))
        elif kind == "budget":   # a budget was reached (rlm/core/budget.py)
            console.print(Text("budget: ", style="yellow") + _text(event.get("text")))
        elif kind == "run_end":
            _flush_sub_calls(sub_calls, console)
            end = event
        elif kind != "run_start":
            console.print(_text(f"{kind} event (t={event.get('t', '?')})", style="dim"))
    _flush_sub_calls(sub_calls, console)
    _render_end(end, iteration, console)


def _render_header(event: dict, console: Console) -> None:
    console.rule(Text("rlm trace", style="bold"))
    console.print(Text("question: ", style="bold") + _text(event.get("question")))
    ctx = event.get("context") or {}
    if isinstance(ctx, dict):
        console.print(Text("context: ", style="bold") + _text(
            f"{ctx.get('kind', '?')}, {_num(ctx.get('total_chars'))} characters, "
            f"{_num(ctx.get('n_documents'))} documents, from {ctx.get('source', '?')}"))
        if isinstance(ctx.get("paths"), list):   # a folder: the paths listed to the model
            console.print(Text("files: ", style="bold") + _text(
                f"{_num(ctx.get('n_files'))}; listed: {', '.join(str(p) for p in ctx['paths'])}"))
    sub = event.get("sub_model") or "same as root"
    console.print(Text("models: ", style="bold")
                  + _text(f"root {event.get('root_model') or '?'}, sub {sub}"))
    settings = event.get("settings")
    if isinstance(settings, dict) and settings:
        pairs = ", ".join(f"{k}={v}" for k, v in settings.items())
        console.print(Text("settings: ", style="bold") + _text(pairs, style="dim"))


def _render_reply(event: dict, console: Console) -> None:
    usage = event.get("usage") or {}
    facts = [str(event.get("model") or ""), _seconds(event.get("latency_s"))]
    facts.append(_usage(usage))
    title = f"iteration {event.get('iteration', '?')}"
    console.rule(Text(title, style="bold cyan"))
    console.print(_text(" · ".join(f for f in facts if f), style="dim"))
    reply, _ = truncate_output(_clean(event.get("text")), REPLY_SHOWN_CHARS)
    console.print(Text("reply:", style="bold"))
    console.print(_text(reply))


def _render_cell(event: dict, console: Console) -> None:
    code = _clean(event.get("code"))
    console.print(Text("code:", style="bold"))
    console.print(Syntax(code or "# (empty)", "python", theme="ansi_dark", word_wrap=True,
                         background_color="default"))
    facts = [_seconds(event.get("duration_s"))]
    if event.get("timed_out"):
        facts.append("TIMED OUT")
    if event.get("restarted"):
        facts.append(f"{event.get('restarted')} restarted")
    if event.get("truncated_chars"):
        facts.append(f"{_num(event.get('truncated_chars'))} characters truncated")
    output, _ = truncate_output(_clean(event.get("output")).rstrip(), OUTPUT_SHOWN_CHARS)
    console.print(Text("output", style="bold") + _text(f" ({', '.join(f for f in facts if f)}):",
                                                        style="dim"))
    console.print(_text(output if output.strip() else "(no output)", style="green"))
    if event.get("error"):
        error, _ = truncate_output(_clean(event.get("error")), OUTPUT_SHOWN_CHARS)
        console.print(Text("error: ", style="bold red") + _text(error, style="red"))


def _flush_sub_calls(sub_calls: list[dict], console: Console) -> None:
    """Summarise and forget the sub-calls collected since the last flush."""
    if not sub_calls:
        return
    failed = sum(1 for c in sub_calls if not c.get("ok", True))
    latency = sum(_float(c.get("latency_s")) for c in sub_calls)
    prompt_chars = sum(int(_float(c.get("prompt_chars"))) for c in sub_calls)
    line = (f"sub-calls: {len(sub_calls)} ({failed} failed), {prompt_chars:,} prompt characters, "
            f"{latency:.2f}s model time")
    console.print(_text(line, style="magenta"))
    errors = {_clean(c.get("error")) for c in sub_calls if c.get("error")}
    for error in sorted(errors)[:3]:
        console.print(_text(f"  sub-call error: {error}", style="red"))
    sub_calls.clear()


def _render_end(end: dict | None, iteration: Any, console: Console) -> None:
    console.rule(Text("result", style="bold"))
    if end is None:
        console.print(_text(f"status: incomplete (no run_end event; the run stopped after "
                            f"iteration {iteration if iteration is not None else '?'})",
                            style="bold yellow"))
        return
    answer, _ = truncate_output(_clean(end.get("answer")), ANSWER_SHOWN_CHARS)
    console.print(Text("answer: ", style="bold") + _text(answer if answer else "(none)"))
    console.print(Text("status: ", style="bold") + _text(end.get("status", "?")))
    facts = [f"{_num(end.get('iterations'))} iterations", f"{_num(end.get('sub_calls'))} sub-calls",
             _usage(end.get("usage")), _seconds(end.get("duration_s"))]
    console.print(_text("totals: " + ", ".join(f for f in facts if f), style="dim"))


# --------------------------------------------------------------------------- helpers


def _clean(value: Any) -> str:
    """Any trace value as sanitized text (``rlm.core.text.terminal_text``)."""
    return terminal_text(value)


def _text(value: Any, style: str = "") -> Text:
    """Plain rich Text (never parsed as markup) from a sanitized value."""
    return Text(_clean(value), style=style)


def _usage(usage: Any) -> str:
    """"tokens 1,200 in / 40 out" from a usage dict; "" when there is none."""
    if not isinstance(usage, dict) or not usage:
        return ""
    text = f"tokens {_num(usage.get('prompt_tokens'))} in / {_num(usage.get('completion_tokens'))} out"
    if usage.get("calls") is not None:
        text += f" ({_num(usage.get('calls'))} model calls)"
    return text


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "?" if value is None else _clean(value)
    return f"{value:,}"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _seconds(value: Any) -> str:
    return f"{_float(value):.2f}s" if value is not None else ""


__all__ = ["render_trace"]
