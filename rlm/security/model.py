"""The catalogue's data types and registry: :class:`Attack`, :class:`CheckResult`, ``attack()``.

Each module of :mod:`rlm.security.attacks` registers its attacks with ``attack(...)`` when it is
imported; :data:`ATTACKS` keeps them in that order (the catalogue order).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from rlm.sandbox.execution import Execution

if TYPE_CHECKING:
    from rlm.security.budget import HostBudget
    from rlm.security.context import CheckContext

CATEGORIES = ("network", "files", "privilege", "secrets", "resources", "bridge", "answer", "host")

Verify = Callable[[Execution, "CheckContext"], "tuple[bool, str]"]


# =========================================================================== data types
@dataclass(frozen=True)
class Attack:
    """One attack: ``code`` runs inside the sandbox; ``verify`` judges it on the host."""

    name: str
    category: str
    expected: str                       # what containment looks like, in a few words
    code: str                           # Python source run as one cell inside the sandbox
    verify: Verify                      # (execution, context) -> (passed, seen)
    fast: bool = True                   # part of `rlm sandbox check --security`
    settings: Mapping[str, Any] = field(default_factory=dict)  # SandboxSettings overrides
    timeout: float = 15.0               # the cell's timeout (seconds)
    fresh: bool = False                 # needs a session of its own (leaves the sandbox degraded)
    budget: int | None = None           # sub-call budget of the check handler during the attack
    cleanup: str | None = None          # cell run after verify (closes what the attack left open)
    prepare: Callable[["CheckContext"], None] | None = None  # host-side, before the cell
    host_budget: "HostBudget | None" = None  # what the host may spend (rlm/security/budget.py), checked


@dataclass
class CheckResult:
    name: str
    category: str
    expected: str
    seen: str
    passed: bool
    seconds: float
    alive: bool = True                  # the session answered print(1+1) afterwards


# =========================================================================== the catalogue
ATTACKS: list[Attack] = []


def _indent(code: str) -> str:
    """Shared helper code, indented like the attack bodies it is prepended to (one dedent for both)."""
    return textwrap.indent(code, "    ")


def attack(name: str, category: str, expected: str, code: str, verify: Verify, **kwargs) -> Attack:
    item = Attack(name, category, expected, textwrap.dedent(code).strip() + "\n", verify, **kwargs)
    if any(a.name == name for a in ATTACKS):
        raise ValueError(f"duplicate attack name {name}")
    ATTACKS.append(item)
    return item
