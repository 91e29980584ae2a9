"""``--policy`` and ``--ablate``: which rules the loop applies after each turn (rlm/core/policy)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

PolicyOpt = Annotated[Optional[str], typer.Option(
    "--policy", help="The loop's rules after a turn: general (the default) or legacy (the rules before it, opt-in).")]
AblateOpt = Annotated[Optional[list[str]], typer.Option(
    "--ablate", metavar="RULE_ID", help="Turn one rule of the policy off (repeat for several); "
    "the ids are listed in docs/policy.md.")]


def policy_flags(policy: str | None, ablate: list[str] | None) -> dict:
    """The policy options as setting keys (None: not given)."""
    return {"policy": policy, "ablate": tuple(ablate) if ablate else None}
