"""The embedded offline model: llama.cpp's OpenAI-compatible server as a subprocess.

``start_server`` runs ``python -m llama_cpp.server`` (the optional ``local`` extra) on a
free loopback port with the model's alias, records it in ``<cache>/server.json`` (pid, port,
alias, model file, log) and waits until ``/v1/models`` answers.  A server recorded there
that is alive and answers is reused, by this process and by later ones; ``stop_server``
ends it (SIGTERM, then SIGKILL after a grace period).

``resolve_model_settings`` is the fallback ``runner.make_client`` uses: with no base URL
configured anywhere and nothing answering at the default Ollama URL, it starts (or reuses)
the embedded server and points the model settings at it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import os
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

from rlm.errors import LLMError, ModelUnreachable, UsageError
from rlm.llm.base import ModelSettings
from rlm.llm.local.weights import DEFAULT_SIZE, MODELS, ModelSpec, cache_dir, installed_path, spec_for

__all__ = [
    "ServerInfo",
    "llama_cpp_missing",
    "probe_url",
    "adapt_settings",
    "fallback_needed",
    "resolve_model_settings",
    "resolve_settings",
    "running_server",
    "server_command",
    "start_server",
    "stop_server",
]

STATE_NAME = "server.json"
LOCK_NAME = "server.lock"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0
PROBE_TIMEOUT_S = 0.5
# The only Python modules the server needs beyond llama_cpp (the [server] extra).
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
INSTALL_HINT = ("start Ollama (ollama serve) or pass --base-url; or, for the offline model: "
                "pip install '.[local]' and then rlm model install")
# Budgets that suit a small model on a CPU (applied by ``adapt_settings``): a sub-call prompt of
# ~24k characters is ~6k tokens, about a minute of prompt processing on 2 cores; cells that
# make sub-calls need more than the default 30 s.
EMBEDDED_MAX_SUB_CALL_CHARS = 24_000
EMBEDDED_CELL_TIMEOUT_S = 600.0
EMBEDDED_MAX_OUTPUT_CHARS = 4_000   # ~1k tokens per turn: 20 turns stay inside the 32k window
EMBEDDED_REQUEST_TIMEOUT_S = 900.0
_STARTED: list[subprocess.Popen] = []  # keeps Popen objects alive: no "still running" warnings


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int
    alias: str
    size: str
    model_path: str
    log: str
    started_at: float

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------ small helpers

def llama_cpp_missing() -> list[str]:
    """Modules of ``llama-cpp-python[server]`` that cannot be imported (empty: all there)."""
    return [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]


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
    """The pid runs llama_cpp.server (guards against a recycled pid); True where /proc is absent."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _alive(pid)
    except OSError:
        return False
    return b"llama_cpp.server" in cmdline


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

def server_command(spec: ModelSpec, model_file: Path, port: int, *, n_ctx: int | None = None,
                   threads: int | None = None, python: str | None = None) -> list[str]:
    threads = threads or max(1, os.cpu_count() or 1)
    return [python or sys.executable, "-m", "llama_cpp.server",
            "--model", str(model_file), "--model_alias", spec.alias,
            "--host", HOST, "--port", str(port),
            "--n_ctx", str(n_ctx or spec.n_ctx),
            "--n_threads", str(threads), "--n_threads_batch", str(threads),
            # the server's default keeps logits of every token (n_ctx x 152k vocab floats: GBs of
            # memory, and the vocabulary projection for each prompt token makes prefill slow)
            "--logits_all", "False",
            # flash attention with the f16 KV cache; an 8-bit KV cache (--type_k/--type_v 8) would halve
            # the KV memory but halves prompt speed on CPU (0.5B, 4k tokens: 63 vs 121 tokens/s)
            "--flash_attn", "True",
            # concurrent requests (llm_query_batched) queue; a new one must not cut a streamed one short
            "--interrupt_requests", "False"]


def running_server(cache: Path | None = None) -> ServerInfo | None:
    """The recorded server when its process is alive, is llama_cpp.server and answers (or is busy
    with a request); else None.  A record whose process is gone is removed.
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
    """It lists the alias; or it is busy: llama_cpp.server answers /v1/models only between requests
    (it takes the model's lock), but it opens its port only after the model is loaded."""
    offered = _models_offered(info.port, timeout=timeout)
    if offered is not None:
        return info.alias in offered
    return _port_open(info.port)


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


def _require_ready_to_start(spec: ModelSpec, cache: Path | None) -> Path:
    missing = llama_cpp_missing()
    path = installed_path(spec, cache)
    if missing:
        raise ModelUnreachable(
            "the embedded model needs llama-cpp-python[server], which is not installed "
            f"(missing: {', '.join(missing)})",
            hint="pip install '.[local]' (builds llama.cpp, about 7 min on 2 cores), then rlm model install")
    if path is None:
        raise ModelUnreachable(f"the embedded {spec.size} model is not installed",
                               hint=f"rlm model install --size {spec.size}")
    return path


def start_server(spec: ModelSpec | None = None, *, cache: Path | None = None, port: int | None = None,
                 n_ctx: int | None = None, ready_timeout_s: float = READY_TIMEOUT_S,
                 on_wait=None) -> tuple[ServerInfo, bool]:
    """Start the server for ``spec`` (or reuse the running one); return (info, reused).

    Raises ``ModelUnreachable`` when llama_cpp or the weights are missing, ``UsageError`` when
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
        model_file = _require_ready_to_start(spec, cache)
        root = cache or cache_dir()
        log_path = root / f"server-{spec.alias}.log"
        port = port or free_port()
        cmd = server_command(spec, model_file, port, n_ctx=n_ctx)
        with log_path.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        _STARTED.append(proc)
        info = ServerInfo(pid=proc.pid, port=port, alias=spec.alias, size=spec.size, model_path=str(model_file),
                          log=str(log_path), started_at=time.time())
        _write_state(info, cache)
        try:
            _wait_ready(info, proc, ready_timeout_s, on_wait)
        except BaseException:
            _terminate(proc.pid, 2.0)
            _clear_state(cache, proc.pid)
            raise
        return info, False


def _wait_ready(info: ServerInfo, proc: subprocess.Popen | None, timeout_s: float, on_wait) -> None:
    """Poll ``/v1/models`` until it lists the alias; fail early when the process exits."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        offered = _models_offered(info.port, timeout=2.0)
        if offered is not None and info.alias in offered:
            return
        exited = proc.poll() if proc is not None else (None if _alive(info.pid) else "gone")
        if exited is not None:
            raise LLMError(f"the embedded model server exited while starting (code {exited}):\n"
                           f"{_log_tail(Path(info.log))}", hint=f"full log: {info.log}")
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


# ------------------------------------------------------------------------------ the fallback

def _pick_spec(cache: Path | None) -> ModelSpec | None:
    """The model to start: the largest one installed (better answers), else None."""
    for size in reversed(list(MODELS)):
        if installed_path(MODELS[size], cache) is not None:
            return MODELS[size]
    return None


def _say(console, text: str) -> None:
    if console is None:
        print(text, file=sys.stderr)
    else:
        console.print(text, style="yellow", highlight=False, markup=False, soft_wrap=True)


def fallback_needed(model: ModelSettings, *, base_url_explicit: bool) -> bool:
    """Whether the embedded server stands in: no base URL configured and nothing answering at the default."""
    return not base_url_explicit and not probe_url(model.base_url)


def resolve_model_settings(settings, *, base_url_explicit: bool, console=None,
                           cache: Path | None = None) -> ModelSettings:
    """The model settings to use: the configured ones, or the embedded server's.

    ``settings`` is ``rlm.config.Settings``.  Only when no base URL was configured
    (``base_url_explicit`` False) and nothing answers at the default URL, the embedded server
    is started or reused; its settings use the server's alias for root and sub model and
    temperature 0.  A configured URL is returned untouched, answering or not.
    """
    model: ModelSettings = settings.model
    if not fallback_needed(model, base_url_explicit=base_url_explicit):
        return model
    info = running_server(cache)
    reused = info is not None
    if info is None:
        spec = _pick_spec(cache)
        if spec is None or llama_cpp_missing():
            what = "llama-cpp-python[server] is not installed" if llama_cpp_missing() else \
                "the embedded model is not installed"
            raise ModelUnreachable(f"no model server answers at {model.base_url}, and {what}", hint=INSTALL_HINT)
        _say(console, f"no model server at {model.base_url}: starting the embedded {spec.alias} "
                      "(llama.cpp, CPU) ...")
        info, reused = start_server(spec, cache=cache)
    _say(console, f"using the embedded model {info.alias} at {info.base_url}"
                  f"{' (already running)' if reused else ''}; stop it with: rlm model stop")
    return dataclasses.replace(model, base_url=info.base_url, root_model=info.alias, sub_model=info.alias,
                               temperature=0.0, timeout_s=max(model.timeout_s, EMBEDDED_REQUEST_TIMEOUT_S))


def adapt_settings(settings, model: ModelSettings):
    """``settings`` (``rlm.config.Settings``) with ``model`` and the budgets of a small CPU model."""
    run = dataclasses.replace(
        settings.run,
        max_sub_call_chars=min(settings.run.max_sub_call_chars, EMBEDDED_MAX_SUB_CALL_CHARS),
        max_output_chars=min(settings.run.max_output_chars, EMBEDDED_MAX_OUTPUT_CHARS))
    sandbox = dataclasses.replace(settings.sandbox, cell_timeout_s=max(settings.sandbox.cell_timeout_s,
                                                                       EMBEDDED_CELL_TIMEOUT_S))
    return dataclasses.replace(settings, model=model, run=run, sandbox=sandbox)


def resolve_settings(settings, *, base_url_explicit: bool, console=None, cache: Path | None = None):
    """Like ``resolve_model_settings`` but for the whole ``Settings``: unchanged when the configured
    server is used; with the embedded model, also smaller sub-call prompts and longer cell timeouts."""
    model = resolve_model_settings(settings, base_url_explicit=base_url_explicit, console=console, cache=cache)
    return settings if model is settings.model else adapt_settings(settings, model)


def describe_sizes(cache: Path | None = None) -> list[dict[str, Any]]:
    """One row per known model: size, alias, installed path (or None), for ``rlm model status``."""
    rows = []
    for size, spec in MODELS.items():
        path = installed_path(spec, cache)
        rows.append({"size": size, "alias": spec.alias, "installed": str(path) if path else None,
                     "description": spec.description})
    return rows


def spec_or_default(size: str | None) -> ModelSpec:
    return spec_for(size) if size else MODELS[DEFAULT_SIZE]
