"""What an attack may make the host spend: this process's memory and CPU, the engine's CPU, wall time.

An attack states a :class:`HostBudget`; the runner measures the host with a :class:`HostMeter` from the
attack's cell to the end of its verification, and an attack over budget is not contained.  The engine
is dockerd, containerd and the containerd shims (their CPU is outside any container's quota).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ENGINE_NAMES = ("dockerd", "containerd")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class HostBudget:
    rss_mb: float | None = None        # growth of this process's resident memory (peak over the attack)
    cpu_s: float | None = None         # CPU-seconds of this process
    engine_cpu_s: float | None = None  # CPU-seconds of dockerd + containerd + shims
    seconds: float | None = None       # wall time of the attack and its verification

    def describe(self) -> str:
        parts = [f"RSS +{self.rss_mb:g} MB" if self.rss_mb is not None else "",
                 f"{self.cpu_s:g} CPU-s" if self.cpu_s is not None else "",
                 f"engine {self.engine_cpu_s:g} CPU-s" if self.engine_cpu_s is not None else "",
                 f"{self.seconds:g} s" if self.seconds is not None else ""]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class HostUse:
    rss_mb: float
    cpu_s: float
    engine_cpu_s: float | None
    seconds: float

    def describe(self) -> str:
        engine = f"engine {self.engine_cpu_s:.1f} CPU-s, " if self.engine_cpu_s is not None else ""
        return f"host RSS +{self.rss_mb:.0f} MB, {self.cpu_s:.1f} CPU-s, {engine}{self.seconds:.1f} s"

    def over(self, budget: HostBudget) -> list[str]:
        out = []
        if budget.rss_mb is not None and self.rss_mb > budget.rss_mb:
            out.append(f"RSS +{self.rss_mb:.0f} MB > {budget.rss_mb:g} MB")
        if budget.cpu_s is not None and self.cpu_s > budget.cpu_s:
            out.append(f"{self.cpu_s:.1f} CPU-s > {budget.cpu_s:g}")
        if budget.engine_cpu_s is not None and self.engine_cpu_s is not None \
                and self.engine_cpu_s > budget.engine_cpu_s:
            out.append(f"engine {self.engine_cpu_s:.1f} CPU-s > {budget.engine_cpu_s:g}")
        if budget.seconds is not None and self.seconds > budget.seconds:
            out.append(f"{self.seconds:.1f} s > {budget.seconds:g} s")
        return out


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_of(pid: str) -> tuple[str, float] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    name = raw[raw.index(b"(") + 1: raw.rindex(b")")].decode(errors="replace")
    fields = raw.rsplit(b")", 1)[1].split()
    return name, (int(fields[11]) + int(fields[12])) / _TICK


def engine_cpu() -> dict[str, float] | None:
    """CPU-seconds so far of each engine process (pid -> seconds); None when none is visible here."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        got = _cpu_of(pid)
        if got and (got[0] in ENGINE_NAMES or got[0].startswith("containerd-shim")):
            out[pid] = got[1]
    return out or None


class HostMeter:
    """Peak RSS growth (sampled every 20 ms), CPU of this process and of the engine, wall time."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "HostMeter":
        self._rss0 = self._peak = rss_mb()
        self._cpu0 = time.process_time()
        self._engine0 = engine_cpu()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, name="rlm-host-meter", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._peak = max(self._peak, rss_mb())

    def stop(self) -> HostUse:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._peak = max(self._peak, rss_mb())
        engine = None
        now = engine_cpu()
        if self._engine0 is not None and now is not None:
            engine = sum(v - self._engine0.get(pid, 0.0) for pid, v in now.items())
        return HostUse(self._peak - self._rss0, time.process_time() - self._cpu0, engine,
                       time.perf_counter() - self._t0)
