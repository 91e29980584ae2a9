"""Every attack of the catalogue (rlm.security.ATTACKS), each from inside a default-hardened session.

Each test asserts that the attack was contained (host-side verification, canaries) and
that the session still answers afterwards.  Known holes are strict xfails: when the
sandbox is fixed the test starts passing and the xfail must be removed.
"""

from __future__ import annotations

import pytest

from rlm.security import ATTACKS, run_attack, select_attacks

pytestmark = pytest.mark.docker

KNOWN_HOLES: dict[str, str] = {
    # "attack_name": "HOLE: what, where, the fix"  -- a strict xfail until the sandbox is fixed
}

assert set(KNOWN_HOLES) <= {a.name for a in ATTACKS}, "KNOWN_HOLES names an attack that is not in the catalogue"


def _param(attack):
    marks = [pytest.mark.xfail(strict=True, reason=KNOWN_HOLES[attack.name])] if attack.name in KNOWN_HOLES else []
    return pytest.param(attack, id=attack.name, marks=marks)


@pytest.mark.parametrize("attack", [_param(a) for a in select_attacks(fast=False)])
def test_attack_is_contained(attack, pool):
    result = run_attack(pool, attack)
    assert result.alive, f"{attack.name}: the session no longer answers afterwards ({result.seen})"
    assert result.passed, f"{attack.name}: expected {attack.expected}; seen: {result.seen}"
