"""The embedded offline model: llama.cpp's ``llama-server`` as a background process.

``start_server`` runs the portable ``llama-server`` (``rlm.llm.local.runtime``) under a small
keeper (``rlm.llm.local.keeper``, which records how the server ended) on a free loopback port
with the model's alias, records it in ``<cache>/server.json`` (pids, port, alias, model file,
log), waits until ``/v1/models`` lists the alias, and reads which CPU backend ggml chose from the
server's memory map.
A server recorded there that is alive and answers is reused, by this process and by later
ones; ``stop_server`` ends it (SIGTERM, then SIGKILL after a grace period).  ``prove`` sends one
real completion; ``death`` tells how a server that is gone ended (signal or exit status).

``rlm.llm.local.fallback`` decides when the embedded server stands in; ``rlm.llm.local.guard``
watches it during a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm.errors import EmbeddedServerDied, LLMError, ModelUnreachable, UsageError
from rlm.llm.local.keeper import read_status
from rlm.llm.local.runtime import RuntimeInfo, installed_runtime
from rlm.llm.local.slots import DEFAULT_PROFILE, SlotProfile
from rlm.llm.local.weights import DEFAULT_SIZE, MODELS, ModelSpec, cache_dir, installed_path

__all__ = [
    "ServerInfo",
    "death",
    "prove",
    "probe_url",
    "alive",
    "died_error",
    "running_server",
    "server_command",
    "start_server",
    "stop_server",
]

STATE_NAME = "server.json"
LOCK_NAME = "server.lock"
EXIT_NAME = "server-exit.json"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0
PROBE_TIMEOUT_S = 0.5
PROVE_TIMEOUT_S = 300.0
KEEPER_MODULE = "rlm.llm.local.keeper"
# Tokens one reply may generate.  llama-server's default is no limit: a small model that falls
# into repeating itself then generates until the window is full (an hour on 2 cores), long
# after rlm gave up on the request.  A root turn or sub-call reply is a few hundred tokens.
MAX_REPLY_TOKENS = 2048
INSTALL_HINT = ("start Ollama (ollama serve) or pass --base-url; or, for the offline model: "
                "rlm model install (builds llama.cpp's server, fetches the weights)")
BACKEND_LINE = re.compile(r"loaded (?P<kind>\w+) backend from (?P<path>\S+)")
_STARTED: list[subprocess.Popen] = []  # keeps Popen objects alive: no "still running" warnings


@dataclass(frozen=True)
class ServerInfo:
    pid: int                 # the keeper (lives exactly as long as the server)
    port: int
    alias: str
    size: str
    model_path: str
    log: str
    started_at: float
    server_pid: int = 0      # llama-server itself
    exit_file: str = ""      # the keeper's record of how the server ended
    backend: str = ""        # the CPU backend library ggml chose, e.g. libggml-cpu-icelake.so

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------ small helpers

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _get_json(url: str, timeout: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback / configured URL
        return json.loads(resp.read().decode("utf-8") or "null")


def probe_url(base_url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether an HTTP server answers at ``base_url`` (any status counts; refused/timeout does not)."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=timeout):  # noqa: S310
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def _models_offered(port: int, timeout: float = 2.0) -> list[str] | None:
    try:
        data = _get_json(f"http://{HOST}:{port}/v1/models", timeout)
    except (OSError, ValueError):
        return None
    return [str(m.get("id")) for m in (data or {}).get("data", []) if isinstance(m, dict)]


def _alive(pid: int) -> bool:
    try:  # our own child that exited is a zombie until reaped: reap it first
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    except OSError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_server(pid: int) -> bool:
    """The pid runs rlm's keeper of a llama-server (guards against a recycled pid); True where /proc is absent."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _alive(pid)
    except OSError:
        return False
    return KEEPER_MODULE.encode() in cmdline


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` (Linux), for ``rlm model status``."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _state_path(cache: Path | None) -> Path:
    return (cache or cache_dir()) / STATE_NAME


def read_state(cache: Path | None = None) -> ServerInfo | None:
    try:
        data = json.loads(_state_path(cache).read_text(encoding="utf-8"))
        return ServerInfo(**{f.name: data[f.name] for f in dataclasses.fields(ServerInfo)})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(info: ServerInfo, cache: Path | None) -> None:
    path = _state_path(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info.to_dict(), indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _clear_state(cache: Path | None, pid: int | None = None) -> None:
    current = read_state(cache)
    if current is None or pid is None or current.pid == pid:
        _state_path(cache).unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(cache: Path | None):
    """One process at a time starts or stops the server (two `rlm` runs at once share one)."""
    path = (cache or cache_dir()) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ the server

def server_command(runtime: RuntimeInfo, spec: ModelSpec, model_file: Path, port: int, *, exit_file: Path,
                   n_ctx: int | None = None, threads: int | None = None, profile: SlotProfile = DEFAULT_PROFILE,
                   python: str | None = None) -> list[str]:
    """The keeper's command line, with llama-server's after ``--``."""
    threads = threads or max(1, os.cpu_count() or 1)
    return [python or sys.executable, "-m", KEEPER_MODULE, "--status", str(exit_file), "--",
            str(runtime.server), "--model", str(model_file), "--alias", spec.alias,
            "--host", HOST, "--port", str(port),
            "--ctx-size", str(n_ctx or spec.n_ctx), "--n-predict", str(MAX_REPLY_TOKENS), *profile.flags(),
            "--threads", str(threads), "--threads-batch", str(threads),
            "--flash-attn", "on", "--no-webui", "--jinja"]


def running_server(cache: Path | None = None) -> ServerInfo | None:
    """The recorded server when its process is alive, is rlm's llama-server and answers (or is
    busy with a request); else None.  A record whose process is gone is removed.
    """
    info = read_state(cache)
    if info is None:
        return None
    if not _alive(info.pid) or not _is_our_server(info.pid):
        _clear_state(cache, info.pid)
        return None
    return info if _answers(info) else None


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _answers(info: ServerInfo, timeout: float = 2.0) -> bool:
    """It lists the alias; or it is busy and its port is open (it opens it once the model is loaded)."""
    offered = _models_offered(info.port, timeout=timeout)
    if offered is not None:
        return info.alias in offered
    return _port_open(info.port)


def _backend_mapped(pid: int) -> str:
    """The CPU backend library the running server has loaded (ggml's run-time choice), from its maps."""
    if pid <= 0:
        return ""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    found = sorted(set(re.findall(r"libggml-cpu-[A-Za-z0-9_.]+?\.so", maps)))
    return found[0] if len(found) == 1 else ", ".join(found)


def _backend_from_log(path: Path, start: int) -> str:
    """The CPU backend library named in the server's log after byte ``start`` (ggml's choice)."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    found = [m.group("path") for m in BACKEND_LINE.finditer(text) if m.group("kind").lower() == "cpu"]
    return Path(found[-1]).name if found else ""


def death(info: ServerInfo) -> str:
    """How a server that is gone ended, from the keeper's record: "was killed by signal 11 (SIGSEGV)",
    "exited with status 1"; "is still running" when it is not gone."""
    if _alive(info.pid):
        return "is still running"
    status = read_status(Path(info.exit_file)) if info.exit_file else None
    if not status or "ended_at" not in status:
        return "ended (how is unknown: its keeper left no record)"
    sig = status.get("signal")
    if sig:
        try:
            name = signal.Signals(int(sig)).name
        except ValueError:
            name = "?"
        return f"was killed by signal {sig} ({name})"
    return f"exited with status {status.get('exit_code')}"


def died_error(info: ServerInfo, when: str) -> EmbeddedServerDied:
    """The error for a server rlm started that is gone: how it ended, its log's last lines, the log."""
    return EmbeddedServerDied(
        f"the embedded model server (llama-server, pid {info.server_pid or info.pid}) {death(info)} {when}; "
        f"the last lines of its log:\n{_log_tail(Path(info.log))}",
        hint=f"the whole log: {info.log}; rlm model status shows its build and CPU backend")


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (a crashed server stays one until its keeper reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return _alive(pid)
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in ("Z", "X")


def alive(info: ServerInfo, *, settle_s: float = 5.0) -> bool:
    """Whether the server runs.  A server that is gone (or a zombie) gives its keeper up to
    ``settle_s`` to record how it ended, so ``death`` can tell."""
    if not _alive(info.pid):
        return False
    gone = (not _running(info.server_pid)) if info.server_pid > 0 else (not _port_open(info.port))
    if not gone:
        return True
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        if not _alive(info.pid):
            return False
        time.sleep(0.05)
    return _alive(info.pid)


def prove(info: ServerInfo, timeout_s: float = PROVE_TIMEOUT_S) -> str:
    """Send one real completion; return its text.  Raises ``EmbeddedServerDied`` when the server
    dies meanwhile, ``LLMError`` when it answers with an error or nothing."""
    body = json.dumps({"model": info.alias, "max_tokens": 8, "temperature": 0,
                       "messages": [{"role": "user", "content": "Reply with the single word: ready"}]}).encode()
    request = urllib.request.Request(f"{info.base_url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - loopback
            data = json.loads(resp.read().decode("utf-8"))
    except (OSError, ValueError, http.client.HTTPException) as exc:
        if not alive(info):
            raise died_error(info, "on its first completion") from exc
        raise LLMError(f"the embedded model server did not answer a test completion: {exc}",
                       hint=f"see its log: {info.log}") from exc
    try:
        text = str(data["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMError(f"the embedded model server answered a test completion without text: {str(data)[:200]}",
                       hint=f"see its log: {info.log}") from exc
    if not text.strip():
        raise LLMError("the embedded model server answered a test completion with an empty text",
                       hint=f"see its log: {info.log}")
    return text


def _log_tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _terminate(pid: int, grace_s: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)  # the server leads its own session/process group
        except ProcessLookupError:
            return
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.1)


def _require_ready_to_start(spec: ModelSpec, cache: Path | None) -> tuple[RuntimeInfo, Path]:
    runtime = installed_runtime(cache)
    path = installed_path(spec, cache)
    if runtime is None:
        raise ModelUnreachable("the embedded model's runtime (llama.cpp's llama-server) is not built yet",
                               hint="rlm model install (builds it from pinned source: about 10 min on 2 cores)")
    if path is None:
        raise ModelUnreachable(f"the embedded {spec.size} model is not installed",
                               hint=f"rlm model install --size {spec.size}")
    return runtime, path


def start_server(spec: ModelSpec | None = None, *, cache: Path | None = None, port: int | None = None,
                 n_ctx: int | None = None, ready_timeout_s: float = READY_TIMEOUT_S,
                 on_wait=None, profile: SlotProfile = DEFAULT_PROFILE) -> tuple[ServerInfo, bool]:
    """Start the server for ``spec`` (or reuse the running one); return (info, reused).

    Raises ``ModelUnreachable`` when llama-server or the weights are missing, ``UsageError`` when
    another embedded model is running, ``LLMError`` when the server exits or is not ready in time.
    """
    spec = spec or MODELS[DEFAULT_SIZE]
    with _locked(cache):
        info = read_state(cache)
        if info is not None and _alive(info.pid) and _is_our_server(info.pid):
            if info.alias != spec.alias:
                raise UsageError(f"the embedded server already runs {info.alias} (pid {info.pid})",
                                 hint="stop it first: rlm model stop")
            if port is not None and port != info.port:
                raise UsageError(f"the embedded server already runs on port {info.port} (pid {info.pid})",
                                 hint="stop it first (rlm model stop) or omit --port")
            if not _answers(info):
                _wait_ready(info, None, ready_timeout_s, on_wait)
            return info, True
        _clear_state(cache)
        runtime, model_file = _require_ready_to_start(spec, cache)
        root = cache or cache_dir()
        log_path = root / f"server-{spec.alias}.log"
        exit_file = root / EXIT_NAME
        port = port or free_port()
        cmd = server_command(runtime, spec, model_file, port, exit_file=exit_file, n_ctx=n_ctx, profile=profile)
        log_start = log_path.stat().st_size if log_path.exists() else 0
        env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(
            p for p in (str(runtime.path), os.environ.get("LD_LIBRARY_PATH", "")) if p)}
        with log_path.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, env=env)
        _STARTED.append(proc)
        info = ServerInfo(pid=proc.pid, port=port, alias=spec.alias, size=spec.size, model_path=str(model_file),
                          log=str(log_path), started_at=time.time(), exit_file=str(exit_file))
        _write_state(info, cache)
        try:
            _wait_ready(info, proc, ready_timeout_s, on_wait)
        except BaseException:
            _terminate(proc.pid, 2.0)
            _clear_state(cache, proc.pid)
            raise
        status = read_status(exit_file) or {}
        server_pid = int(status.get("pid") or 0)
        info = dataclasses.replace(info, server_pid=server_pid,
                                   backend=_backend_mapped(server_pid) or _backend_from_log(log_path, log_start))
        _write_state(info, cache)
        return info, False


def _wait_ready(info: ServerInfo, proc: subprocess.Popen | None, timeout_s: float, on_wait) -> None:
    """Poll ``/v1/models`` until it lists the alias (llama-server answers only once the model is
    loaded); fail early when the process exits."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        offered = _models_offered(info.port, timeout=2.0)
        if offered is not None and info.alias in offered:
            return
        exited = proc.poll() if proc is not None else (None if _alive(info.pid) else "gone")
        if exited is not None:
            raise EmbeddedServerDied(f"the embedded model server {death(info)} while starting; "
                                     f"the last lines of its log:\n{_log_tail(Path(info.log))}",
                                     hint=f"the whole log: {info.log}")
        if time.monotonic() > deadline:
            raise LLMError(f"the embedded model server did not answer within {timeout_s:.0f} s",
                           hint=f"see its log: {info.log}")
        if on_wait:
            on_wait()
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def stop_server(cache: Path | None = None, grace_s: float = STOP_GRACE_S) -> ServerInfo | None:
    """Stop the recorded server; return what was stopped (None: nothing was running)."""
    with _locked(cache):
        info = read_state(cache)
        if info is None:
            return None
        stopped = info if _alive(info.pid) and _is_our_server(info.pid) else None
        if stopped:
            _terminate(info.pid, grace_s)
        _clear_state(cache, info.pid)
        return stopped


def describe_sizes(cache: Path | None = None) -> list[dict[str, Any]]:
    """One row per known model: size, alias, installed path (or None), for ``rlm model status``."""
    rows = []
    for size, spec in MODELS.items():
        path = installed_path(spec, cache)
        rows.append({"size": size, "alias": spec.alias, "installed": str(path) if path else None,
                     "description": spec.description})
    return rows

