"""What the loop says to the model after a turn: rules as data over a typed observation of the
turn, grouped in profiles (``general`` is the default), any rule ablated by id, every firing traced."""

from __future__ import annotations

from collections.abc import Iterable

from rlm.core.policy.general import GENERAL
from rlm.core.policy.legacy import LEGACY
from rlm.core.policy.observation import AnswerForm, CellObservation, Observation
from rlm.core.policy.rules import Decision, Firing, OnFire, Policy, Profile, Rule
from rlm.errors import ConfigError

PROFILES: dict[str, Profile] = {p.name: p for p in (GENERAL, LEGACY)}
DEFAULT_PROFILE = GENERAL.name


class UnknownRule(ConfigError):
    """A profile or rule id that does not exist (the message lists the ones that do)."""


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownRule(f"unknown policy {name!r}", hint=f"known policies: {', '.join(PROFILES)}") from None


def all_rule_ids() -> list[str]:
    return list(dict.fromkeys(rid for p in PROFILES.values() for rid in p.ids()))


def make_policy(name: str = DEFAULT_PROFILE, ablate: Iterable[str] = (), on_fire: OnFire | None = None) -> Policy:
    """The policy of one run: profile ``name`` without the rules ``ablate`` names (each must exist in
    some profile)."""
    chosen = profile(name)
    unknown = [rid for rid in ablate if rid not in all_rule_ids()]
    if unknown:
        raise UnknownRule(f"unknown rule {', '.join(map(repr, unknown))} to ablate",
                          hint=f"known rules: {', '.join(all_rule_ids())}")
    return Policy(chosen, ablate, on_fire)


__all__ = ["DEFAULT_PROFILE", "PROFILES", "AnswerForm", "CellObservation", "Decision", "Firing", "Observation",
           "Policy", "Profile", "Rule", "UnknownRule", "all_rule_ids", "make_policy", "profile"]
