"""Helpers of the verify functions: the cell's report, refusal checks, canary hits."""

from __future__ import annotations

import json
import re
from typing import Callable, Iterable, Mapping

from rlm.sandbox.execution import Execution
from rlm.security.context import MARK, CheckContext, short
from rlm.security.model import Verify

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


# =========================================================================== verify helpers
def report_of(execution: Execution) -> dict | None:
    """The JSON the cell printed with ``report(...)`` (the last one), or None."""
    for line in reversed(execution.stdout.splitlines()):
        if line.startswith(MARK):
            try:
                data = json.loads(line[len(MARK):])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def _missing(execution: Execution) -> tuple[bool, str]:
    lines = [line for line in execution.output.splitlines() if line.strip()]
    return False, "no report from the cell: " + short(lines[-1] if lines else "no output", 120)


def _outcomes(data: dict, keys: Iterable[str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for key in keys:
        value = data.get(key)
        if isinstance(value, dict):
            merged.update({f"{k}": str(v) for k, v in value.items()})
    return merged


def _summary(outcomes: Mapping[str, str]) -> str:
    kinds = sorted({v for v in outcomes.values()})
    return f"{len(outcomes)} refused ({', '.join(kinds)})" if outcomes else "nothing tried"


def refused(*keys: str, extra: Callable[[Execution, CheckContext, dict], tuple[bool, str]] | None = None) -> Verify:
    """Pass when no outcome under ``keys`` in the cell's report is "ok" (and ``extra`` passes)."""

    def verify(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
        data = report_of(execution)
        if data is None:
            return _missing(execution)
        outcomes = _outcomes(data, keys)
        if not outcomes:
            return False, "the cell tried nothing"
        bad = [k for k, v in outcomes.items() if v == "ok"]
        if bad:
            return False, "SUCCEEDED: " + ", ".join(bad)
        seen = _summary(outcomes)
        if extra is not None:
            ok, more = extra(execution, ctx, data)
            return ok, f"{seen}; {more}"
        return True, seen

    return verify


def _no_canary_hit(execution: Execution, ctx: CheckContext, data: dict) -> tuple[bool, str]:
    hits = ctx.canaries.foreign_connections()
    return (not hits, "host canaries untouched" if not hits else f"CANARY HIT: {hits}")


def served_by_gvisor(*keys: str) -> Verify:
    """Like ``refused`` under runc.  Under gVisor a call may be answered (by gVisor's kernel, the Sentry, in
    user space): contained when the host kernel never sees it, i.e. every host process of the container
    (Sentry, gofer, stubs) runs under its seccomp filter with no_new_privs."""
    plain = refused(*keys)

    def verify(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
        if not ctx.probe.get("gvisor"):
            return plain(execution, ctx)
        data = report_of(execution)
        if data is None:
            return _missing(execution)
        outcomes = _outcomes(data, keys)
        if not outcomes:
            return False, "the cell tried nothing"
        from rlm.security.host import filtered

        ok, host = filtered(ctx.session.container_id or "")
        answered = sorted(k for k, v in outcomes.items() if v == "ok")
        seen = (f"gVisor's kernel answered {', '.join(answered)} in user space" if answered
                else f"gVisor's kernel refused all {len(outcomes)}")
        return ok, f"{seen}; never reach the host kernel: {host}"

    return verify
