"""A benchmark item: a question, its context and its known answer (a leaf: imports nothing of rlm).

Every generator (:mod:`rlm.bench.generators`, :mod:`rlm.bench.demo`, :mod:`rlm.bench.qa`) makes these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BenchItem:
    id: str
    benchmark: str
    size: int                  # requested size in characters
    question: str
    context: str
    expected: Any              # str, or a list of [a, b] pairs for f1_pairs
    scorer: str                # a name from rlm.bench.scorers.SCORERS
    meta: dict = field(default_factory=dict)
    split: str = ""            # dev | test (rlm.bench.splits), "" when not asked
    oracle_context: str | None = field(default=None, repr=False)  # only the passages that hold the answer

    def to_dict(self, *, with_context: bool = False) -> dict:
        out = {"id": self.id, "benchmark": self.benchmark, "size": self.size, "context_chars": len(self.context),
               "question": self.question, "expected": self.expected, "scorer": self.scorer, "meta": self.meta,
               "split": self.split}
        if self.oracle_context is not None:
            out["oracle_context_chars"] = len(self.oracle_context)
        if with_context:
            out["context"] = self.context
        return out
