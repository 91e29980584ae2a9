"""`rlm bench sandbox`: the sandbox's speed and footprint, measured in one run on one image.

Every figure is measured here, against the same image: the docker-exec baseline runs in
a container of that image, the in-process floor in a separate Python process (the rlm
host process never executes cell code).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from rlm.sandbox import SandboxSession, SandboxSettings
from rlm.sandbox.engine import Engine
from rlm.sandbox.pool import SandboxPool

Say = Callable[[str], None]

_FLOOR_PROGRAM = """
import statistics, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.history_manager.enabled = False
times = []
for _ in range(300):
    t = time.perf_counter(); shell.run_cell("pass", store_history=False); times.append(time.perf_counter() - t)
print(statistics.median(times) * 1e6)
"""


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 3)


def _p95_ms(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 3)


def _write_context(mb: int) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="rlm-bench-"))
    path = folder / f"context-{mb}mb.txt"
    line = ("The quick brown fox jumps over the lazy dog while the harbor lantern glows. " * 14)[:1023] + "\n"
    block = line.encode() * 1024  # 1 MiB
    with path.open("wb") as fh:
        for _ in range(mb):
            fh.write(block)
    os.chmod(folder, 0o755)
    return path


def bench_sandbox(settings: SandboxSettings, *, context_mb: int = 100, sessions: int = 16,
                  say: Say = lambda _m: None) -> dict:
    engine = Engine()
    out: dict = {}
    try:
        say("cold open ...")
        opens: list[float] = []
        for _ in range(3):
            with SandboxSession(settings=settings, engine=engine) as s:
                opens.append(s.open_seconds or 0.0)
        out["cold_open_s"] = round(statistics.median(opens), 3)

        say("cells, docker exec baseline, bridge ...")
        with SandboxSession(settings=settings, engine=engine, handler=lambda req: {"text": "ok"}) as s:
            s.execute("pass")
            cells = [s.execute("pass").duration_s for _ in range(300)]
            out["cell_median_ms"] = _median_ms(cells)
            out["cell_p95_ms"] = _p95_ms(cells)
            execs = []
            container = s.container_id
            assert container is not None, "an open session has a container"
            for _ in range(20):
                t = time.perf_counter()
                engine.exec_run(container, ["python3", "-c", "pass"])
                execs.append(time.perf_counter() - t)
            out["docker_exec_median_ms"] = _median_ms(execs)
            ex = s.execute("import time\nts = []\nfor _ in range(200):\n    t = time.perf_counter(); llm_query('x')"
                           "; ts.append(time.perf_counter() - t)\nts.sort(); print(ts[100] * 1000)")
            out["bridge_roundtrip_ms"] = round(float(ex.stdout.strip() or "nan"), 3)
            out["idle_mb"] = round((engine.memory_usage_bytes(container) or 0) / 2 ** 20, 1)
        out["speedup_vs_docker_exec"] = round(out["docker_exec_median_ms"] / max(out["cell_median_ms"], 1e-6), 1)

        say("in-process floor ...")
        floor = subprocess.run([sys.executable, "-c", _FLOOR_PROGRAM], capture_output=True, text=True, timeout=120)
        out["inprocess_floor_us"] = round(float(floor.stdout.strip()), 1) if floor.returncode == 0 else None

        say("warm pool ...")
        small = _write_context(1)
        with SandboxPool(2, settings, engine=engine) as pool:
            warm = []
            for _ in range(4):
                pool.wait_ready(60)
                t = time.perf_counter()
                session = pool.acquire(small)
                warm.append(time.perf_counter() - t)
                session.close()
        out["warm_open_ms"] = _median_ms(warm)

        say(f"{context_mb} MB context ...")
        big = _write_context(context_mb)
        try:
            bigger = settings.with_(memory_mb=max(settings.memory_mb, context_mb * 4 + 512))
            with SandboxSession(context=big, settings=bigger, engine=engine) as s:
                ex = s.execute("print(len(context))", timeout=120)
                out["context_load_s"] = round(ex.duration_s, 3)
                out["context_ok"] = ex.stdout.strip() == str(context_mb * 2 ** 20)
        finally:
            big.unlink()

        say("64 batched prompts against a 200 ms fake ...")
        out["batched_s"] = _bench_batched(settings, engine)

        say(f"{sessions} concurrent sessions ...")
        out["sessions_ok"], errors = _bench_concurrent(settings, engine, sessions)
        out["sessions"] = sessions
        if errors:
            out["session_errors"] = errors
    finally:
        engine.close()
    return out


def _bench_batched(settings: SandboxSettings, engine: Engine) -> float:
    from rlm.core.subcalls import SubCallHandler
    from rlm.llm.base import ModelSettings
    from rlm.llm.fake_server import FakeModelServer
    from rlm.llm.openai_client import OpenAICompatibleClient

    with FakeModelServer(root_model="root", models=("sub",), sub={"default": "ok"}, sub_delay_s=0.2) as server:
        client = OpenAICompatibleClient(ModelSettings(base_url=server.url, root_model="root", sub_model="sub"))
        handler = SubCallHandler(client, sub_model="sub", temperature=0.0, enabled=True, max_calls=1000,
                                 max_chars=10000, concurrency=64)
        with client, SandboxSession(settings=settings, engine=engine, handler=handler) as s:
            s.execute("llm_query_batched(['warm-up'])")
            ex = s.execute("import time\nt = time.perf_counter()\nr = llm_query_batched([f'q{i}' for i in range(64)])"
                           "\nassert len(r) == 64 and all(x == 'ok' for x in r), r[:3]\nprint(time.perf_counter() - t)")
            if ex.error:
                raise RuntimeError(f"batched benchmark failed: {ex.error}")
            return round(float(ex.stdout.strip()), 3)


def _bench_concurrent(settings: SandboxSettings, engine: Engine, n: int) -> tuple[int, list[str]]:
    ok: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            with SandboxSession(settings=settings, engine=engine) as s:
                ex = s.execute(f"print({i} * 2)", timeout=60)
                if ex.stdout.strip() == str(i * 2):
                    with lock:
                        ok.append(i)
        except Exception as exc:  # noqa: BLE001 - a failed session is counted and reported, not raised
            with lock:
                errors.append(f"{exc.__class__.__name__}: {exc}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(ok), errors


def compare_runtimes(settings: SandboxSettings, runtimes: list[str], *, opens: int = 3, cells: int = 100,
                     say: Say = lambda _m: None) -> dict[str, dict]:
    """Per runtime: session open (median of ``opens``), trivial cell median, idle memory of a session."""
    engine = Engine()
    out: dict[str, dict] = {}
    try:
        for name in runtimes:
            say(f"runtime {name}: {opens} sessions, {cells} cells")
            opened: list[float] = []
            cell: list[float] = []
            idle: list[int] = []
            for _ in range(opens):
                with SandboxSession(settings=settings.with_(runtime=name), engine=engine) as s:
                    opened.append(s.open_seconds or 0.0)
                    for _ in range(cells // opens):
                        cell.append(s.execute("pass").duration_s)
                    deadline = time.monotonic() + 2.0     # let the start-up settle before reading memory
                    while time.monotonic() < deadline:
                        s.execute("pass")
                    usage = engine.memory_usage_bytes(s.container_id or "")
                    if usage is not None:
                        idle.append(usage)
            out[name] = {"open_s": round(statistics.median(opened), 3), "cell_ms": _median_ms(cell),
                         "cell_p95_ms": _p95_ms(cell),
                         "idle_mb": round(statistics.median(idle) / 2**20, 1) if idle else None}
    finally:
        engine.close()
    return out
