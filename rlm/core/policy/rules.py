"""Rules as data, and the policy that applies a profile of them to each turn.

A rule is an id, a trigger over an :class:`Observation`, the message it adds, the slot the message
goes to, and how many times it may fire in one run.  Slots:

* ``advice``: said after the turn's outputs;
* ``ending``: the turn's closing instruction (the last rule that fires wins; else the neutral one);
* ``refusal``: the turn's answer is not taken, and this is why (shown as that answer's output).

Stages: ``first`` (the first user message: only the question and the preview are known), ``turn``
(after each reply) and ``limit`` (the iteration limit, or a run stuck on one cell: whether the
model is asked once more for its answer).  Every firing goes to ``on_fire`` (the trace) with its id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from rlm.core.policy.observation import Observation

Slot = Literal["advice", "ending", "refusal"]
Stage = Literal["first", "turn", "limit"]


@dataclass(frozen=True)
class Rule:
    id: str
    trigger: Callable[[Observation], bool]
    message: Callable[[Observation], str]
    slot: Slot = "advice"
    stage: Stage = "turn"
    max_firings: int | None = None   # None: no limit
    reread: bool = False             # a refusal said after the last output, shown again
    doc: str = ""                    # one line for `rlm policy` listings and docs


@dataclass(frozen=True)
class Profile:
    name: str
    rules: tuple[Rule, ...]
    doc: str = ""

    def ids(self) -> list[str]:
        return [r.id for r in self.rules]


@dataclass
class Firing:
    rule: str
    message: str
    slot: Slot


@dataclass
class Decision:
    """What the policy says about one turn."""

    firings: list[Firing] = field(default_factory=list)

    @property
    def advice(self) -> list[str]:
        return [f.message for f in self.firings if f.slot == "advice" and f.message]

    @property
    def ending(self) -> str | None:
        endings = [f.message for f in self.firings if f.slot == "ending" and f.message]
        return endings[-1] if endings else None

    @property
    def refusal(self) -> Firing | None:
        return next((f for f in self.firings if f.slot == "refusal"), None)

    def fired(self, rule_id: str) -> bool:
        return any(f.rule == rule_id for f in self.firings)


OnFire = Callable[[Firing, Observation], None]


class Policy:
    """A profile with some rules ablated, applied to one run (it counts each rule's firings)."""

    def __init__(self, profile: Profile, ablate: Iterable[str] = (), on_fire: OnFire | None = None) -> None:
        self.profile = profile
        self.ablated = frozenset(ablate)
        self.on_fire = on_fire or (lambda _f, _o: None)
        self.counts: Counter[str] = Counter()
        self._refused_reread: dict[str, bool] = {r.id: r.reread for r in profile.rules}

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.profile.rules if r.id not in self.ablated)

    def enabled(self, rule_id: str) -> bool:
        return rule_id not in self.ablated and rule_id in self.profile.ids()

    def rereads(self, firing: Firing) -> bool:
        return self._refused_reread.get(firing.rule, False)

    def decide(self, obs: Observation, stage: Stage = "turn") -> Decision:
        decision = Decision()
        for rule in self.rules:
            if rule.stage != stage:
                continue
            if rule.max_firings is not None and self.counts[rule.id] >= rule.max_firings:
                continue
            if not rule.trigger(obs):
                continue
            if rule.slot == "refusal" and decision.refusal is not None:
                continue   # one reason is enough
            firing = Firing(rule.id, rule.message(obs), rule.slot)
            self.counts[rule.id] += 1
            decision.firings.append(firing)
            self.on_fire(firing, obs)
        return decision
