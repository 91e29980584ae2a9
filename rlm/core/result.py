"""What a run returns: its answer, how it ended, and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlm.llm.base import Usage


@dataclass
class RunResult:
    answer: str | None
    status: str   # ok | max_iterations | time_limit | token_limit | cost_limit | no_answer | error | interrupted
    iterations: int = 0
    sub_calls: int = 0
    usage: dict[str, Usage] = field(default_factory=dict)
    duration_s: float = 0.0
    trace: str | None = None
    phases: dict[str, float] = field(default_factory=dict)   # sandbox_start_s, model_s, execution_s
    error: str | None = None
    cost_usd: dict[str, float] = field(default_factory=dict)   # by model, for the models with a known price
    budget: dict[str, Any] | None = None   # the budget that ended the run: setting, status, limit, used

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "status": self.status, "iterations": self.iterations,
                "sub_calls": self.sub_calls, "usage": {m: u.to_dict() for m, u in self.usage.items()},
                "cost_usd": dict(self.cost_usd), "budget": self.budget,
                "duration_s": round(self.duration_s, 3), "trace": self.trace, "error": self.error,
                "phases": {k: round(v, 3) for k, v in self.phases.items()}}
