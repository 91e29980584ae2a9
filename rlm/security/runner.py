"""The runner: the session pool, run_attack/run_checks (the handler and the cell prelude: rlm.security.context)."""

from __future__ import annotations

import textwrap
import time
from typing import Any, Callable, Iterable, Mapping

from rlm.errors import RLMError
from rlm.sandbox.session import SandboxSession
from rlm.sandbox.settings import SandboxSettings
from rlm.security.budget import HostMeter
from rlm.security.canaries import Canaries
from rlm.security.context import MARK, CheckContext, CheckHandler, prelude  # noqa: F401 - re-exported
from rlm.security.context import short as _short
from rlm.security.model import ATTACKS, Attack, CheckResult

ALIVE_CODE = "print(1+1)"


SessionFactory = Callable[..., SandboxSession]
"""Called as ``factory(**settings_overrides)`` (``SandboxSettings`` field names); returns a new,
not yet opened ``SandboxSession`` with the user's settings plus those overrides.  The runner
attaches the check handler (``set_handler``) and the canary context file before opening it."""


def default_session_factory(base: SandboxSettings | None = None, engine=None) -> SessionFactory:
    """Sessions with ``base`` settings (the user's, or the defaults) plus each attack's overrides."""

    def factory(**overrides) -> SandboxSession:
        return SandboxSession(settings=(base or SandboxSettings()).with_(**overrides), engine=engine)

    return factory


def _key(overrides: Mapping[str, Any]) -> tuple:
    return tuple(sorted(overrides.items()))


class SessionPool:
    """Reuses one open session per distinct settings override; replaces sessions that died."""

    def __init__(self, factory: SessionFactory, canaries: Canaries, handler: CheckHandler) -> None:
        self.factory = factory
        self.canaries = canaries
        self.handler = handler
        self._sessions: dict[tuple, SandboxSession] = {}
        self.opened = 0

    def _open(self, overrides: Mapping[str, Any]) -> SandboxSession:
        session = self.factory(**dict(overrides))
        session.set_handler(self.handler)
        if not session.opened and session.context_path is None:
            assert self.canaries.context_path is not None, "the canaries are started first"
            session.context_path = self.canaries.context_path.resolve()  # the read-only canary context
        self.opened += 1
        return session.open()

    def acquire(self, attack: Attack) -> SandboxSession:
        if attack.fresh:
            return self._open(attack.settings)
        key = _key(attack.settings)
        session = self._sessions.get(key)
        if session is None or session.closed:
            session = self._sessions[key] = self._open(attack.settings)
        return session

    def release(self, attack: Attack, session: SandboxSession, alive: bool) -> None:
        if attack.fresh or not alive:
            session.close()
            for key, value in list(self._sessions.items()):
                if value is session:
                    del self._sessions[key]

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()


def run_attack(pool: SessionPool, attack: Attack) -> CheckResult:
    """Play one attack in a pooled session; judge it; confirm the session still answers."""
    started = time.perf_counter()
    passed, seen, alive = False, "", False
    session = None
    try:
        session = pool.acquire(attack)
        ctx = CheckContext(session, pool.canaries, pool.handler, pool.canaries.probe(session))
        pool.handler.reset(attack.budget)
        if attack.prepare is not None:
            attack.prepare(ctx)
        meter = HostMeter().start()
        try:
            execution = session.execute(prelude(ctx.probe) + "\n" + textwrap.dedent(attack.code),
                                        timeout=attack.timeout)
            try:
                passed, seen = attack.verify(execution, ctx)
            except Exception as exc:  # noqa: BLE001 - a verify bug is a failed check, not a crash of the run
                passed, seen = False, f"verify failed: {exc.__class__.__name__}: {exc}"
        finally:
            use = meter.stop()
        if attack.host_budget is not None:
            over = use.over(attack.host_budget)
            passed = passed and not over
            seen += (f"; OVER HOST BUDGET: {', '.join(over)}" if over else
                     f"; {use.describe()} (budget {attack.host_budget.describe()})")
        if attack.cleanup:
            ctx.run(textwrap.dedent(attack.cleanup), timeout=30)
        answer = session.execute(ALIVE_CODE, timeout=15)
        alive = answer.ok and answer.stdout.strip() == "2"
        if not alive:
            seen += f"; the session no longer answers ({_short(answer.output, 80)})"
    except RLMError as exc:
        seen = (seen + "; " if seen else "") + f"host error: {exc.__class__.__name__}: {exc.message}"
    finally:
        pool.handler.reset()
        if session is not None:
            pool.release(attack, session, alive)
    return CheckResult(attack.name, attack.category, attack.expected, _short(seen, 400), passed and alive,
                       round(time.perf_counter() - started, 2), alive)


def select_attacks(fast: bool = True, names: Iterable[str] | None = None) -> list[Attack]:
    chosen = [a for a in ATTACKS if (a.fast or not fast)]
    if names is not None:
        wanted = set(names)
        chosen = [a for a in ATTACKS if a.name in wanted]
    # Group attacks sharing settings so that each group reuses one session; keep catalogue order.
    order: dict[Any, int] = {}
    for a in chosen:
        order.setdefault(_key(a.settings), len(order))
    return sorted(chosen, key=lambda a: (order[_key(a.settings)], a.fresh))


def run_checks(session_factory: SessionFactory, *, fast: bool = True,
               progress: Callable[[str], None] | None = None,
               attacks: Iterable[Attack] | None = None, canaries: Canaries | None = None) -> list[CheckResult]:
    """Run the catalogue (the fast subset by default); one CheckResult per attack, plus a final
    ``host_canaries`` result.  ``progress(name)`` is called as each check starts."""
    chosen = list(attacks) if attacks is not None else select_attacks(fast)
    own = canaries is None
    canaries = canaries or Canaries().start()
    pool = SessionPool(session_factory, canaries, CheckHandler())
    results: list[CheckResult] = []
    try:
        for attack in chosen:
            if progress:
                progress(attack.name)
            results.append(run_attack(pool, attack))
    finally:
        pool.close()
        if progress:
            progress("host_canaries")
        started = time.perf_counter()
        problems = canaries.problems()
        reachable = canaries.host_probe()
        if not reachable:
            problems.append("the host can no longer reach its own canary server")
        results.append(CheckResult("host_canaries", "host", "no connection reached a host canary; secret, "
                                   "context and host environment unchanged",
                                   "; ".join(problems) if problems else "all canaries untouched",
                                   not problems, round(time.perf_counter() - started, 2)))
        if own:
            canaries.stop()
    return results
