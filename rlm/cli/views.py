"""What the CLI shows: live steps, statistics, errors.  Everything from a model or the
sandbox (answers, cell errors, exception names, model names, server messages) is sanitised
by ``rlm.core.text`` and printed as rich ``Text`` (never parsed as markup)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rlm.core.result import RunResult
from rlm.core.text import first_line, one_line, terminal_text


def safe(value: Any, style: str = "") -> Text:
    """Untrusted text for rich: sanitised (lines kept), never read as markup."""
    return Text(terminal_text(value), style=style)


def safe_line(value: Any, style: str = "", width: int | None = None) -> Text:
    """Untrusted text for a one-line view (line breaks shown as ⏎), never read as markup."""
    return Text(one_line(value, width), style=style)


def _first_line(text: Any, width: int = 70) -> str:
    return first_line(text, width)


def _seconds(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


class StepView:
    """Progress callback for the orchestrator: one line per step; styled on a terminal."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.subcalls_in_cell = 0

    def __call__(self, kind: str, data: dict) -> None:
        if kind in ("model_wait", "model_retry"):  # a silent or retried server is said even with --quiet/--json
            self.console.print(safe_line(data.get("message", kind), style="yellow"), highlight=False,
                               soft_wrap=True)
            return
        if self.quiet:
            return
        line = self._line(kind, data)
        if line is not None:
            self.console.print(line, highlight=False, soft_wrap=True)

    def _line(self, kind: str, data: dict) -> Text | None:
        if kind == "sandbox_ready":
            return Text(f"sandbox ready in {_seconds(data.get('seconds')):.2f} s", style="dim")
        if kind == "iteration":
            return Text(f"iteration {one_line(data.get('iteration'))}/{one_line(data.get('max'))}", style="bold cyan")
        if kind == "model_reply":
            u = data.get("usage") or {}
            return safe_line(f"  model {data.get('model')}: {_seconds(data.get('latency_s')):.2f} s, "
                             f"{u.get('prompt_tokens', 0)} in / {u.get('completion_tokens', 0)} out tokens",
                             style="dim")
        if kind == "cell":
            status = "timed out" if data.get("timed_out") else (one_line(data.get("error"), 80) or "ok")
            style = "green" if status == "ok" else "yellow"
            text = Text("  ran ")
            text.append(_first_line(data.get("code", "")), style="bold")
            text.append(f"  ({_seconds(data.get('duration_s')) * 1000:.0f} ms, {status})", style=style)
            return text
        if kind == "budget":
            return safe_line(f"  {data.get('text', 'a budget is reached')}: asking for the answer", style="yellow")
        if kind == "sub_call":
            mark = "ok" if data.get("ok") else f"failed: {_first_line(data.get('error'), 60)}"
            return Text(f"    sub-call {one_line(data.get('model'), 80)}: "
                        f"{_seconds(data.get('latency_s')):.2f} s, {mark}", style="dim")
        return None


def stats_table(result: RunResult) -> Table:
    table = Table(title="run statistics", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")

    def row(what: Any, value: Any) -> None:
        table.add_row(safe_line(what), safe_line(value))

    row("status", result.status)
    row("iterations", result.iterations)
    row("sub-calls", result.sub_calls)
    row("sub-calls memoised (not sent)", sum(u.memoised for u in result.usage.values()))
    for model, usage in result.usage.items():
        row(f"tokens in / out ({one_line(model, 80)})", f"{usage.prompt_tokens} / {usage.completion_tokens}")
        if model in result.cost_usd:
            row(f"cost ({one_line(model, 80)})", f"{result.cost_usd[model]:.4f} USD")
    if len(result.cost_usd) > 1:
        row("cost: total", f"{sum(result.cost_usd.values()):.4f} USD")
    if result.budget:
        row("budget reached", f"{result.budget.get('setting')} = {result.budget.get('limit')}")
    for phase, seconds in result.phases.items():
        row(f"time: {phase.removesuffix('_s').replace('_', ' ')}", f"{seconds:.2f} s")
    row("time: total", f"{result.duration_s:.2f} s")
    if result.trace:
        row("trace", result.trace)
    return table


def print_error(console: Console, message: str, hint: str | None) -> None:
    console.print(Text("error: ", style="bold red") + safe(message), highlight=False, soft_wrap=True)
    if hint:
        console.print(Text("hint: ", style="bold") + safe(hint), highlight=False, soft_wrap=True)


def print_warning(console: Console, message: str) -> None:
    """One line on ``console`` (stderr): something the user should know that did not stop the run."""
    console.print(Text("warning: ", style="bold yellow") + safe_line(message), highlight=False, soft_wrap=True)


def print_table(table: Table, *, stderr: bool = False) -> None:
    """Print ``table`` whole.  On a terminal rich fits it to the terminal's width; written to a
    file or a pipe (a log, CI) it gets the width it needs instead of rich's default 80 columns,
    which would squeeze its columns to a few characters each."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        need = Console(width=10_000).measure(table).maximum     # measured unbounded
        console = Console(stderr=stderr, width=max(console.width, need))
    console.print(table)
