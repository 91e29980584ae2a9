"""Attacks on the sandbox, as data, and the runner that plays them against real sessions.

Shared by ``tests/security`` and ``rlm sandbox check --security``.  Each :class:`Attack`
holds a cell of Python source that runs **inside** a sandbox session (never on the host)
and a host-side ``verify`` that decides, from what came back and from host-side canaries,
whether the attack was contained.  After every attack the runner also checks that the
session still answers (``print(1+1)``): containment that kills the session is a failure.

Host-side canaries (:class:`Canaries`) are set up once per run: HTTP servers on
127.0.0.1 and 0.0.0.0, a Unix socket at a host path and one in the abstract namespace,
each counting connections (must stay 0); a secret file (must stay unchanged and
unreadable from inside); environment variables holding canary secrets and API keys
(must not appear in any ``/proc/*/environ`` inside); a context file mounted read-only.

Usage::

    from rlm.security import default_session_factory, run_checks
    results = run_checks(default_session_factory(SandboxSettings()), fast=True,
                         progress=lambda name: print("attack:", name))

Nothing that comes back from the sandbox is evaluated or unpickled: cells report one
JSON line (``report(...)``) that the host parses with ``json.loads``.

Layout: :mod:`~rlm.security.model` (``Attack``, ``CheckResult``, the ``attack()`` registry),
:mod:`~rlm.security.canaries`, :mod:`~rlm.security.context` (handler, ``CheckContext``, prelude),
:mod:`~rlm.security.runner` (pool, runner),
:mod:`~rlm.security.verify` (helpers of the verify functions) and :mod:`rlm.security.attacks`
(one module per category, imported in catalogue order).
"""

from __future__ import annotations

from rlm.security import attacks  # noqa: F401  (registers the catalogue in ATTACKS, in order)
from rlm.security.canaries import ENV_CANARY_NAMES, Canaries, host_addresses, host_fd_count, host_rss_mb
from rlm.security.model import ATTACKS, CATEGORIES, Attack, CheckResult, Verify, attack
from rlm.security.runner import (
                                 ALIVE_CODE,
                                 MARK,
                                 CheckContext,
                                 CheckHandler,
                                 SessionFactory,
                                 SessionPool,
                                 default_session_factory,
                                 prelude,
                                 run_attack,
                                 run_checks,
                                 select_attacks,
)
from rlm.security.verify import refused, report_of

__all__ = ["ALIVE_CODE", "ATTACKS", "CATEGORIES", "ENV_CANARY_NAMES", "MARK", "Attack", "Canaries", "CheckContext",
           "CheckHandler", "CheckResult", "SessionFactory", "SessionPool", "Verify", "attack", "default_session_factory",
           "host_addresses", "host_fd_count", "host_rss_mb", "prelude", "refused", "report_of", "run_attack",
           "run_checks", "select_attacks"]
