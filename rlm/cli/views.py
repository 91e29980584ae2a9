"""What the CLI shows: live steps, statistics, errors.  Everything from a model or the
sandbox is sanitised before it reaches the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rlm.core.parsing import sanitize_for_terminal
from rlm.core.result import RunResult


def _first_line(text: str, width: int = 70) -> str:
    line = sanitize_for_terminal(text).strip().splitlines()[0] if text and text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


class StepView:
    """Progress callback for the orchestrator: one line per step; styled on a terminal."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.subcalls_in_cell = 0

    def __call__(self, kind: str, data: dict) -> None:
        if kind in ("model_wait", "model_retry"):  # a silent or retried server is said even with --quiet/--json
            self.console.print(Text(str(data.get("message", kind)), style="yellow"), highlight=False)
            return
        if self.quiet:
            return
        line = self._line(kind, data)
        if line is not None:
            self.console.print(line, highlight=False)

    def _line(self, kind: str, data: dict) -> Text | None:
        if kind == "sandbox_ready":
            return Text(f"sandbox ready in {data['seconds']:.2f} s", style="dim")
        if kind == "iteration":
            return Text(f"iteration {data['iteration']}/{data['max']}", style="bold cyan")
        if kind == "model_reply":
            u = data.get("usage", {})
            return Text(f"  model {data.get('model')}: {data.get('latency_s', 0):.2f} s, "
                        f"{u.get('prompt_tokens', 0)} in / {u.get('completion_tokens', 0)} out tokens", style="dim")
        if kind == "cell":
            status = "timed out" if data.get("timed_out") else (data.get("error") or "ok")
            style = "green" if status == "ok" else "yellow"
            text = Text("  ran ")
            text.append(_first_line(data.get("code", "")), style="bold")
            text.append(f"  ({data.get('duration_s', 0) * 1000:.0f} ms, {status})", style=style)
            return text
        if kind == "sub_call":
            mark = "ok" if data.get("ok") else f"failed: {_first_line(str(data.get('error')), 60)}"
            return Text(f"    sub-call {data.get('model')}: {data.get('latency_s', 0):.2f} s, {mark}", style="dim")
        return None


def stats_table(result: RunResult) -> Table:
    table = Table(title="run statistics", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("status", result.status)
    table.add_row("iterations", str(result.iterations))
    table.add_row("sub-calls", str(result.sub_calls))
    for model, usage in result.usage.items():
        table.add_row(f"tokens in / out ({model})", f"{usage.prompt_tokens} / {usage.completion_tokens}")
    for phase, seconds in result.phases.items():
        table.add_row(f"time: {phase.removesuffix('_s').replace('_', ' ')}", f"{seconds:.2f} s")
    table.add_row("time: total", f"{result.duration_s:.2f} s")
    if result.trace:
        table.add_row("trace", result.trace)
    return table


def print_error(console: Console, message: str, hint: str | None) -> None:
    console.print(Text("error: ", style="bold red") + Text(sanitize_for_terminal(message)), highlight=False,
                  soft_wrap=True)
    if hint:
        console.print(Text("hint: ", style="bold") + Text(hint), highlight=False, soft_wrap=True)
