"""Which container runtime a session uses, and what that runtime needs in the container spec.

``SandboxSettings.runtime``:

- ``None`` (the default), ``""`` or ``"auto"``: gVisor (``runsc``) when the engine has it registered, else
  runc.  gVisor puts a user-space kernel between model code and the host kernel; see docs/security.md.
- ``"runc"``: runc + rlm's seccomp profile, even where runsc is registered (``RLM_RUNTIME=runc``).
- any other name: that runtime, as the engine knows it (``"runsc"``, or a name of your own).

What each runtime needs (``limits``):

- runc: the pids cgroup bounds processes and threads; rlm's seccomp profile filters syscalls.
- gVisor: the guest's processes are not host processes, so the pids cgroup does not bound them (and the
  sentry's own host threads count against it: a small limit kills the whole sandbox).  gVisor's kernel
  enforces ``RLIMIT_NPROC`` per uid inside the sandbox, so processes and threads are bounded by an nproc
  rlimit; the host pids cgroup becomes a looser backstop on the sentry's threads.  That rlimit is also kept
  under what the memory limit can hold: under gVisor (ptrace platform, 20221219) each forked copy of the
  kernel costs about 26 MB of the container's memory (measured: 20 sleeping children, +530 MB), so with
  ``nproc = pids_limit = 128`` a fork bomb filled the 2 GB memory limit at ~75 processes and the host cgroup
  ended the whole sandbox: no error in the cell, only a dead container.  With ``memory_mb //
  GVISOR_MB_PER_TASK`` the bomb meets EAGAIN from ``fork`` first, the same named error as under runc.
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass

AUTO = "auto"
RUNC = "runc"
RUNSC = "runsc"

# Host threads of a gVisor sandbox (ptrace platform): about 4 per busy guest task, measured with 127
# spinning processes (500 host threads after 30 s, still growing slowly).  The backstop must stay above that.
GVISOR_HOST_PIDS_PER_TASK = 16
GVISOR_HOST_PIDS_MIN = 1024
# Container memory per guest task under gVisor, with a margin over the ~26 MB measured per forked kernel copy;
# the nproc rlimit is kept at or below memory_mb / this (and never below GVISOR_NPROC_MIN).
GVISOR_MB_PER_TASK = 40
GVISOR_NPROC_MIN = 24

_lock = threading.Lock()
_registered: dict[str, frozenset[str]] = {}
_pinned: list[str] = []


def is_gvisor(runtime: str | None) -> bool:
    return bool(runtime) and ("runsc" in str(runtime) or "gvisor" in str(runtime))


def pin_auto(runtime: str | None) -> None:
    """Make the default (``auto``) resolve to ``runtime`` in this process (tests pin it); None unpins."""
    with _lock:
        _pinned[:] = [runtime] if runtime else []


def forget() -> None:
    """Drop the cached list of registered runtimes (after `rlm sandbox gvisor install`)."""
    with _lock:
        _registered.clear()


def registered_runtimes(engine=None) -> frozenset[str]:
    """The runtimes the engine lists in ``docker info`` (cached per DOCKER_HOST)."""
    key = os.environ.get("DOCKER_HOST", "")
    with _lock:
        if key in _registered:
            return _registered[key]
    from rlm.errors import SandboxError

    try:
        if engine is not None:
            names = frozenset((engine.info().get("Runtimes") or {}).keys())
        else:
            from rlm.sandbox.engine import Engine

            own = Engine(timeout=30)
            try:
                names = frozenset((own.info().get("Runtimes") or {}).keys())
            finally:
                own.close()
    except SandboxError:
        return frozenset()   # no engine answers: starting the container will say so, with its hint
    with _lock:
        _registered[key] = names
    return names


def resolve(requested: str | None, engine=None) -> str:
    """The runtime name to give the engine: None, "" and "auto" pick runsc when registered, else runc."""
    if requested not in (None, "", AUTO):
        return str(requested)
    with _lock:
        pinned = list(_pinned)
    if pinned:
        return pinned[0]
    return RUNSC if RUNSC in registered_runtimes(engine) else RUNC


def available_runtimes(engine=None) -> list[str]:
    """runc, plus runsc when the engine has it registered (what the test suites and benchmarks run under)."""
    return [RUNC] + ([RUNSC] if RUNSC in registered_runtimes(engine) else [])


def display_name(resolved: str | None) -> str:
    return resolved or RUNC


@dataclass(frozen=True)
class Limits:
    """The process limits of one container: the host pids cgroup and an optional in-sandbox nproc rlimit."""

    pids_limit: int
    nproc: int | None


def limits(runtime: str | None, pids_limit: int, memory_mb: int | None = None) -> Limits:
    """The pids cgroup limit and (gVisor) the nproc rlimit for ``pids_limit`` and the memory limit."""
    if is_gvisor(runtime):
        nproc = pids_limit
        if memory_mb is not None:
            nproc = min(pids_limit, max(GVISOR_NPROC_MIN, memory_mb // GVISOR_MB_PER_TASK))
        return Limits(max(GVISOR_HOST_PIDS_MIN, pids_limit * GVISOR_HOST_PIDS_PER_TASK), nproc)
    return Limits(pids_limit, None)


@dataclass(frozen=True)
class Isolation:
    runtime: str          # runc | runsc | another registered name
    isolation: str        # what stands between model code and the host kernel, in words
    version: str          # the runtime's version


def runtime_platform(args: tuple[str, ...] | list[str]) -> str | None:
    """The gVisor platform named by a runtime's args (runsc's own default is ptrace in this version)."""
    for i, arg in enumerate(args):
        if arg.startswith("--platform="):
            return arg.split("=", 1)[1]
        if arg == "--platform" and i + 1 < len(args):
            return args[i + 1]
    return "ptrace" if args else None


def runsc_version(path: str) -> str | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = (out.stdout or out.stderr).strip().splitlines()
    return line[0].strip() if line else None


def describe(requested: str | None, seccomp: str, engine) -> Isolation:
    """The isolation a session with these settings gets on ``engine``, and the runtime's version."""
    resolved = resolve(requested, engine)
    info = engine.info()
    entry = (info.get("Runtimes") or {}).get(resolved) or {}
    if is_gvisor(resolved):
        args = list(entry.get("runtimeArgs") or [])
        version = runsc_version(entry.get("path") or RUNSC) or "version unknown (runsc not on this host)"
        return Isolation(resolved, f"gVisor user-space kernel, platform {runtime_platform(args) or '?'}"
                         f" ({' '.join(args) or 'no runtime args'})", version)
    name = resolved
    commit = (info.get("RuncCommit") or {}).get("ID") or "?"
    profile = {"rlm": "rlm's seccomp profile", "docker-default": "Docker's default seccomp profile"}.get(
        seccomp, f"seccomp profile {seccomp}")
    return Isolation(name, f"host kernel, namespaces + cgroups + {profile}", f"runc commit {commit}")
