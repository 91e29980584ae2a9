"""A trace's events grouped for display: runs, iterations, cells, sub-calls and time spent.

Pure data, no HTML.  Every string here is still untrusted: the page escapes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]  # one trace event or results record, as read from JSON


@dataclass
class Iteration:
    """One model reply and what it caused (cells, sub-calls, notes)."""

    number: Any
    reply: Event | None = None
    cells: list[Event] = field(default_factory=list)
    sub_calls: list[Event] = field(default_factory=list)
    notes: list[Event] = field(default_factory=list)
    final_request: bool = False  # the extra reply asked for after the last iteration

    @property
    def model_s(self) -> float:
        return number(self.reply.get("latency_s")) if self.reply else 0.0

    @property
    def cells_s(self) -> float:
        return sum(number(c.get("duration_s")) for c in self.cells)

    @property
    def sub_s(self) -> float:
        """Wall time of the sub-calls (concurrent calls counted once), within the cells' time."""
        spans = sorted((number(c.get("t")) - number(c.get("latency_s")), number(c.get("t")))
                       for c in self.sub_calls)
        total, end = 0.0, float("-inf")
        for a, b in spans:
            if b <= end:
                continue
            total += b - max(a, end)
            end = b
        return min(total, self.cells_s) if self.cells else total

    @property
    def sandbox_s(self) -> float:
        return max(self.cells_s - self.sub_s, 0.0)

    @property
    def total_s(self) -> float:
        return self.model_s + self.sandbox_s + self.sub_s

    @property
    def failed(self) -> bool:
        return any(c.get("error") or c.get("timed_out") for c in self.cells)


@dataclass
class Run:
    """One run of a trace file (a file may hold several: interactive sessions append)."""

    start: Event | None = None
    end: Event | None = None
    iterations: list[Iteration] = field(default_factory=list)
    notes: list[Event] = field(default_factory=list)  # events before the first reply
    other: list[Event] = field(default_factory=list)  # kinds this viewer does not know

    @property
    def status(self) -> str:
        if self.end is None:
            return "incomplete"
        return str(self.end.get("status") or "unknown")

    @property
    def question(self) -> str:
        return text(self.start.get("question")) if self.start else ""

    @property
    def startup_s(self) -> float:
        """Time before the run started (sandbox start, reading the context): run_start's t."""
        return number(self.start.get("t")) if self.start else 0.0

    @property
    def duration_s(self) -> float:
        if self.end is not None and self.end.get("duration_s") is not None:
            return number(self.end.get("duration_s"))
        return self.startup_s + sum(it.total_s for it in self.iterations)

    def phases(self) -> dict[str, float]:
        """Seconds per phase; "other" is what the events do not account for."""
        model = sum(it.model_s for it in self.iterations)
        sandbox = sum(it.sandbox_s for it in self.iterations)
        sub = sum(it.sub_s for it in self.iterations)
        startup = min(self.startup_s, self.duration_s)
        other = max(self.duration_s - model - sandbox - sub - startup, 0.0)
        return {"model": model, "sandbox": sandbox, "sub-calls": sub, "start-up": startup, "other": other}


def split_runs(events: list[Event]) -> list[Run]:
    """Group a trace's events into runs and iterations."""
    runs: list[Run] = []
    for event in events:
        kind = event.get("kind")
        if kind == "run_start" or not runs:
            runs.append(Run())
        run = runs[-1]
        current = run.iterations[-1] if run.iterations else None
        if kind == "run_start":
            run.start = event
        elif kind == "model_reply":
            n = event.get("iteration")
            again = current is not None and current.number == n
            run.iterations.append(Iteration(number=n, reply=event, final_request=again))
        elif kind in ("cell", "sub_call", "note", "rule", "budget"):   # a rule firing, a budget: notes ("text")
            if current is None:
                current = Iteration(number=event.get("iteration"))
                if kind in ("note", "rule", "budget"):
                    run.notes.append(event)
                    continue
                run.iterations.append(current)
            {"cell": current.cells, "sub_call": current.sub_calls, "note": current.notes,
             "rule": current.notes, "budget": current.notes}[kind].append(event)
        elif kind == "run_end":
            run.end = event
        else:
            run.other.append(event)
    return runs


def number(value: Any) -> float:
    """A float from a trace value; 0.0 for anything that is not a number."""
    if isinstance(value, bool):
        return 0.0
    try:
        result = float(value)
    except (TypeError, ValueError):
        return 0.0
    return result if math.isfinite(result) else 0.0


def text(value: Any) -> str:
    """Any trace value as a string ("" for None)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


__all__ = ["Event", "Iteration", "Run", "number", "split_runs", "text"]
