"""`rlm sandbox check`: is everything a session needs there, and how fast is it."""

from __future__ import annotations

import statistics
import time

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from rlm.core.text import one_line, terminal_text
from rlm.errors import RLMError
from rlm.sandbox import SandboxSession, SandboxSettings


def _line(console: Console, ok: bool, what: str, detail: str) -> None:
    mark = "[green]ok[/green]  " if ok else "[red]FAIL[/red]"
    console.print(f"{mark} {what}: {escape(terminal_text(detail))}", highlight=False)


def run_check(settings: SandboxSettings, console: Console, *, security: bool = False) -> int:
    """Print one line per check; return 0 when all pass, 3 otherwise."""
    from rlm.sandbox.engine import Engine
    from rlm.sandbox.image import image_status, repo_root_default

    try:
        engine = Engine()
        version = engine.version()
        _line(console, True, "engine", f"Docker {version.get('Version')} (API {version.get('ApiVersion')})")
    except RLMError as exc:
        _line(console, False, "engine", str(exc))
        return 3
    failures = 0
    try:
        status = image_status(engine, repo_root_default(), image=settings.image)
        if not status.present:
            _line(console, False, "image", f"{settings.image} is missing: run `rlm sandbox build`")
            return 3
        _line(console, status.current, "image",
              f"{settings.image} {'is current' if status.current else 'is stale: run `rlm sandbox build`'}")
        failures += not status.current
        from rlm.sandbox.runtime import describe

        iso = describe(settings.runtime, settings.seccomp, engine)
        how = (f" (setting {settings.runtime!r})" if settings.runtime not in (None, "", "auto")
               else " (auto: runsc when the engine has it, else runc; RLM_RUNTIME=runc to choose runc)")
        _line(console, True, "runtime", f"{iso.runtime}{how}, {iso.version}")
        _line(console, True, "isolation", iso.isolation)
        with SandboxSession(settings=settings, engine=engine) as session:
            _line(console, True, "session", f"container and kernel ready in {session.open_seconds:.2f} s")
            times = []
            for _ in range(30):
                ex = session.execute("pass")
                times.append(ex.duration_s)
            _line(console, True, "cell", f"trivial cell median {statistics.median(times) * 1000:.1f} ms "
                                         f"(best {min(times) * 1000:.1f} ms over {len(times)})")
            ex = session.execute("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), 1)\n"
                                 "    print('reachable')\nexcept OSError:\n    print('blocked')")
            blocked = ex.stdout.strip() == "blocked"
            _line(console, blocked, "network", "no network inside" if blocked else "the sandbox reached the network")
            failures += not blocked
        if security:
            failures += _security(settings, engine, console)
    except RLMError as exc:
        _line(console, False, "sandbox", str(exc))
        return 3
    finally:
        engine.close()
    return 0 if failures == 0 else 3


def _security(settings: SandboxSettings, engine, console: Console) -> int:
    from rlm.security import run_checks

    started = time.perf_counter()
    results = run_checks(lambda **overrides: SandboxSession(settings=settings.with_(**overrides), engine=engine),
                         fast=True, progress=lambda name: console.print(f"  attack: {name}", style="dim"))
    table = Table(title="security checks", header_style="bold")
    for column in ("attack", "expected", "seen", "result"):
        table.add_column(column)
    for r in results:
        table.add_row(r.name, r.expected, Text(one_line(r.seen)), "[green]pass[/green]" if r.passed else "[red]FAIL[/red]")
    console.print(table)
    failed = sum(not r.passed for r in results)
    console.print(f"{len(results) - failed} passed, {failed} failed in {time.perf_counter() - started:.1f} s")
    return failed
