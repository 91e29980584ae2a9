"""gVisor (runsc) as a container runtime of the local Docker engine: install, register, status.

``install()`` is what ``rlm sandbox gvisor install`` runs:

1. installs ``runsc`` from the OS packages (``apt-get install runsc``) when it is missing and we are root;
2. merges the runtime into the engine's ``daemon.json`` (every other key kept; a backup; an atomic write);
3. reloads dockerd with SIGHUP (running containers keep running) and waits until ``docker info`` lists it.

A second run finds everything in place and does nothing.  Where it cannot act (not root, no apt, no
local dockerd, a daemon.json that is not JSON, an engine managed elsewhere) it raises ``SandboxError``
whose hint says what to do by hand.

The runtime's arguments are the ones a sandbox session needs (see docs/security.md):
``--network=none`` (sessions have no network; without it runsc refuses ``network_mode=none`` containers
in the root network namespace), ``--host-uds=all`` (the kernel's ipc sockets and the llm_query bridge are
Unix sockets on bind mounts; gVisor's gofer must let them be connected and created) and
``--platform=ptrace`` (works in any VM; ``kvm`` needs /dev/kvm).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rlm.errors import SandboxError
from rlm.sandbox.runtime import forget as forget_runtimes
from rlm.sandbox.runtime import runsc_version, runtime_platform

RUNTIME = "runsc"
RUNTIME_ARGS = ("--host-uds=all", "--platform=ptrace", "--network=none")
DAEMON_JSON = Path("/etc/docker/daemon.json")
PACKAGE = "runsc"
MANUAL_HINT = ('register it by hand: add {"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": '
               '["--host-uds=all", "--platform=ptrace", "--network=none"]}}} to the engine\'s daemon.json '
               "and reload (or restart) the engine")


@dataclass
class InstallReport:
    actions: list[str] = field(default_factory=list)   # what was done, in order ([] = nothing to do)
    runsc_path: str = ""
    version: str = ""
    backup: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.actions)


@dataclass(frozen=True)
class Status:
    runsc_path: str | None        # the binary, if installed
    version: str | None           # first line of `runsc --version`
    configured: bool              # daemon.json holds our entry
    registered: bool              # the engine lists the runtime (docker info)
    runtime_args: tuple[str, ...]  # the args the engine knows for it ([] when not registered)
    default_runtime: str | None   # the engine's default runtime

    @property
    def platform(self) -> str | None:
        return runtime_platform(self.runtime_args)


# --------------------------------------------------------------------------- daemon.json
def runtime_entry(runsc_path: str) -> dict:
    return {"path": runsc_path, "runtimeArgs": list(RUNTIME_ARGS)}


def parse_daemon_json(text: str | None, where: str = str(DAEMON_JSON)) -> dict:
    """The engine's configuration; ``None`` or blank text is an empty configuration."""
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SandboxError(f"{where} is not valid JSON ({exc}); the engine would not start with it either",
                           hint=f"fix {where} (or move it away), then run `rlm sandbox gvisor install` again") from exc
    if not isinstance(data, dict):
        raise SandboxError(f"{where} is JSON but not an object", hint=f"fix {where}, then run the command again")
    if "runtimes" in data and not isinstance(data["runtimes"], dict):
        raise SandboxError(f"{where}: \"runtimes\" is not an object", hint=f"fix {where}, then run the command again")
    return data


def merge_runtime(config: dict, runsc_path: str) -> tuple[dict, bool]:
    """``config`` with our runsc entry (every other key kept as it was); and whether anything changed."""
    wanted = runtime_entry(runsc_path)
    runtimes = dict(config.get("runtimes") or {})
    if runtimes.get(RUNTIME) == wanted:
        return config, False
    runtimes[RUNTIME] = wanted
    merged = dict(config)
    merged["runtimes"] = runtimes
    return merged, True


def write_atomic(path: Path, data: dict) -> str | None:
    """Write ``data`` as JSON to ``path`` atomically (same folder, fsync, rename); back up the old file.

    Returns the backup's path (None when there was no file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    mode = 0o644
    if path.exists():
        mode = path.stat().st_mode & 0o777
        backup = f"{path}.rlm-backup-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.copy2(path, backup)
    tmp = path.with_name(f".{path.name}.rlm-{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(data, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return backup


# --------------------------------------------------------------------------- the host
def find_runsc() -> str | None:
    found = shutil.which(RUNTIME)
    if found:
        return found
    for candidate in ("/usr/bin/runsc", "/usr/local/bin/runsc", "/usr/sbin/runsc"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def dockerd_processes() -> list[tuple[int, list[str]]]:
    """(pid, argv) of every dockerd visible in /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            if comm != "dockerd":
                continue
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        found.append((int(entry), [a.decode("utf-8", "replace") for a in argv if a]))
    return found


def config_file_of(argv: list[str]) -> Path:
    """The daemon.json a dockerd reads (``--config-file``), default /etc/docker/daemon.json."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config-file="):
            return Path(arg.split("=", 1)[1])
        if arg == "--config-file" and i + 1 < len(argv):
            return Path(argv[i + 1])
    return DAEMON_JSON


def _local_dockerd() -> tuple[int, Path]:
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        raise SandboxError(f"the engine is remote (DOCKER_HOST={host}): this command only configures a local dockerd",
                           hint="on the engine's machine, run `rlm sandbox gvisor install` as root, or " + MANUAL_HINT)
    procs = dockerd_processes()
    if not procs:
        raise SandboxError("no dockerd process runs on this machine (the engine may be Docker Desktop, rootless, "
                           "or in another namespace)", hint=MANUAL_HINT)
    if len(procs) > 1:
        raise SandboxError(f"{len(procs)} dockerd processes run here; which one to configure is unclear",
                           hint=MANUAL_HINT)
    pid, argv = procs[0]
    exe = argv[0] if argv else ""
    if "/snap/" in exe or "--rootless" in argv:
        raise SandboxError(f"this dockerd ({exe}) is managed elsewhere (snap or rootless)", hint=MANUAL_HINT)
    return pid, config_file_of(argv)


def _apt_install(say: Callable[[str], None]) -> None:
    if os.geteuid() != 0:
        raise SandboxError("runsc is not installed and installing it needs root",
                           hint="run `sudo rlm sandbox gvisor install` (or: sudo apt-get install runsc)")
    if shutil.which("apt-get") is None:
        raise SandboxError("runsc is not installed and this system has no apt-get",
                           hint="install runsc from your OS packages or https://gvisor.dev/docs/user_guide/install/,"
                                " then run `rlm sandbox gvisor install` again")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", PACKAGE]
    say("installing runsc: " + " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        say("apt-get install failed; updating the package lists and trying again")
        subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SandboxError("apt-get could not install runsc: " + " | ".join(tail),
                           hint="check the package sources (apt-cache policy runsc), then run the command again")


# --------------------------------------------------------------------------- engine
def _engine_runtimes(engine) -> tuple[dict, str | None]:
    info = engine.info()
    return dict(info.get("Runtimes") or {}), info.get("DefaultRuntime")


def _registered(runtimes: dict, runsc_path: str | None) -> bool:
    entry = runtimes.get(RUNTIME)
    if not isinstance(entry, dict):
        return False
    args = tuple(entry.get("runtimeArgs") or entry.get("args") or ())
    return args == RUNTIME_ARGS and (runsc_path is None or entry.get("path") in (runsc_path, RUNTIME))


def wait_registered(engine, runsc_path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        runtimes, _ = _engine_runtimes(engine)
        if _registered(runtimes, runsc_path):
            forget_runtimes()   # this process's sessions now see runsc (`auto` picks it)
            return
        if time.monotonic() > deadline:
            raise SandboxError(f"dockerd was reloaded but does not list the {RUNTIME} runtime after {timeout:.0f} s "
                               f"(it knows: {', '.join(sorted(runtimes)) or 'none'})",
                               hint="see dockerd's log for the reload error; " + MANUAL_HINT)
        time.sleep(0.2)


def status(engine=None) -> Status:
    """What is in place now (binary, daemon.json entry, engine registration)."""
    path = find_runsc()
    configured = False
    try:
        _, config_path = _local_dockerd()
        text = config_path.read_text() if config_path.exists() else None
        entry = parse_daemon_json(text, str(config_path)).get("runtimes", {}).get(RUNTIME)
        configured = entry == runtime_entry(path) if path else entry is not None
    except (SandboxError, OSError):
        pass
    runtimes: dict = {}
    default = None
    if engine is not None:
        runtimes, default = _engine_runtimes(engine)
    entry = runtimes.get(RUNTIME) if isinstance(runtimes.get(RUNTIME), dict) else None
    return Status(runsc_path=path, version=runsc_version(path) if path else None, configured=configured,
                  registered=entry is not None,
                  runtime_args=tuple((entry or {}).get("runtimeArgs") or ()), default_runtime=default)


def install(engine_factory: Callable[[], object] | None = None, say: Callable[[str], None] = lambda _m: None,
            reload_timeout: float = 30.0) -> InstallReport:
    """Install runsc and register it with the local engine; idempotent (see the module docstring)."""
    from rlm.sandbox.engine import Engine

    engine = (engine_factory or Engine)()
    report = InstallReport()
    try:
        path = find_runsc()
        runtimes, _ = _engine_runtimes(engine)
        if path and _registered(runtimes, path):
            report.runsc_path, report.version = path, runsc_version(path) or "?"
            return report
        pid, config_path = _local_dockerd()
        if path is None:
            _apt_install(say)
            path = find_runsc()
            if path is None:
                raise SandboxError("the runsc package was installed but no runsc binary is on PATH",
                                   hint="check `dpkg -L runsc`")
            report.actions.append(f"installed runsc ({path})")
        report.runsc_path, report.version = path, runsc_version(path) or "?"
        try:
            text = config_path.read_text() if config_path.exists() else None
        except OSError as exc:
            raise SandboxError(f"cannot read {config_path}: {exc}", hint="run the command as root") from exc
        merged, changed = merge_runtime(parse_daemon_json(text, str(config_path)), path)
        if changed:
            if not os.access(config_path.parent if not config_path.exists() else config_path, os.W_OK):
                raise SandboxError(f"cannot write {config_path}", hint="run `sudo rlm sandbox gvisor install`")
            report.backup = write_atomic(config_path, merged)
            report.actions.append(f"registered {RUNTIME} in {config_path}"
                                  + (f" (backup {report.backup})" if report.backup else ""))
            say(report.actions[-1])
        try:
            os.kill(pid, signal.SIGHUP)
        except PermissionError as exc:
            raise SandboxError(f"cannot signal dockerd (pid {pid}) to reload",
                               hint="run `sudo rlm sandbox gvisor install`, or `sudo kill -HUP "
                                    f"{pid}`") from exc
        except ProcessLookupError as exc:
            raise SandboxError(f"dockerd (pid {pid}) went away", hint="start the engine, then run the command again") from exc
        report.actions.append(f"reloaded dockerd (pid {pid}, SIGHUP; running containers kept)")
        say(report.actions[-1])
        wait_registered(engine, path, reload_timeout)
        return report
    finally:
        close = getattr(engine, "close", None)
        if close:
            close()
