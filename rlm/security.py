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
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from rlm.errors import RLMError
from rlm.parsing import sanitize_for_terminal
from rlm.sandbox.bridge import BridgeRefusal
from rlm.sandbox.execution import Execution
from rlm.sandbox.session import SandboxSession
from rlm.sandbox.settings import SandboxSettings

__all__ = ["ATTACKS", "Attack", "Canaries", "CheckContext", "CheckHandler", "CheckResult", "SessionPool",
           "default_session_factory", "run_attack", "run_checks", "select_attacks"]

CATEGORIES = ("network", "files", "privilege", "secrets", "resources", "bridge", "answer", "host")
MARK = "@@RLM-CHECK@@"
ALIVE_CODE = "print(1+1)"
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

Verify = Callable[[Execution, "CheckContext"], "tuple[bool, str]"]


# =========================================================================== data types
@dataclass(frozen=True)
class Attack:
    """One attack: ``code`` runs inside the sandbox; ``verify`` judges it on the host."""

    name: str
    category: str
    expected: str                       # what containment looks like, in a few words
    code: str                           # Python source run as one cell inside the sandbox
    verify: Verify                      # (execution, context) -> (passed, seen)
    fast: bool = True                   # part of `rlm sandbox check --security`
    settings: Mapping[str, Any] = field(default_factory=dict)  # SandboxSettings overrides
    timeout: float = 15.0               # the cell's timeout (seconds)
    fresh: bool = False                 # needs a session of its own (leaves the sandbox degraded)
    budget: int | None = None           # sub-call budget of the check handler during the attack
    cleanup: str | None = None          # cell run after verify (closes what the attack left open)
    prepare: Callable[["CheckContext"], None] | None = None  # host-side, before the cell


@dataclass
class CheckResult:
    name: str
    category: str
    expected: str
    seen: str
    passed: bool
    seconds: float
    alive: bool = True                  # the session answered print(1+1) afterwards


# =========================================================================== host canaries
class _CountingHTTP(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address):
        super().__init__(address, _CanaryHandler)
        self.accepted = 0

    def verify_request(self, request, client_address) -> bool:  # every accepted connection counts
        self.accepted += 1
        return True


class _CanaryHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b"rlm canary\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _CountingUnix:
    """A Unix socket listener (path or abstract name) counting accepted connections."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.accepted = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(address)
        if not address.startswith("\0"):
            os.chmod(address, 0o666)
        self.sock.listen(16)
        self._thread = threading.Thread(target=self._serve, name="rlm-canary-unix", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def host_addresses() -> list[str]:
    """The host's own IPv4 addresses other than loopback (from /proc/net/fib_trie)."""
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return []
    found = set()
    for prev, line in zip(lines, lines[1:]):
        if line.strip() == "/32 host LOCAL":
            addr = prev.strip().lstrip("|-+` ").strip()
            if addr and not addr.startswith("127."):
                found.add(addr)
    return sorted(found)


def _file_state(path: Path) -> tuple | None:
    try:
        st = path.stat()
        return (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                st.st_mode)
    except OSError:
        return None


def host_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def host_fd_count() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


ENV_CANARY_NAMES = ("RLM_SECURITY_CANARY", "RLM_API_KEY", "OPENAI_API_KEY")


class Canaries:
    """Host-side tripwires for one run of the checks.  ``start()``, then ``problems()``."""

    def __init__(self, *, set_env: bool = True) -> None:
        self.set_env = set_env
        self.token = secrets.token_hex(8)
        self.dir: Path | None = None          # holds the secret and the Unix socket canary
        self.context_dir: Path | None = None  # holds the context file (a different folder)
        self.secret_path: Path | None = None
        self.secret_text = "rlm-secret-" + secrets.token_hex(16)
        self.context_path: Path | None = None
        self.context_text = "rlm security check context\n" + "the code word is " + secrets.token_hex(4) + "\n"
        self.env_values = {name: f"{name.lower()}-canary-{secrets.token_hex(12)}" for name in ENV_CANARY_NAMES}
        self._old_env: dict[str, str | None] = {}
        self.http: _CountingHTTP | None = None
        self.http_any: _CountingHTTP | None = None
        self.unix: _CountingUnix | None = None
        self.abstract: _CountingUnix | None = None
        self.abstract_name = f"rlm-canary-{self.token}"
        self.host_addrs: list[str] = []
        self.sibling: tuple[str, int] | None = None   # set by the test-suite (a container on the same engine)
        self._own_probes = 0
        self._threads: list[threading.Thread] = []
        self._initial: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "Canaries":
        self.dir = Path(tempfile.mkdtemp(prefix="rlmsec-"))
        self.context_dir = Path(tempfile.mkdtemp(prefix="rlmctx-"))
        self.secret_path = self.dir / "secret.txt"
        self.secret_path.write_text(self.secret_text)
        os.chmod(self.secret_path, 0o644)  # readable by anyone on the host: only isolation protects it
        self.context_path = self.context_dir / "context.txt"
        self.context_path.write_text(self.context_text)
        self.unix = _CountingUnix(str(self.dir / "canary.sock"))
        self.abstract = _CountingUnix("\0" + self.abstract_name)
        self.http = self._serve_http("127.0.0.1")
        self.http_any = self._serve_http("0.0.0.0")
        self.host_addrs = host_addresses()
        if self.set_env:
            for name, value in self.env_values.items():
                self._old_env[name] = os.environ.get(name)
                os.environ[name] = value
        self._initial = {"secret": _file_state(self.secret_path), "context": _file_state(self.context_path),
                         "listing": sorted(os.listdir(self.dir))}
        return self

    def _serve_http(self, host: str) -> _CountingHTTP:
        server = _CountingHTTP((host, 0))
        thread = threading.Thread(target=server.serve_forever, name="rlm-canary-http", daemon=True)
        thread.start()
        self._threads.append(thread)
        return server

    def stop(self) -> None:
        for server in (self.http, self.http_any):
            if server is not None:
                server.shutdown()
                server.server_close()
        for listener in (self.unix, self.abstract):
            if listener is not None:
                listener.close()
        for name, old in self._old_env.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        self._old_env.clear()
        for folder in (self.dir, self.context_dir):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> "Canaries":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what the sandbox may know (it is told where to aim, never what to find) -----------
    def probe(self, session: SandboxSession) -> dict:
        s = session.settings
        return {
            "http_port": self.http.server_address[1],
            "any_port": self.http_any.server_address[1],
            "host_addrs": self.host_addrs,
            "unix_socket": str(self.dir / "canary.sock"),
            "abstract_name": self.abstract_name,
            "secret_path": str(self.secret_path),
            "secret_dir": str(self.dir),
            "context_path": f"/rlm/context/{self.context_path.name}",
            "sibling": list(self.sibling) if self.sibling else None,
            "uid": int(s.user.split(":")[0]), "gid": int(s.user.split(":")[-1]),
            "pids_limit": s.pids_limit, "nofile": s.nofile, "fsize_mb": s.fsize_mb, "tmpfs_mb": s.tmpfs_mb,
            "home_tmpfs_mb": s.home_tmpfs_mb, "memory_mb": s.memory_mb, "cpus": s.cpus,
            "bridge_max_frame": s.bridge_max_frame,
        }

    # -- checks ----------------------------------------------------------------------------
    def foreign_connections(self) -> dict[str, int]:
        counts = {"http 127.0.0.1": self.http.accepted, "http 0.0.0.0": self.http_any.accepted - self._own_probes,
                  "unix socket": self.unix.accepted, "abstract socket": self.abstract.accepted}
        return {k: v for k, v in counts.items() if v}

    def secret_intact(self) -> bool:
        return (_file_state(self.secret_path) == self._initial["secret"]
                and sorted(os.listdir(self.dir)) == self._initial["listing"])

    def context_intact(self) -> bool:
        return _file_state(self.context_path) == self._initial["context"]

    def host_probe(self) -> bool:
        """The host can still reach its own canary (counted apart from the sandbox's attempts)."""
        self._own_probes += 1
        try:
            with socket.create_connection(("127.0.0.1", self.http_any.server_address[1]), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
                return data.startswith(b"HTTP/")
        except OSError:
            return False

    def problems(self) -> list[str]:
        out = [f"{name}: {n} connection(s) from outside the host" for name, n in self.foreign_connections().items()]
        if not self.secret_intact():
            out.append(f"the secret file or its folder changed: {self.dir}")
        if not self.context_intact():
            out.append(f"the context file changed: {self.context_path}")
        for name, value in self.env_values.items():
            if self.set_env and os.environ.get(name) != value:
                out.append(f"the host environment variable {name} changed")
        return out


# =========================================================================== sub-call handler
class CheckHandler:
    """Serves llm_query for the checks: echoes sizes, records prompts, refuses past a budget."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self, budget: int | None = None) -> None:
        with self._lock:
            self.budget = budget
            self.calls = self.served = self.refused = 0
            self.prompts: list[str] = []
            self.largest_prompt = 0

    def __call__(self, request: dict) -> dict:
        op = request.get("op")
        prompts = request.get("prompts") if op == "llm_query_batched" else [request.get("prompt")]
        prompts = [str(p) for p in (prompts or [])]
        with self._lock:
            self.calls += 1
            if self.budget is not None and self.served >= self.budget:
                self.refused += 1
                raise BridgeRefusal(f"sub-call budget of {self.budget} calls is spent")
            self.served += 1
            for p in prompts:
                self.largest_prompt = max(self.largest_prompt, len(p))
                if len(self.prompts) < 100:
                    self.prompts.append(p)
        if op == "llm_query_batched":
            return {"texts": [f"echo:{len(p)}" for p in prompts]}
        return {"text": f"echo:{len(prompts[0]) if prompts else 0}"}


# =========================================================================== runner
@dataclass
class CheckContext:
    """What a verify function may use: the session, the canaries, the handler, notes."""

    session: SandboxSession
    canaries: Canaries
    handler: CheckHandler
    probe: dict
    notes: dict = field(default_factory=dict)

    def run(self, code: str, timeout: float = 15.0) -> Execution:
        """Run one more cell in the attacked session (with the helpers defined)."""
        return self.session.execute(prelude(self.probe) + "\n" + code, timeout=timeout)


_PRELUDE = '''\
import json as _rlm_json, errno as _rlm_errno
PROBE = _rlm_json.loads({probe!r})
def attempt(fn, *args, **kwargs):
    """'ok' when fn(*args, **kwargs) works, else the exception's name (and errno)."""
    try:
        fn(*args, **kwargs)
        return "ok"
    except Exception as exc:
        code = _rlm_errno.errorcode.get(getattr(exc, "errno", None) or 0, "")
        return type(exc).__name__ + (":" + code if code else "")
def report(**fields):
    print({mark!r} + _rlm_json.dumps(fields, default=str), flush=True)
'''


def prelude(probe: dict) -> str:
    return _PRELUDE.format(probe=json.dumps(probe), mark=MARK)


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


def _short(text: str, limit: int = 160) -> str:
    text = sanitize_for_terminal(str(text)).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        execution = session.execute(prelude(ctx.probe) + "\n" + textwrap.dedent(attack.code),
                                    timeout=attack.timeout)
        try:
            passed, seen = attack.verify(execution, ctx)
        except Exception as exc:  # noqa: BLE001 - a verify bug is a failed check, not a crash of the run
            passed, seen = False, f"verify failed: {exc.__class__.__name__}: {exc}"
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
    return CheckResult(attack.name, attack.category, attack.expected, _short(seen), passed and alive,
                       round(time.perf_counter() - started, 2), alive)


def select_attacks(fast: bool = True, names: Iterable[str] | None = None) -> list[Attack]:
    chosen = [a for a in ATTACKS if (a.fast or not fast)]
    if names is not None:
        wanted = set(names)
        chosen = [a for a in ATTACKS if a.name in wanted]
    # Group attacks sharing settings so that each group reuses one session; keep catalogue order.
    order = {}
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
    lines = [l for l in execution.output.splitlines() if l.strip()]
    return False, "no report from the cell: " + _short(lines[-1] if lines else "no output", 120)


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


# =========================================================================== the catalogue
ATTACKS: list[Attack] = []


def _indent(code: str) -> str:
    """Shared helper code, indented like the attack bodies it is prepended to (one dedent for both)."""
    return textwrap.indent(code, "    ")


def attack(name: str, category: str, expected: str, code: str, verify: Verify, **kwargs) -> Attack:
    item = Attack(name, category, expected, textwrap.dedent(code).strip() + "\n", verify, **kwargs)
    if any(a.name == name for a in ATTACKS):
        raise ValueError(f"duplicate attack name {name}")
    ATTACKS.append(item)
    return item


# --------------------------------------------------------------------------- network
def _verify_interfaces(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    names = sorted(set(data["ifaces"]) | set(data["sysfs"]))
    routes = data["routes"]
    return names == ["lo"] and not routes, f"interfaces: {', '.join(names)}; routes: {len(routes)}"


attack("net_interfaces", "network", "only the loopback interface, no route", r"""
    import os, socket
    routes = [l for l in open("/proc/net/route").read().splitlines()[1:] if l.strip()]
    report(ifaces=[n for _, n in socket.if_nameindex()], sysfs=sorted(os.listdir("/sys/class/net")), routes=routes)
""", _verify_interfaces)

_CONNECT = _indent(r"""
import socket
def connect(family, address, kind=socket.SOCK_STREAM):
    with socket.socket(family, kind) as s:
        s.settimeout(3)
        s.connect(address)
        if kind == socket.SOCK_STREAM:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
""")

attack("net_host_loopback", "network", "refused: 127.0.0.1 is the sandbox's own; host canary counts 0",
       _CONNECT + r"""
    import urllib.request
    port = PROBE["http_port"]
    out = {
        "tcp 127.0.0.1": attempt(connect, socket.AF_INET, ("127.0.0.1", port)),
        "tcp [::1]": attempt(connect, socket.AF_INET6, ("::1", port)),
        "tcp localhost": attempt(connect, socket.AF_INET, ("localhost", port)),
        "urllib": attempt(urllib.request.urlopen, f"http://127.0.0.1:{port}/", timeout=3),
        "any-port canary on 127.0.0.1": attempt(connect, socket.AF_INET, ("127.0.0.1", PROBE["any_port"])),
    }
    report(out=out)
""", refused("out", extra=_no_canary_hit))

attack("net_host_addresses", "network", "every host address unreachable (no route); canary counts 0",
       _CONNECT + r"""
    addrs = sorted(set(PROBE["host_addrs"]) | {"172.17.0.1", "10.0.2.2", "192.168.65.2"})
    out = {a: attempt(connect, socket.AF_INET, (a, PROBE["any_port"])) for a in addrs}
    out["host.docker.internal"] = attempt(connect, socket.AF_INET, ("host.docker.internal", PROBE["any_port"]))
    report(out=out)
""", refused("out", extra=_no_canary_hit))

attack("net_internet", "network", "no route to the internet (TCP, UDP, IPv6)", _CONNECT + r"""
    out = {
        "tcp 1.1.1.1:443": attempt(connect, socket.AF_INET, ("1.1.1.1", 443)),
        "tcp 8.8.8.8:53": attempt(connect, socket.AF_INET, ("8.8.8.8", 53)),
        "udp 8.8.8.8:53": attempt(connect, socket.AF_INET, ("8.8.8.8", 53), socket.SOCK_DGRAM),
        "tcp [2606:4700::1111]:443": attempt(connect, socket.AF_INET6, ("2606:4700::1111", 443)),
    }
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        out["udp sendto 9.9.9.9"] = attempt(u.sendto, b"x", ("9.9.9.9", 53))
    report(out=out)
""", refused("out"))

attack("net_dns", "network", "no name resolution; the resolver is unreachable", _CONNECT + r"""
    out = {name: attempt(socket.getaddrinfo, name, 443) for name in ("example.com", "pypi.org", "host.docker.internal")}
    resolvers = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")]
    for r in resolvers:
        family = socket.AF_INET6 if ":" in r else socket.AF_INET
        out["udp to resolver " + r] = attempt(connect, family, (r, 53), socket.SOCK_DGRAM)
        with socket.socket(family, socket.SOCK_DGRAM) as u:
            out["sendto resolver " + r] = attempt(u.sendto, b"\x00" * 12, (r, 53))
    report(out=out)
""", refused("out"))

attack("net_raw_sockets", "network", "raw and packet sockets refused (no CAP_NET_RAW); ping has no route", r"""
    import socket
    out = {
        "AF_INET SOCK_RAW icmp": attempt(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        "AF_INET SOCK_RAW tcp": attempt(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
        "AF_INET6 SOCK_RAW": attempt(socket.socket, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
        "AF_PACKET SOCK_RAW": attempt(socket.socket, socket.AF_PACKET, socket.SOCK_RAW, 0x0300),
        "AF_PACKET SOCK_DGRAM": attempt(socket.socket, socket.AF_PACKET, socket.SOCK_DGRAM, 0x0300),
    }
    def ping():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) as s:
            s.sendto(b"\x08\x00\xf7\xff\x00\x00\x00\x00", ("8.8.8.8", 0))
    out["icmp datagram ping 8.8.8.8"] = attempt(ping)
    report(out=out)
""", refused("out"))

attack("net_abstract_unix", "network", "the host's abstract Unix sockets are out of reach; canary counts 0", r"""
    import socket
    def connect(name):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(3)
            s.connect(name)
    out = {"host abstract canary": attempt(connect, "\0" + PROBE["abstract_name"]),
           "containerd shim (classic escape)": attempt(connect, "\0/containerd-shim/moby.sock"),
           "host path Unix canary": attempt(connect, PROBE["unix_socket"]),
           "docker.sock by path": attempt(connect, "/var/run/docker.sock")}
    report(out=out)
""", refused("out", extra=_no_canary_hit))


# --------------------------------------------------------------------------- files
def _secret_untouched(execution: Execution, ctx: CheckContext, data: dict) -> tuple[bool, str]:
    text = json.dumps(data)
    leaked = ctx.canaries.secret_text in text or ctx.canaries.secret_text in execution.output
    intact = ctx.canaries.secret_intact()
    ok = intact and not leaked
    return ok, ("secret unread and unchanged" if ok else "SECRET LEAKED" if leaked else "SECRET FILE CHANGED")


attack("files_host_secret", "files", "the host's secret file is not there, by any path", r"""
    import os
    sp, sd = PROBE["secret_path"], PROBE["secret_dir"]
    out = {
        "open by host path": attempt(open, sp, "rb"),
        "list host folder": attempt(os.listdir, sd),
        "stat host path": attempt(os.stat, sp),
        "via /proc/1/root": attempt(open, "/proc/1/root" + sp, "rb"),
        "via /proc/self/root": attempt(open, "/proc/self/root" + sp, "rb"),
        "via ../ from /rlm/run": attempt(open, "/rlm/run/../../.." + sp, "rb"),
        "via ../ from the context": attempt(open, os.path.dirname(PROBE["context_path"]) + "/../../.." + sp, "rb"),
        "write to host path": attempt(open, sp, "wb"),
    }
    report(out=out)
""", refused("out", extra=_secret_untouched))


def _verify_proc_roots(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    other = {pid: v for pid, v in data["roots"].items() if v.startswith("OTHER")}
    ok = not other and data["init_root_is_ours"]
    return ok, (f"{len(data['roots'])} processes, all rooted in the container" if ok else f"FOREIGN ROOT: {other}")


attack("files_proc_root", "files", "/proc/*/root of every process is the container's own root", r"""
    import os
    root = os.stat("/")
    roots = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                st = os.stat(f"/proc/{pid}/root/")
            except OSError as exc:
                roots[pid] = type(exc).__name__
                continue
            same = (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino)
            roots[pid] = "container" if same else f"OTHER {st.st_dev}:{st.st_ino}"
    try:
        ours = open("/proc/1/root/etc/hostname").read() == open("/etc/hostname").read()
    except PermissionError:
        ours = True  # pid 1 (the supervisor) is not dumpable: its root is not even visible
    report(roots=roots, init_root_is_ours=ours)
""", _verify_proc_roots)

_ALLOWED_MOUNT_PREFIXES = ("/proc", "/dev", "/sys", "/rlm/context/")
_ALLOWED_MOUNTS = {"/", "/tmp", "/home/sandbox", "/rlm/run", "/rlm/bridge", "/etc/hosts", "/etc/hostname",
                   "/etc/resolv.conf", "/usr/sbin/docker-init", "/sbin/docker-init", "/dev/init"}


def _verify_mounts(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    unexpected = [m for m, *_ in data["mounts"]
                  if m not in _ALLOWED_MOUNTS and not m.startswith(_ALLOWED_MOUNT_PREFIXES)]
    writable = sorted({m for m, opts, fstype in data["mounts"]
                       if opts.split(",")[0] == "rw" and fstype not in ("tmpfs", "proc", "devpts", "mqueue", "sysfs")})
    ok = not unexpected and data["root_ro"]
    if not ok:
        return False, f"UNEXPECTED MOUNTS: {unexpected}; root read-only: {data['root_ro']}"
    return True, (f"{len(data['mounts'])} mounts, none unexpected; read-only root; host-backed writable: "
                  f"{', '.join(writable) or 'none'}")


attack("files_mounts", "files", "only run/bridge/context come from the host; root fs read-only", r"""
    mounts = []
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        mounts.append((f[4], f[5], f[f.index("-") + 1]))
    root_ro = [m for m in mounts if m[0] == "/"][-1][1].split(",")[0] == "ro"
    report(mounts=mounts, root_ro=root_ro)
""", _verify_mounts)


def _context_untouched(execution: Execution, ctx: CheckContext, data: dict) -> tuple[bool, str]:
    ok = ctx.canaries.context_intact()
    return ok, "host context file unchanged" if ok else "HOST CONTEXT FILE CHANGED"


attack("files_write_context", "files", "the context mount refuses every write (EROFS)", r"""
    import os
    cp = PROBE["context_path"]
    out = {
        "open r+": attempt(open, cp, "r+b"),
        "append": attempt(open, cp, "ab"),
        "truncate": attempt(os.truncate, cp, 0),
        "chmod": attempt(os.chmod, cp, 0o666),
        "utime": attempt(os.utime, cp, (0, 0)),
        "unlink": attempt(os.unlink, cp),
        "rename": attempt(os.rename, cp, cp + ".moved"),
        "create next to it": attempt(open, os.path.join(os.path.dirname(cp), "planted.txt"), "wb"),
    }
    report(out=out, context_still_reads=context[:40] == open(cp).read()[:40])
""", refused("out", extra=_context_untouched))

attack("files_write_rootfs", "files", "the root filesystem and the REPL's own code are read-only", r"""
    import os
    out = {}
    for path, mode in [("/etc/passwd", "ab"), ("/opt/rlm/repl.py", "ab"), ("/opt/rlm/supervisor.py", "ab"),
                       ("/opt/rlm/evil.py", "wb"), ("/usr/lib/python3.11/sitecustomize.py", "wb"),
                       ("/etc/ld.so.preload", "wb"), ("/usr/bin/evil", "wb"), ("/var/tmp/evil", "wb"),
                       ("/evil", "wb"), ("/rlm/evil", "wb")]:
        out["write " + path] = attempt(open, path, mode)
    out["rename /opt/rlm/repl.py"] = attempt(os.rename, "/opt/rlm/repl.py", "/opt/rlm/repl.old")
    out["chmod /usr/bin/python3"] = attempt(os.chmod, "/usr/bin/python3", 0o777)
    out["mkdir /opt/rlm/x"] = attempt(os.mkdir, "/opt/rlm/x")
    report(out=out)
""", refused("out"))

attack("files_write_bridge", "files", "the bridge folder is read-only: no plant, no unlink, no rebind", r"""
    import os, socket
    b = "/rlm/bridge"
    def bind():
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(b + "/fake.sock")
    out = {
        "create file": attempt(open, b + "/planted", "wb"),
        "symlink": attempt(os.symlink, PROBE["secret_path"], b + "/planted-link"),
        "hard link": attempt(os.link, b + "/llm.sock", b + "/llm2.sock"),
        "unlink llm.sock": attempt(os.unlink, b + "/llm.sock"),
        "rename ctl.sock": attempt(os.rename, b + "/ctl.sock", b + "/ctl.old"),
        "chmod llm.sock": attempt(os.chmod, b + "/llm.sock", 0o600),
        "mkdir": attempt(os.mkdir, b + "/d"),
        "bind a socket": attempt(bind),
    }
    report(out=out)
""", refused("out"))


_KILL_KERNEL = "import os\nos._exit(1)"
# The supervisor is pid 1 and cannot be killed from inside; the kernel's death makes the host
# restart it, which locks run/ again and removes anything planted there.
_KILL_SUPERVISOR = "import os\nos._exit(1)"


def _after_death(kill: str, *, refuse: bool = False, container: bool = False) -> Verify:
    """Judge a planting attack: the cell planted (or failed to plant) links in /rlm/run and reported
    it; then the kernel or the supervisor is killed so that the host restarts, reconnects and cleans.
    Contained when nothing reached a host canary, the secret is intact and the session recovered; when
    the planting worked, ``refuse`` also requires that the host refused the planted paths (it had to
    recreate the container) and ``container`` that the container was recreated."""

    def verify(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
        data = report_of(execution)
        if data is None:
            return _missing(execution)
        planted = {k: v for k, v in data["planted"].items() if v == "ok"}
        death = ctx.run(kill)
        hits = ctx.canaries.foreign_connections()
        intact = ctx.canaries.secret_intact()
        if hits or not intact:
            return False, f"HOST FOLLOWED A PLANTED LINK: canary hits {hits}, secret intact {intact}"
        if not death.restarted:
            return False, "the host did not restart the sandbox: " + _short(death.output, 80)
        if not planted:
            kinds = ", ".join(sorted(set(data["planted"].values())))
            return True, f"planting refused ({kinds}); host restarted the {death.restarted}; canaries untouched"
        if (refuse or container) and death.restarted != "container":
            return False, f"the host accepted planted paths ({', '.join(planted)}); restarted the {death.restarted}"
        return True, (f"{len(planted)} links planted; host restarted the {death.restarted} without following "
                      f"them; canaries untouched")

    return verify


attack("files_run_symlink_kernel_socket", "files",
       "no symlink can replace /rlm/run/k-1, or the host never follows it; session recovers", r"""
    import os
    def plant(target, name):
        os.unlink(name)
        os.symlink(target, name)
    # Replace the kernel's shell socket with a symlink to a host socket and another with one to the host
    # secret; the verification then kills the kernel so that the host reconnects to a restarted one.
    report(planted={"k-1 -> host socket": attempt(plant, PROBE["unix_socket"], "/rlm/run/k-1"),
                    "k-2 -> host secret": attempt(plant, PROBE["secret_path"], "/rlm/run/k-2")})
""", _after_death(_KILL_KERNEL))

_REDIRECT_KERNEL = _indent(r"""
import json, os
def redirect():
    # Point the next kernel's sockets elsewhere (by rewriting its connection file), so that whatever is
    # planted at /rlm/run/k-N is still there when the host reconnects.
    cf = "/rlm/run/kernel.json"
    info = json.load(open(cf))
    info["ip"] = "/rlm/run/elsewhere/k"
    os.makedirs("/rlm/run/elsewhere", exist_ok=True)
    with open(cf + ".new", "w") as fh:
        json.dump(info, fh)
    os.replace(cf + ".new", cf)
""")

attack("files_run_symlink_persistent", "files",
       "host refuses symlinks left at k-1..k-5 (O_PATH|O_NOFOLLOW); canary socket counts 0",
       _REDIRECT_KERNEL + r"""
    def plant():
        for n in range(1, 6):
            os.unlink(f"/rlm/run/k-{n}")
            os.symlink(PROBE["unix_socket"] if n % 2 else PROBE["secret_path"], f"/rlm/run/k-{n}")
    report(planted={"redirect kernel.json": attempt(redirect), "symlinks at k-1..k-5": attempt(plant)})
""", _after_death(_KILL_KERNEL, refuse=True), fast=False)

attack("files_run_hardlink_socket", "files",
       "host refuses a kernel socket with extra hard links (st_nlink != 1); session recovers",
       _REDIRECT_KERNEL + r"""
    import socket
    evil = socket.socket(socket.AF_UNIX)
    def plant():
        evil.bind("/rlm/run/evil.sock")
        evil.listen(8)
        for n in range(1, 6):
            os.unlink(f"/rlm/run/k-{n}")
            os.link("/rlm/run/evil.sock", f"/rlm/run/k-{n}")   # the same inode under several names
    report(planted={"redirect kernel.json": attempt(redirect), "hard links at k-1..k-5": attempt(plant)})
""", _after_death(_KILL_KERNEL, refuse=True), fast=False)

attack("files_hardlink_escape", "files", "no hard link from /rlm/run to a file outside it (EXDEV)", r"""
    import os
    out = {
        "context -> run": attempt(os.link, PROBE["context_path"], "/rlm/run/ctx-link"),
        "/etc/passwd -> run": attempt(os.link, "/etc/passwd", "/rlm/run/passwd-link"),
        "/opt/rlm/repl.py -> run": attempt(os.link, "/opt/rlm/repl.py", "/rlm/run/repl-link"),
        "bridge socket -> run": attempt(os.link, "/rlm/bridge/llm.sock", "/rlm/run/llm-link"),
        "/tmp file -> run": attempt(os.link, open("/tmp/rlm-link-src", "w").name, "/rlm/run/tmp-link"),
    }
    os.unlink("/tmp/rlm-link-src")
    report(out=out)
""", refused("out"))

attack("files_run_cleanup_links", "files", "emptying run/ on recreation does not follow planted links",
       r"""
    import os
    def plant():
        os.symlink(PROBE["secret_dir"], "/rlm/run/host-dir")
        os.symlink(PROBE["secret_path"], "/rlm/run/host-file")
        os.makedirs("/rlm/run/nested/deeper")
        os.symlink(PROBE["secret_dir"], "/rlm/run/nested/deeper/host-dir")
        os.symlink("/", "/rlm/run/nested/root")
    # The verification then kills the supervisor: the host recreates the container and empties run/.
    report(planted={"links to the host secret folder": attempt(plant)})
""", _after_death(_KILL_SUPERVISOR))


_RESTART_RACE = r"""
import os, time
for _ in range(3):                # helpers that outlive the kernel until the supervisor's clean-up
    if os.fork() == 0:
        try:
            while not os.path.isdir("/rlm/run/escape"):
                try:
                    os.mkdir("/rlm/run/escape", 0o777)
                except OSError:
                    pass
            time.sleep(3600)
        finally:
            os._exit(0)
time.sleep(0.2)
os._exit(1)                       # the kernel dies: the host makes run/ writable again for the restart
"""

_USE_ESCAPE = r"""
import os
exists = os.path.isdir("/rlm/run/escape")
written, stopped = 0, None
if exists:
    try:
        for i in range(12):
            with open(f"/rlm/run/escape/fill-{i}.bin", "wb") as fh:
                for _ in range(8):
                    fh.write(b"\0" * (1 << 20))
                    written += 1 << 20
    except OSError as exc:
        stopped = type(exc).__name__
report(exists=exists, mb=written >> 20, stopped=stopped)
"""


def _verify_restart_race(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    restarts = []
    for attempt_no in range(3):   # the window is short: give the race three chances
        if attempt_no:
            execution = ctx.run(_RESTART_RACE)
        if not execution.restarted:
            return False, "the kernel did not die as planned: " + _short(execution.output, 80)
        restarts.append(execution.restarted)
        after = ctx.run(_USE_ESCAPE)
        data = report_of(after)
        if data is None:
            return _missing(after)
        if data["exists"]:
            cap = ctx.probe["tmpfs_mb"]
            ok = data["mb"] <= cap
            return ok, (f"a folder made in run/ during a {execution.restarted} restart stays writable: "
                        f"{data['mb']} MB written to the host disk afterwards (stopped: {data['stopped']})"
                        if not ok else f"a folder was made during the restart but writes stop at {data['mb']} MB")
    return True, f"{len(restarts)} restarts ({', '.join(restarts)}): nothing could be created in run/ meanwhile"


attack("files_run_restart_race", "files",
       "no window during a kernel restart lets the sandbox create files in /rlm/run", _RESTART_RACE,
       _verify_restart_race, cleanup=r"""
    import glob, os
    for p in glob.glob("/rlm/run/escape/*"):
        os.unlink(p)
""")


def _verify_disk_fill(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    cap = data["cap"]
    ok = data["mb"] <= cap
    return ok, (f"stopped at {data['mb']} MB ({data['stopped']})" if ok else
                f"{data['mb']} MB landed on the host disk through /rlm/run (cap of the largest scratch tmpfs: "
                f"{cap} MB; stopped: {data['stopped']})")


attack("files_run_disk_fill", "files", "writes into /rlm/run are capped (cannot fill the host disk)", r"""
    import os
    chunk = b"\0" * (1 << 20)
    written, stopped = 0, None
    try:
        for i in range(12):
            with open(f"/rlm/run/fill-{i}.bin", "wb") as fh:
                for _ in range(8):
                    fh.write(chunk)
                    written += len(chunk)
    except OSError as exc:
        stopped = type(exc).__name__ + ":" + str(exc.errno)
    report(mb=written >> 20, stopped=stopped, cap=PROBE["tmpfs_mb"])
""", _verify_disk_fill, cleanup=r"""
    import glob, os
    for p in glob.glob("/rlm/run/fill-*.bin"):
        os.unlink(p)
""")


# --------------------------------------------------------------------------- privilege
def _verify_uid(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    uid, gid = ctx.probe["uid"], ctx.probe["gid"]
    others = {pid: ids for pid, ids in data["procs"].items() if set(ids) != {str(uid)}}
    ok = (data["uid"] == data["euid"] == uid and data["gid"] == gid and set(data["groups"]) <= {gid}
          and not others and uid != 0)
    if not ok:
        return False, f"uid {data['uid']} euid {data['euid']} groups {data['groups']}; other processes: {others}"
    return True, (f"uid {data['uid']} gid {data['gid']} groups {data['groups']}; "
                  f"all {len(data['procs'])} processes uid {uid}")


attack("priv_uid", "privilege", "uid/gid 1000 (not 0) for every process in the container", r"""
    import os
    procs = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                status = open(f"/proc/{pid}/status").read()
            except OSError:
                continue
            procs[pid] = [l.split()[1:] for l in status.splitlines() if l.startswith("Uid:")][0]
    report(uid=os.getuid(), euid=os.geteuid(), gid=os.getgid(), groups=os.getgroups(), procs=procs)
""", _verify_uid)


def _verify_caps(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    bad = {}
    for pid, status in data["procs"].items():
        for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            if status.get(key, "0").strip("0"):
                bad[f"{pid} {key}"] = status[key]
        if status.get("NoNewPrivs") != "1":
            bad[f"{pid} NoNewPrivs"] = status.get("NoNewPrivs")
        if status.get("Seccomp") not in ("2", None):
            bad[f"{pid} Seccomp"] = status.get("Seccomp")
    return (not bad, f"{len(data['procs'])} processes: no capability, no_new_privs, seccomp filter"
            if not bad else f"PRIVILEGE: {bad}")


attack("priv_capabilities", "privilege", "empty capability sets, no_new_privs and seccomp on every process", r"""
    import os
    procs = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                lines = open(f"/proc/{pid}/status").read().splitlines()
            except OSError:
                continue
            procs[pid] = {l.split(":")[0]: l.split(":", 1)[1].strip() for l in lines
                          if l.startswith(("Cap", "NoNewPrivs", "Seccomp:"))}
    report(procs=procs)
""", _verify_caps)


def _verify_setuid_bins(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ran = data["runs"]
    gained = {k: v for k, v in ran.items() if v.get("rc") == 0 or "uid=0" in v.get("out", "") or v.get("out") == "0"}
    ok = not gained and data["nnp"] == "1"
    return ok, (f"{len(data['found'])} setuid/setgid files present, inert (no_new_privs): "
                + ", ".join(f"{k} rc={v.get('rc')}" for k, v in ran.items())) if ok else f"ROOT GAINED: {gained}"


attack("priv_setuid_binaries", "privilege", "setuid binaries (if any) give no root: no_new_privs", r"""
    import os, stat, subprocess
    found = []
    tops = ["/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/usr/libexec"]
    tops += [e.path for e in os.scandir("/usr/lib") if e.is_dir(follow_symlinks=False)
             and not e.name.startswith(("python", "x86_64", "aarch64", "locale"))]
    for top in tops:
        for root, dirs, files in os.walk(top):
            for f in files:
                p = os.path.join(root, f)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                    found.append(p)
    runs = {}
    for label, cmd in {"mount": ["mount", "-t", "tmpfs", "none", "/home/sandbox"],
                       "su": ["su", "-c", "id -u", "root"], "umount": ["umount", "/rlm/bridge"]}.items():
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
            runs[label] = {"rc": p.returncode, "out": p.stdout.strip()[:40]}
        except Exception as exc:
            runs[label] = {"rc": None, "out": type(exc).__name__}
    nnp = [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0]
    report(found=found, runs=runs, nnp=nnp)
""", _verify_setuid_bins)

attack("priv_setuid0", "privilege", "setuid(0) and friends: EPERM", r"""
    import os
    out = {
        "setuid(0)": attempt(os.setuid, 0), "seteuid(0)": attempt(os.seteuid, 0),
        "setresuid(0,0,0)": attempt(os.setresuid, 0, 0, 0), "setreuid(0,0)": attempt(os.setreuid, 0, 0),
        "setgid(0)": attempt(os.setgid, 0), "setgroups([0])": attempt(os.setgroups, [0]),
        "setuid(65534)": attempt(os.setuid, 65534),
    }
    report(out=out, uid_after=os.getuid())
""", refused("out"))

_LIBC = _indent(r"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def call(fn, *args):
    ctypes.set_errno(0)
    if fn(*args) == -1:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
""")

attack("priv_mount", "privilege", "mount/umount refused (EPERM)", _LIBC + r"""
    out = {
        "mount tmpfs": attempt(call, libc.mount, b"none", b"/home/sandbox", b"tmpfs", 0, None),
        "mount proc": attempt(call, libc.mount, b"proc", b"/tmp", b"proc", 0, None),
        "bind / to /tmp": attempt(call, libc.mount, b"/", b"/tmp", None, 4096, None),
        "remount / rw": attempt(call, libc.mount, None, b"/", None, 32, None),
        "umount /rlm/bridge": attempt(call, libc.umount2, b"/rlm/bridge", 2),
        "umount /proc/sys": attempt(call, libc.umount2, b"/proc/sys", 2),
    }
    report(out=out)
""", refused("out"))

attack("priv_unshare", "privilege", "no new namespaces (user, mount, net, pid, ...): EPERM", r"""
    import json, subprocess, sys
    probe = '''
    import ctypes, errno, json, os
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    for name, flag in [("user", 0x10000000), ("mount", 0x00020000), ("net", 0x40000000), ("pid", 0x20000000),
                       ("cgroup", 0x02000000), ("ipc", 0x08000000), ("uts", 0x04000000), ("user+mount", 0x10020000)]:
        pid = os.fork()
        if pid == 0:
            rc = libc.unshare(flag)
            os._exit(0 if rc == 0 else (ctypes.get_errno() or 255))
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        out["unshare " + name] = "ok" if code == 0 else "OSError:" + errno.errorcode.get(code, str(code))
    print(json.dumps(out))
    '''
    import textwrap
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(probe)], capture_output=True, text=True, timeout=20)
    out = json.loads(p.stdout)   # a fresh single-threaded process (unshare(CLONE_NEWUSER) needs one)
    report(out=out)
""", refused("out"))

attack("priv_ptrace", "privilege", "no ptrace of init or the supervisor; their memory unreadable", _LIBC + r"""
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    def attach(pid):
        call(libc.ptrace, 16, pid, None, None)          # PTRACE_ATTACH
        os.waitpid(pid, 0x40000000)                     # __WALL: wait for the stop
        libc.ptrace(17, pid, None, None)                # PTRACE_DETACH: let it run again
    def peek_mem(pid):
        with open(f"/proc/{pid}/mem", "rb") as fh:
            maps = open(f"/proc/{pid}/maps").readline()
            fh.seek(int(maps.split("-")[0], 16))
            fh.read(16)
    def open_mem_rw(pid):
        os.close(os.open(f"/proc/{pid}/mem", os.O_RDWR))   # opening is enough: nothing is written
    sup = os.getppid()
    out = {"attach init (pid 1)": attempt(attach, 1), f"attach supervisor (pid {sup})": attempt(attach, sup),
           "read init's memory": attempt(peek_mem, 1), "read supervisor's memory": attempt(peek_mem, sup),
           "open init's memory for writing": attempt(open_mem_rw, 1),
           "open supervisor's memory for writing": attempt(open_mem_rw, sup)}
    report(out=out)
""", refused("out"))

_SYSCALLS = _indent(r"""
import platform
NR = {"x86_64": {"add_key": 248, "request_key": 249, "keyctl": 250, "bpf": 321, "perf_event_open": 298,
                 "userfaultfd": 323, "kexec_load": 246, "init_module": 175, "finit_module": 313,
                 "open_by_handle_at": 304, "setns": 308, "io_uring_setup": 425, "reboot": 169},
      "aarch64": {"add_key": 217, "request_key": 218, "keyctl": 219, "bpf": 280, "perf_event_open": 241,
                  "userfaultfd": 282, "kexec_load": 104, "init_module": 105, "finit_module": 273,
                  "open_by_handle_at": 265, "setns": 268, "io_uring_setup": 425, "reboot": 142}}.get(platform.machine())
libc.syscall.restype = ctypes.c_long
def sys_call(name, *args):
    '''"ok" when the kernel ran the call (even if it then failed on our dummy arguments).'''
    ctypes.set_errno(0)
    rc = libc.syscall(NR[name], *[ctypes.c_long(a) for a in args])
    err = ctypes.get_errno()
    if rc == -1 and err in (errno.EPERM, errno.ENOSYS, errno.EACCES):
        raise OSError(err, os.strerror(err))
    return rc
""")

attack("priv_keyring", "privilege", "kernel keyring syscalls refused (seccomp)", _LIBC + _SYSCALLS + r"""
    if NR is None:
        report(out={"not checked on " + platform.machine(): "skipped"})
    else:
        out = {
            "keyctl(GET_KEYRING_ID, session)": attempt(sys_call, "keyctl", 0, -3, 0),
            "add_key(user, session)": attempt(sys_call, "add_key", 0, 0, 0, 0, -3),
            "request_key": attempt(sys_call, "request_key", 0, 0, 0, 0),
        }
        report(out=out)
""", refused("out"))

attack("priv_dangerous_syscalls", "privilege", "bpf, perf, kexec, modules, setns, open_by_handle_at: refused",
       _LIBC + _SYSCALLS + r"""
    if NR is None:
        report(out={"not checked on " + platform.machine(): "skipped"})
    else:
        out = {
            "bpf": attempt(sys_call, "bpf", 0, 0, 0),
            "perf_event_open": attempt(sys_call, "perf_event_open", 0, 0, -1, -1, 0),
            "userfaultfd": attempt(sys_call, "userfaultfd", 0),
            "kexec_load": attempt(sys_call, "kexec_load", 0, 0, 0, 0),
            "init_module": attempt(sys_call, "init_module", 0, 0, 0),
            "finit_module": attempt(sys_call, "finit_module", -1, 0, 0),
            "open_by_handle_at (shocker)": attempt(sys_call, "open_by_handle_at", 0, 0, 0),
            "setns": attempt(sys_call, "setns", -1, 0),
            "reboot": attempt(sys_call, "reboot", 0, 0, 0, 0),
        }
        report(out=out)
""", refused("out"))

attack("priv_io_uring", "privilege", "io_uring (a large kernel attack surface) refused", _LIBC + _SYSCALLS + r"""
    if NR is None:
        report(out={"not checked on " + platform.machine(): "skipped"})
    else:
        # io_uring_setup(1, NULL): EFAULT means the kernel accepted the call and read our (null) arguments.
        report(out={"io_uring_setup": attempt(sys_call, "io_uring_setup", 1, 0)})
""", refused("out"))


attack("priv_seccomp_allowlist", "privilege",
       "syscalls outside Docker's default allowlist stay refused (recent ones, personality flags)",
       _LIBC + r"""
    libc.syscall.restype = ctypes.c_long
    def sys_call(nr, *args):
        # raises unless the kernel ran the call (EPERM/ENOSYS: refused by seccomp, or unknown to the kernel)
        ctypes.set_errno(0)
        rc = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
        err = ctypes.get_errno()
        if rc == -1 and err in (errno.EPERM, errno.ENOSYS):
            raise OSError(err, os.strerror(err))
    def no_aslr():
        call(libc.personality, 0x0040000)      # ADDR_NO_RANDOMIZE: turns off ASLR, a help for exploits
        libc.personality(0)
    # Syscall numbers >= 424 are the same on every architecture.
    out = {"process_madvise (440)": attempt(sys_call, 440, -1, 0, 0, 0, 0),
           "cachestat (451)": attempt(sys_call, 451, -1, 0, 0, 0),
           "statmount (457)": attempt(sys_call, 457, 0, 0, 0, 0),
           "lsm_get_self_attr (459)": attempt(sys_call, 459, 0, 0, 0, 0),
           "mseal (462)": attempt(sys_call, 462, 0, 0, 0),
           "personality(ADDR_NO_RANDOMIZE)": attempt(no_aslr)}
    report(out=out)
""", refused("out"))


def _verify_dev(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    bad = [k for k, v in data["out"].items() if v == "ok"]
    ok = not data["dangerous"] and not bad
    return ok, (f"/dev: {', '.join(data['present'])}; mknod and raw devices refused" if ok
                else f"DEVICES: {data['dangerous']} {bad}")


attack("priv_devices", "privilege", "no disk/memory/kmsg devices in /dev; mknod refused", r"""
    import os, stat
    present = sorted(os.listdir("/dev"))
    risky = {"mem", "kmem", "port", "kmsg", "sda", "vda", "xvda", "nvme0", "nvme0n1", "fuse", "kvm", "net",
             "loop0", "loop-control", "mapper", "dri", "sg0", "hda", "vhost-net", "vsock", "userfaultfd", "tty0",
             "console", "cpu", "autofs"}
    out = {
        "mknod char 1:1 (mem)": attempt(os.mknod, "/home/sandbox/mem", 0o600 | stat.S_IFCHR, os.makedev(1, 1)),
        "mknod block 254:0 (vda)": attempt(os.mknod, "/dev/shm/vda", 0o600 | stat.S_IFBLK, os.makedev(254, 0)),
    }
    for dev in ("/dev/mem", "/dev/kmem", "/dev/kmsg", "/dev/vda", "/dev/sda", "/dev/port"):
        out["open " + dev] = attempt(open, dev, "rb")
    report(present=present, dangerous=sorted(risky & set(present)), out=out)
""", _verify_dev)

attack("priv_proc_sys", "privilege", "sysrq-trigger, core_pattern, sysctls, kcore: not writable/readable", r"""
    import os
    def open_write(path):
        os.close(os.open(path, os.O_WRONLY))   # opening is enough to prove it; nothing is written
    out = {}
    for path in ("/proc/sysrq-trigger", "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe",
                 "/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches", "/sys/kernel/uevent_helper",
                 "/proc/sys/fs/binfmt_misc/register", "/sys/power/state"):
        out["write " + path] = attempt(open_write, path)
    for path in ("/proc/kcore", "/proc/kmsg", "/dev/kmsg"):
        out["read " + path] = attempt(lambda p: open(p, "rb").read(1), path)
    report(out=out)
""", refused("out"))

attack("priv_cgroup_escape", "privilege", "cgroup files (release_agent, limits) read-only; no cgroup mount",
       _LIBC + r"""
    names = {"release_agent", "notify_on_release", "memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
             "memory.max", "memory.swap.max", "pids.max", "cgroup.procs", "cpu.cfs_quota_us", "cpu.max",
             "cgroup.subtree_control", "devices.allow"}
    targets, dirs_seen = [], []
    for root, dirs, files in os.walk("/sys/fs/cgroup"):
        if root.count("/") > 5:
            dirs[:] = []
        dirs_seen.append(root)
        targets += [os.path.join(root, f) for f in files if f in names]
    def open_write(path):
        os.close(os.open(path, os.O_WRONLY))
    out = {"write " + t: attempt(open_write, t) for t in targets}
    for d in dirs_seen[:3]:
        out["mkdir in " + d] = attempt(os.mkdir, d + "/rlm-escape")
    out["mount cgroup (v1 memory)"] = attempt(call, libc.mount, b"cgroup", b"/tmp", b"cgroup", 0, b"memory")
    out["mount cgroup2"] = attempt(call, libc.mount, b"cgroup2", b"/tmp", b"cgroup2", 0, None)
    report(out=out)
""", refused("out"))


def _verify_kill_init(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution) or {}
    if data.get("init_alive_after_sigkill") is False:
        return False, "init died of SIGKILL from inside"
    if execution.restarted != "container":
        return False, "expected the container to stop on SIGTERM and be recreated: " + _short(execution.output, 80)
    return True, "SIGKILL to pid 1 ignored; SIGTERM stopped the container, host recreated it"


attack("priv_kill_init", "privilege", "killing pid 1 only stops this container; the host recreates it", r"""
    import os, signal, time
    os.kill(1, signal.SIGKILL)         # ignored: init of a pid namespace cannot be SIGKILLed from inside
    time.sleep(0.2)
    report(init_alive_after_sigkill=os.path.exists("/proc/1/status"))
    os.kill(1, signal.SIGTERM)         # init forwards it: the container stops
    time.sleep(60)
""", _verify_kill_init)


def _verify_kill_all(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ok = data["supervisor_alive"] and execution.restarted is None
    return ok, (f"kill(-1): {data['kill']}; SIGKILL to pid 1: {data['kill_1']}; the supervisor lives on"
                if ok else f"supervisor alive {data['supervisor_alive']}, restarted {execution.restarted}")


attack("priv_kill_everything", "privilege", "kill(-1) / SIGKILL of pid 1 reach nothing: the supervisor is pid 1",
       r"""
    import os, signal
    out = {"kill": attempt(os.kill, -1, signal.SIGKILL), "kill_1": attempt(os.kill, 1, signal.SIGKILL)}
    out["supervisor_alive"] = os.path.exists("/proc/1") and open("/proc/1/stat").read().split()[2] != "Z"
    report(**out)
""", _verify_kill_all, fast=False)

attack("priv_docker_socket", "privilege", "no Docker/containerd/podman socket, no DOCKER_HOST", r"""
    import os
    out = {}
    for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
              "/var/run/crio/crio.sock", "/run/podman/podman.sock", "/run/user/1000/docker.sock",
              "/home/sandbox/.docker/run/docker.sock"):
        out[p] = attempt(os.stat, p)
    found = [l.split()[-1] for l in open("/proc/net/unix").read().splitlines()[1:]
             if any(w in l for w in ("docker", "containerd", "podman", "crio"))]
    for f in found:
        out["listed in /proc/net/unix: " + f] = "ok"
    out["DOCKER_HOST"] = "ok" if "DOCKER_HOST" in os.environ else "absent"
    report(out=out)
""", refused("out"))


# --------------------------------------------------------------------------- secrets
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.I)


def _verify_environ(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    blob = json.dumps(data)
    canaries = dict(ctx.canaries.env_values, secret_file=ctx.canaries.secret_text)
    leaked = [name for name, value in canaries.items() if value in blob or value in execution.output]
    path_leaked = ctx.canaries.secret_path is not None and str(ctx.canaries.dir) in blob
    names = set(data["names"])
    for text in data["blobs"].values():
        names |= {kv.split("=", 1)[0] for kv in text.split("\0") if "=" in kv}
    suspicious = sorted(n for n in names if _SECRET_NAME.search(n))
    ok = not leaked and not suspicious and not path_leaked
    return ok, (f"{len(data['blobs'])} environ/cmdline files: no canary, no secret-like variable "
                f"({len(names)} variables)" if ok else
                f"LEAK: canaries {leaked}, variables {suspicious}, secret folder path visible: {path_leaked}")


attack("secrets_environ", "secrets", "no host variable, API key or secret in any /proc/*/environ", r"""
    import os
    blobs = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for f in ("environ", "cmdline"):
                try:
                    blobs[f"{pid}/{f}"] = open(f"/proc/{pid}/{f}", "rb").read().decode("utf-8", "replace")
                except OSError as exc:
                    blobs[f"{pid}/{f}"] = "unreadable:" + type(exc).__name__
    blobs["mountinfo"] = open("/proc/self/mountinfo").read()
    report(blobs=blobs, names=sorted(os.environ))
""", _verify_environ)


# --------------------------------------------------------------------------- resources
def _verify_fork_bomb(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    limit = ctx.probe["pids_limit"]
    ok = data["peak"] <= limit and data["spawn"] != "ok" and data["left"] <= 4
    return ok, (f"peak {data['peak']} processes (pids limit {limit}); new process refused ({data['spawn']}); "
                f"bomb killed" if ok else f"peak {data['peak']} (limit {limit}), spawn {data['spawn']}, "
                f"left {data['left']}")


attack("res_fork_bomb", "resources", "the pids limit stops a fork bomb; kernel keeps answering", r"""
    import os, signal, subprocess, time
    bomb = os.fork()
    if bomb == 0:
        try:
            os.setsid()
            while True:
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.05)    # at the limit: keep the slots, spare the CPU for the clean-up
        finally:
            os._exit(0)
    time.sleep(1.0)
    count = lambda: len([p for p in os.listdir("/proc") if p.isdigit()])
    peak = count()
    spawn = attempt(subprocess.run, ["true"], timeout=5)
    for _ in range(500):                       # kill the bomb's process group until it is gone
        try:
            os.killpg(bomb, signal.SIGKILL)
        except ProcessLookupError:
            break
        try:
            os.waitpid(bomb, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.01)
    time.sleep(0.3)
    report(peak=peak, spawn=spawn, left=count())
""", _verify_fork_bomb, timeout=30, fresh=True)


def _verify_leftovers(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    if not execution.timed_out:
        return False, "the cell was expected to time out"
    after = ctx.run("import os, subprocess\n"
                    "report(procs=len([p for p in os.listdir('/proc') if p.isdigit()]),"
                    " spawn=attempt(subprocess.run, ['true'], timeout=5))")
    data = report_of(after)
    if data is None:
        return _missing(after)
    ok = data["procs"] <= 4 and data["spawn"] == "ok"
    how = f"the {execution.restarted} was restarted" if execution.restarted else "the kernel was interrupted"
    return ok, (f"{how}; the cell's processes are gone, new processes start" if ok else
                f"{how}, but {data['procs']} processes of the cell survive and hold the pids limit "
                f"(new process: {data['spawn']})")


attack("res_processes_outlive_cell", "resources",
       "processes forked by a timed-out cell are killed with it (pids freed)", r"""
    import os, time
    if os.fork() == 0:                 # fill the pids limit with sleeping processes...
        try:
            while True:
                try:
                    if os.fork() == 0:
                        time.sleep(3600)
                        os._exit(0)
                except OSError:
                    break
            time.sleep(3600)
        finally:
            os._exit(0)
    time.sleep(3600)                   # ...while the kernel itself waits politely: an interrupt stops it
""", _verify_leftovers, timeout=1, fresh=True)


def _verify_memory(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ok = data["huge"] == "MemoryError" and data["gradual"] == "MemoryError" and not execution.restarted
    return ok, (f"MemoryError (single: {data['huge']}, gradual after {data['mb']} MB); kernel kept"
                if ok else f"huge {data['huge']} gradual {data['gradual']} restarted {execution.restarted}")


attack("res_memory_bomb", "resources", "MemoryError (RLIMIT_AS) instead of an OOM kill", r"""
    held = []
    def gradual():
        while True:
            held.append(bytes(256 << 20))
    huge = attempt(bytearray, 10 ** 11)
    grad = attempt(gradual)
    mb = len(held) * 256
    held.clear()
    report(huge=huge, gradual=grad, mb=mb)
""", _verify_memory)


def _verify_oom(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    limit = ctx.probe["memory_mb"]
    if data is None:
        if execution.restarted:
            return True, f"the kernel was OOM-killed; the host restarted the {execution.restarted}"
        return _missing(execution)
    filled = data["filled"]
    ok = filled * data["mb"] <= limit
    return ok, (f"{filled} of {data['children']} x {data['mb']} MB children filled (limit {limit} MB); "
                f"exits {data['codes']}" if ok else f"{filled * data['mb']} MB resident > {limit} MB")


attack("res_memory_processes", "resources", "several processes together stay under the cgroup memory limit", r"""
    import subprocess, sys
    mb = 200
    child = f"b = bytearray({mb} << 20)\nprint('filled', flush=True)\nimport sys\nsys.stdin.read()"
    kids = [subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL) for _ in range(4)]
    lines = [k.stdout.readline().strip() for k in kids]      # "filled", or b"" when it was killed
    for k in kids:
        try:
            k.stdin.close()
        except OSError:
            pass
    codes = [k.wait(timeout=30) for k in kids]
    report(children=len(kids), mb=mb, filled=sum(l == b"filled" for l in lines), codes=codes)
""", _verify_oom, settings={"memory_mb": 512, "fsize_mb": 8}, timeout=60, fast=False)


def _verify_fsize(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    cap = ctx.probe["fsize_mb"]
    ok = data["stopped"] is not None and "EFBIG" in data["stopped"] and data["mb"] <= cap
    return ok, f"stopped at {data['mb']} MB ({data['stopped']}); RLIMIT_FSIZE {cap} MB"


attack("res_huge_file", "resources", "RLIMIT_FSIZE stops a huge file (EFBIG)", r"""
    import errno
    written, stopped = 0, None
    try:
        with open("/tmp/huge.bin", "wb") as fh:
            for _ in range(32):
                fh.write(b"\0" * (1 << 20))
                written += 1 << 20
    except OSError as exc:
        stopped = errno.errorcode.get(exc.errno, str(exc.errno))
    import os
    os.unlink("/tmp/huge.bin")
    report(mb=written >> 20, stopped=stopped)
""", _verify_fsize, settings={"memory_mb": 512, "fsize_mb": 8}, fast=False)


def _verify_tmpfs(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    caps = {"/tmp": ctx.probe["tmpfs_mb"], "/home/sandbox": ctx.probe["home_tmpfs_mb"], "/dev/shm": 64}
    bad = {d: v for d, v in data["fill"].items() if v["stopped"] not in ("ENOSPC", "EFBIG") or v["mb"] > caps[d]}
    alive = ctx.run("print(1+1)")  # while /tmp and $HOME are still full
    ok = not bad and alive.stdout.strip() == "2"
    return ok, ("; ".join(f"{d} full at {v['mb']} MB" for d, v in data["fill"].items())
                + ("; kernel answers while full" if ok else f"; PROBLEM {bad} answer {alive.output[:60]!r}"))


attack("res_tmpfs_fill", "resources", "scratch tmpfs fill stops at its cap (ENOSPC); kernel keeps working", r"""
    import errno
    fill = {}
    for d in ("/tmp", "/home/sandbox", "/dev/shm"):
        written, stopped = 0, None
        try:
            with open(d + "/fill.bin", "wb") as fh:
                while written < (1 << 30):
                    fh.write(b"\0" * (1 << 20))
                    written += 1 << 20
        except OSError as exc:
            stopped = errno.errorcode.get(exc.errno, str(exc.errno))
        fill[d] = {"mb": written >> 20, "stopped": stopped}
    report(fill=fill)
""", _verify_tmpfs, cleanup=r"""
    import os
    for d in ("/tmp", "/home/sandbox", "/dev/shm"):
        try:
            os.unlink(d + "/fill.bin")
        except OSError:
            pass
""")


def _verify_output_cap(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    limit = ctx.session.settings.output_limit_bytes
    sizes = {"stdout": len(execution.stdout.encode()), "stderr": len(execution.stderr.encode()),
             "display": len("\n".join(execution.display).encode())}
    big = {k: v for k, v in sizes.items() if v > limit + 512}
    ok = not big and execution.truncated
    return ok, (f"kept {max(sizes.values())} bytes of ~10 MB (cap {limit}), marked truncated" if ok
                else f"UNCAPPED: {big}, truncated={execution.truncated}")


attack("res_output_flood", "resources", "output capped at output_limit_bytes, marked truncated", r"""
    import sys
    for _ in range(10):
        print("x" * 1_000_000)
    sys.stderr.write("e" * 3_000_000)
""", _verify_output_cap)

attack("res_output_flood_unguarded", "resources",
       "host caps output even with the in-kernel guard removed", r"""
    import os, sys
    for stream in (sys.stdout, sys.stderr):
        hooks = getattr(stream, "_hooks", None)
        if hooks is not None:
            hooks.clear()                          # the REPL's own cap is gone
    for _ in range(10):
        sys.stdout.write("y" * 1_000_000)
        sys.stdout.flush()
    os.write(1, b"z" * 4_000_000)                  # straight to the container's stdout (Docker's capped log)
""", _verify_output_cap)

attack("res_display_flood", "resources", "rich display output capped like text", r"""
    from IPython.display import display
    for _ in range(4):
        display({"text/plain": "d" * 3_000_000}, raw=True)
""", _verify_output_cap)


def _verify_interrupted(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    if not execution.timed_out:
        return False, "the cell did not time out: " + _short(execution.output, 80)
    if execution.restarted:
        return True, f"timed out; the host restarted the {execution.restarted}"
    kept = ctx.run("print(kept_before_the_attack)")
    ok = kept.stdout.strip() == "41"
    return ok, ("timed out, interrupted; variables kept" if ok else "interrupted but state lost: "
                + _short(kept.output, 60))


attack("res_infinite_loop", "resources", "timeout -> interrupt; variables kept", r"""
    kept_before_the_attack = 41
    while True:
        pass
""", _verify_interrupted, timeout=1)

attack("res_long_sleep", "resources", "timeout -> interrupt", r"""
    import time
    kept_before_the_attack = 41
    time.sleep(3600)
""", _verify_interrupted, timeout=1)

attack("res_catastrophic_regex", "resources", "timeout -> interrupt, or kernel restart if it holds the GIL", r"""
    import re
    kept_before_the_attack = 41
    re.match(r"(a+)+$", "a" * 64 + "b")
""", _verify_interrupted, timeout=1)


def _verify_restarted(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    ok = execution.timed_out and execution.restarted is not None
    return ok, (f"ignored the interrupt; the host restarted the {execution.restarted}" if ok else
                f"timed_out={execution.timed_out} restarted={execution.restarted}")


attack("res_gil_hog", "resources", "a C loop holding the GIL ignores interrupts: kernel restarted", r"""
    import collections, itertools
    collections.deque(itertools.repeat(None), maxlen=0)   # never checks for signals
""", _verify_restarted, timeout=1, fast=False)


def _verify_threads(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    limit = ctx.probe["pids_limit"]
    ok = data["stopped"] is not None and data["threads"] <= limit and not execution.restarted
    return ok, f"{data['threads']} threads, then {data['stopped']} (pids limit {limit}); kernel kept"


attack("res_thread_bomb", "resources", "thread creation stops at the pids limit; kernel keeps answering", r"""
    import threading
    gate = threading.Event()
    threads, stopped = [], None
    try:
        for _ in range(5000):
            t = threading.Thread(target=gate.wait, daemon=True)
            t.start()
            threads.append(t)
    except RuntimeError as exc:
        stopped = str(exc)
    gate.set()
    for t in threads:
        t.join()
    report(threads=len(threads), stopped=stopped)
""", _verify_threads)


def _verify_fds(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ok = data["stopped"] == "EMFILE" and data["opened"] <= ctx.probe["nofile"]
    return ok, f"{data['opened']} files, then {data['stopped']} (nofile {ctx.probe['nofile']}); kernel kept"


attack("res_fd_exhaustion", "resources", "open files stop at RLIMIT_NOFILE (EMFILE); kernel keeps answering", r"""
    import errno
    held, stopped = [], None
    try:
        for _ in range(100000):
            held.append(open("/dev/null", "rb"))
    except OSError as exc:
        stopped = errno.errorcode.get(exc.errno)
    n = len(held)
    for f in held:
        f.close()
    report(opened=n, stopped=stopped)
""", _verify_fds)


def _verify_cpu(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    used = data["work"] / (data["rate"] * data["wall"])   # CPUs' worth of work done by all spinners
    quota = ctx.probe["cpus"]
    limit = data["quota"] / data["period"] if data["quota"] and data["period"] else None
    # The kernel enforces the cgroup limit; the spinners' measured share is shown, not judged (too noisy
    # on shared machines to be a reliable test on its own).
    ok = limit is not None and abs(limit - quota) < 0.01
    return ok, (f"cgroup CPU limit {limit if limit is None else round(limit, 2)} CPU (setting {quota}); "
                f"{data['workers']} spinners did ~{used:.1f} CPUs' worth of work")


attack("res_cpu_quota", "resources", "spinning processes share the CPU quota", r"""
    import os, struct, time
    def spin(seconds):
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            n += 1
        return n
    rate = spin(0.3) / 0.3                  # one process alone: iterations per CPU-second
    workers, wall = 4, 0.6
    r, w = os.pipe()
    kids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                os.write(w, struct.pack("<Q", spin(wall)))
            finally:
                os._exit(0)
        kids.append(pid)
    for pid in kids:
        os.waitpid(pid, 0)
    os.close(w)
    data = b""
    while len(data) < 8 * workers:
        chunk = os.read(r, 64)
        if not chunk:
            break
        data += chunk
    os.close(r)
    work = sum(struct.unpack("<%dQ" % (len(data) // 8), data))
    quota = period = None
    try:                                    # cgroup v2, then v1
        q, p = open("/sys/fs/cgroup/cpu.max").read().split()
        quota, period = (None if q == "max" else int(q)), int(p)
    except (OSError, ValueError):
        try:
            quota = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
            period = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
            quota = None if quota < 0 else quota
        except (OSError, ValueError):
            pass
    report(workers=workers, rate=rate, wall=wall, work=work, quota=quota, period=period)
""", _verify_cpu)


# --------------------------------------------------------------------------- bridge
_FRAMES = _indent(r"""
import json, socket, struct
def frame(obj):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body
def read_reply(sock):
    def exact(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data
    head = exact(4)
    if head is None:
        return None
    body = exact(struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)
def bridge(path="/rlm/bridge/llm.sock"):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    return s
def outcome(reply):
    if reply is None:
        return "closed"
    return "answered" if reply.get("ok") else "error:" + str(reply.get("kind"))
""")


def _verify_malformed(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    bad = {k: v for k, v in data["frames"].items() if v != "error:protocol"}
    ok = not bad and data["after"] == "answered" and data["llm_query"].startswith("echo")
    return ok, (f"{len(data['frames'])} malformed frames answered with protocol errors; connection kept"
                if ok else f"frames {bad}, after {data['after']}, llm_query {data['llm_query']}")


attack("bridge_malformed_frames", "bridge", "protocol error replies; the bridge keeps serving", _FRAMES + r"""
    s = bridge()
    frames = {}
    for label, body in [("invalid JSON", b"{not json"), ("invalid UTF-8", b"\xff\xfe\xfd"),
                        ("JSON array", b"[1, 2, 3]"), ("JSON null", b"null"), ("empty", b""),
                        ("wrong version", {"v": 99, "id": 1, "op": "llm_query", "prompt": "x"}),
                        ("no version", {"id": 2, "op": "llm_query", "prompt": "x"})]:
        s.sendall(frame(body))
        try:
            frames[label] = outcome(read_reply(s))
        except OSError as exc:
            frames[label] = type(exc).__name__
    s.sendall(frame({"v": 1, "id": 3, "op": "llm_query", "prompt": "still there?"}))
    after = outcome(read_reply(s))
    s.close()
    report(frames=frames, after=after, llm_query=llm_query("hello"))
""", _verify_malformed)


def _verify_deep_json(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ok = data["reply"] == "error:protocol" and data["llm_query"].startswith("echo")
    return ok, f"deeply nested frame: {data['reply']}; llm_query afterwards: {data['llm_query']}"


attack("bridge_deep_json", "bridge", "a deeply nested JSON frame gets a protocol error reply", _FRAMES + r"""
    s = bridge()
    s.settimeout(2)
    s.sendall(frame(b"[" * 200000 + b"]" * 200000))
    try:
        reply = outcome(read_reply(s))
    except OSError as exc:
        reply = "no reply (" + type(exc).__name__ + ")"
    s.close()
    report(reply=reply, llm_query=llm_query("hello"))
""", _verify_deep_json)


def _verify_truncated(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ok = (all(v in ("closed", "ConnectionResetError") for v in data["out"].values())
          and data["llm_query"].startswith("echo"))
    return ok, f"truncated frames: {data['out']}; llm_query afterwards: {data['llm_query']}"


attack("bridge_truncated_frames", "bridge", "truncated frames are dropped; the bridge keeps serving", _FRAMES + r"""
    out = {}
    for label, data in [("half a header", b"\x00\x00"), ("header only", struct.pack(">I", 100)),
                        ("half a body", struct.pack(">I", 1000) + b'{"v": 1, "op": "llm_query"')]:
        s = bridge()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        try:
            out[label] = outcome(read_reply(s))
        except OSError as exc:
            out[label] = type(exc).__name__
        s.close()
    report(out=out, llm_query=llm_query("hello"))
""", _verify_truncated)


def _verify_oversized(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    cap = ctx.probe["bridge_max_frame"]
    ok = (data["huge header"] in ("error:protocol", "closed", "ConnectionResetError", "BrokenPipeError")
          and data["huge body"] in ("error:protocol", "closed", "ConnectionResetError", "BrokenPipeError")
          and data["client"].startswith("SubCallError") and ctx.handler.largest_prompt < cap
          and data["llm_query"].startswith("echo"))
    return ok, (f"4 GiB header: {data['huge header']}; {cap + 1024} B body: {data['huge body']}; "
                f"client: {data['client']}; the handler never saw it")


attack("bridge_oversized_frames", "bridge", "frames over bridge_max_frame refused before buffering", _FRAMES + r"""
    cap = PROBE["bridge_max_frame"]
    res = {}
    s = bridge()
    s.sendall(struct.pack(">I", 0xFFFFFFFF))
    try:
        res["huge header"] = outcome(read_reply(s))
    except OSError as exc:
        res["huge header"] = type(exc).__name__
    s.close()
    s = bridge()
    body = json.dumps({"v": 1, "id": 1, "op": "llm_query", "prompt": "p" * (cap + 1024)}).encode()
    try:
        s.sendall(struct.pack(">I", len(body)) + body)
        res["huge body"] = outcome(read_reply(s))
    except OSError as exc:
        res["huge body"] = type(exc).__name__
    s.close()
    res["client"] = attempt(llm_query, "q" * (cap + 1024))
    res["llm_query"] = llm_query("hello")
    report(**res)
""", _verify_oversized)


def _verify_flood(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ok = (data["errors"] == 0 and data["answered"] == data["calls"] and data["batched"] == data["batch_size"]
          and ctx.handler.calls >= data["calls"])
    return ok, (f"{data['calls']} calls from {data['threads']} threads + a batch of {data['batch_size']} "
                f"answered in {data['seconds']:.1f} s" if ok else f"flood: {data}")


attack("bridge_flood", "bridge", "a flood of concurrent calls is served (or refused) cleanly", r"""
    import threading, time
    threads, per_thread = 16, 60
    answered, errors = [], []
    def worker():
        for i in range(per_thread):
            try:
                answered.append(llm_query(f"flood {i}"))
            except Exception as exc:
                errors.append(type(exc).__name__)
    t0 = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    batch = llm_query_batched([f"b{i}" for i in range(2000)])
    report(calls=threads * per_thread, threads=threads, answered=len(answered), errors=len(errors),
           batch_size=2000, batched=len(batch), seconds=time.monotonic() - t0)
""", _verify_flood, timeout=60)


def _verify_budget(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    budget = 5
    ok = (data["ok"] == budget and data["refused"] == data["calls"] - budget and ctx.handler.served == budget
          and "budget" in data["message"])
    return ok, (f"{data['ok']} served, {data['refused']} refused with SubCallError ('{data['message'][:40]}')"
                if ok else f"budget {budget}: {data}; handler served {ctx.handler.served}")


attack("bridge_past_budget", "bridge", "calls past the budget are refused as SubCallError", r"""
    ok = refused_calls = 0
    message = ""
    for i in range(40):
        try:
            llm_query(f"call {i}")
            ok += 1
        except SubCallError as exc:
            refused_calls += 1
            message = str(exc)
    report(calls=40, ok=ok, refused=refused_calls, message=message)
""", _verify_budget, budget=5)


def _measure_rss(ctx: CheckContext) -> None:
    ctx.notes["rss"] = host_rss_mb()


def _verify_rss(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    before, after = ctx.notes.get("rss"), host_rss_mb()
    if before is None or after is None:
        return True, "host memory not measurable here (no /proc)"
    grew = after - before
    ok = grew < 64
    return ok, (f"{data['connections']} connections x {data['mb_each']} MB of unfinished frames: host grew "
                f"{grew:.0f} MB")


attack("bridge_partial_frames", "bridge", "unfinished frames cannot pile up in host memory (< 64 MB)",
       r"""
    import socket, struct
    size = PROBE["bridge_max_frame"] - 1
    filler = b"x" * (size - 1)
    hoard = []
    for _ in range(24):
        s = socket.socket(socket.AF_UNIX)
        s.connect("/rlm/bridge/llm.sock")
        try:
            s.sendall(struct.pack(">I", size) + filler)   # one byte short of a complete frame
        except OSError:
            break
        hoard.append(s)
    report(connections=len(hoard), mb_each=size >> 20)
""", _verify_rss, prepare=_measure_rss, cleanup="""
    for s in hoard:
        s.close()
    hoard.clear()
""")


def _measure_fds(ctx: CheckContext) -> None:
    ctx.notes["fds"] = host_fd_count()


def _verify_fds_host(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    before, after = ctx.notes.get("fds"), host_fd_count()
    if before is None or after is None:
        return True, "host descriptors not measurable here (no /proc)"
    grew = after - before
    return grew <= 64, f"{data['connections']} idle connections held: host holds {grew} more descriptors"


attack("bridge_connection_hoard", "bridge", "idle connections cannot exhaust host descriptors (<= 64 held)",
       r"""
    import socket
    hoard, stopped = [], None
    try:
        for _ in range(PROBE["nofile"]):
            s = socket.socket(socket.AF_UNIX)
            s.connect("/rlm/bridge/llm.sock")
            hoard.append(s)
    except OSError as exc:
        stopped = type(exc).__name__
    report(connections=len(hoard), stopped=stopped)
""", _verify_fds_host, prepare=_measure_fds, cleanup="""
    for s in hoard:
        s.close()
    hoard.clear()
""")


def _verify_ctl(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    accepted = [o for o in data["tries"] if o not in ("closed", "BrokenPipeError", "ConnectionResetError")]
    if accepted:
        return False, f"CONTROL SOCKET ACCEPTED A SECOND CLIENT: {accepted[:3]}"
    hang = ctx.run("while True:\n    pass", timeout=1)
    after = ctx.run("print(1+1)")
    ok = hang.timed_out and after.stdout.strip() == "2" and not after.state_lost and not after.notice
    return ok, (f"{len(data['tries'])} connections closed at once, forged events ignored; a hang is still "
                f"interrupted ({hang.restarted or 'interrupt'})" if ok else
                f"after forged events: hang timed_out={hang.timed_out}, next cell {after.output[:60]!r} "
                f"notice={after.notice}")


attack("bridge_ctl_second_client", "bridge", "ctl.sock refuses a second client; the host keeps control",
       _FRAMES + r"""
    tries = []
    for i in range(20):
        try:
            s = bridge("/rlm/bridge/ctl.sock")
            s.sendall(frame({"v": 1, "event": "kernel_exit", "code": -9}) + frame({"v": 1, "event": "hello"})
                      + frame({"v": 1, "event": "kernel_ready", "generation": 99}))
            data = s.recv(100)
            tries.append("closed" if data == b"" else "got " + repr(data[:30]))
            s.close()
        except OSError as exc:
            tries.append(type(exc).__name__)
    report(tries=tries)
""", _verify_ctl)


def _verify_frozen_supervisor(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    ok = execution.timed_out and not execution.state_lost
    return ok, (f"SIGSTOP to pid 1 ignored; the host interrupted the cell after {execution.duration_s:.1f} s, "
                "variables kept" if ok else f"timed_out={execution.timed_out} restarted={execution.restarted}")


attack("bridge_frozen_supervisor", "bridge", "a cell cannot freeze the supervisor; the host still interrupts", r"""
    import os, signal
    os.kill(os.getppid(), signal.SIGSTOP)   # the supervisor no longer obeys interrupt/restart
    while True:
        pass
""", _verify_frozen_supervisor, timeout=1, settings={"start_timeout_s": 5.0}, fast=False)


def _verify_escape_prompt(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    sent = data["prompt"]
    got = [p for p in ctx.handler.prompts if "pwned" in p]
    if not got:
        return False, "the handler never received the prompt"
    clean = sanitize_for_terminal(got[-1])
    ok = got[-1] == sent and not _CONTROL_CHARS.search(clean) and "tell me" in clean
    return ok, (f"handler got the {len(sent)} characters unchanged (data); sanitised for the terminal: {clean!r}"
                if ok else f"received {got[-1]!r}, sanitised {clean!r}")


attack("bridge_escape_prompt", "bridge", "escape sequences reach the handler as data; sanitised to print",
       r"""
    E = "\x1b"
    prompt = (E + "]0;pwned title\x07" + E + "[2J" + E + "[31mtell me\r" + E + "[1A\x9b31m" + E + "P+q\x9c"
              + E + "]52;c;cHduZWQ=\x07" + "\x08\x08\x00 everything")
    llm_query(prompt)
    report(prompt=prompt)
""", _verify_escape_prompt)


# --------------------------------------------------------------------------- the answer
def _verify_final_cap(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    limit = ctx.session.settings.final_limit_chars
    final = execution.final or ""
    ok = 0 < len(final) <= limit + 200 and "truncated" in final[-100:]
    return ok, f"FINAL of 20M characters kept as {len(final)} (final_limit_chars {limit})"


attack("answer_huge_final", "answer", "a huge FINAL is cut at final_limit_chars", r"""
    FINAL("A" * 20_000_000)
""", _verify_final_cap)


def _verify_forged_state(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    limit = ctx.session.settings.final_limit_chars
    final = execution.final or ""
    ok = len(final) <= limit + 200
    return ok, f"forged state message: final of {len(final)} characters reached the host (limit {limit})"


attack("answer_forged_final", "answer", "the host caps FINAL itself (a forged state message)", r"""
    from IPython.display import publish_display_data
    publish_display_data({"application/vnd.rlm.state+json": {"final": "F" * 5_000_000}})
""", _verify_forged_state)


def _verify_state_flood(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    size = len(json.dumps(execution.meta))
    limit = ctx.session.settings.output_limit_bytes
    ok = size <= limit
    return ok, f"forged state keys: {len(execution.meta)} keys, {size} bytes kept on the host (cap {limit})"


attack("answer_state_flood", "answer", "forged state messages cannot grow host memory (meta capped)", r"""
    from IPython.display import publish_display_data
    for i in range(12):
        publish_display_data({"application/vnd.rlm.state+json": {f"key{i}": "M" * 2_000_000}})
""", _verify_state_flood)


def _verify_error_cap(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    limit = ctx.session.settings.output_limit_bytes
    size = len((execution.error or "").encode())
    ok = execution.error_name == "ValueError" and size <= limit + 1024
    return ok, f"exception message of 5 MB: error text of {size} bytes reached the host (cap {limit})"


attack("answer_huge_error", "answer", "a huge exception message is capped like output", r"""
    raise ValueError("E" * 5_000_000)
""", _verify_error_cap)


def _verify_ansi_output(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    raw = execution.output
    clean = sanitize_for_terminal(raw)
    ok = "\x1b" in raw and not _CONTROL_CHARS.search(clean) and all(w in clean for w in ("red", "bell", "boom"))
    return ok, (f"{sum(raw.count(c) for c in chr(27) + chr(7) + chr(13) + chr(0x9b))} control characters "
                f"arrive as data; none left after sanitize_for_terminal" if ok else f"sanitised: {clean[:80]!r}")


attack("answer_ansi_output", "answer", "escape sequences in output/errors are removed before printing", r"""
    import sys
    from IPython.display import display
    E = "\x1b"
    print(E + "[2J" + E + "[31mred" + E + "]0;pwned title\x07 over\rwrite \x9b31m" + E + "P1;2|x" + E + "\\")
    sys.stderr.write(E + "[1;1H\x08\x08\x07bell\n")
    display({"text/plain": E + "]52;c;Y2xpcGJvYXJk\x07clip"}, raw=True)
    raise RuntimeError(E + "[41mboom" + E + "]8;;http://evil.example\x07link" + E + "]8;;\x07")
""", _verify_ansi_output)


def _verify_ansi_final(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    final = execution.final or ""
    clean = sanitize_for_terminal(final)
    ok = "\x1b" in final and not _CONTROL_CHARS.search(clean) and "answer 42" in clean
    return ok, f"FINAL with escapes sanitised to {clean!r}"


attack("answer_ansi_final", "answer", "escape sequences in FINAL are removed before printing", r"""
    FINAL("\x1b]0;pwned\x07\x1b[2J\x1b[1;1Hanswer 42\r\x1b[1A\x1b[Kfake line\x9b2J")
""", _verify_ansi_final)


def _verify_final_var_missing(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    ok = (execution.error_name == "NameError" and execution.final is None
          and "no_such_variable" in (execution.error or ""))
    return ok, f"error as data: {execution.error_name}; final {execution.final!r}"


attack("answer_final_var_missing", "answer", "FINAL_VAR of a missing variable: NameError as data, no answer",
       r"""
    FINAL_VAR("no_such_variable")
""", _verify_final_var_missing)
