"""Host-side canaries: counting HTTP/Unix listeners, a secret file, a context file, canary variables."""

from __future__ import annotations

import hashlib
import http.server
import os
import secrets
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, TypeVar

from rlm.sandbox import runtime as runtimes
from rlm.sandbox.session import SandboxSession


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
    for prev, line in zip(lines, lines[1:], strict=False):
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


_T = TypeVar("_T")


def _started(value: "_T | None") -> "_T":
    """A part that ``Canaries.start()`` sets up."""
    if value is None:
        raise RuntimeError("the canaries are not started: call start() first")
    return value


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
            "http_port": _started(self.http).server_address[1],
            "any_port": _started(self.http_any).server_address[1],
            "host_addrs": self.host_addrs,
            "unix_socket": str(_started(self.dir) / "canary.sock"),
            "abstract_name": self.abstract_name,
            "secret_path": str(self.secret_path),
            "secret_dir": str(self.dir),
            "context_path": f"/rlm/context/{_started(self.context_path).name}",
            "sibling": list(self.sibling) if self.sibling else None,
            "uid": int(s.user.split(":")[0]), "gid": int(s.user.split(":")[-1]),
            "pids_limit": s.pids_limit, "nofile": s.nofile, "fsize_mb": s.fsize_mb, "tmpfs_mb": s.tmpfs_mb,
            "home_tmpfs_mb": s.home_tmpfs_mb, "memory_mb": s.memory_mb, "cpus": s.cpus,
            "bridge_max_frame": s.bridge_max_frame,
            "nproc": runtimes.limits(runtimes.resolve(s.runtime), s.pids_limit, s.memory_mb).nproc,
            "runtime": runtimes.display_name(runtimes.resolve(s.runtime)),
            "gvisor": runtimes.is_gvisor(runtimes.resolve(s.runtime)),
        }

    # -- checks ----------------------------------------------------------------------------
    def foreign_connections(self) -> dict[str, int]:
        counts = {"http 127.0.0.1": _started(self.http).accepted,
                  "http 0.0.0.0": _started(self.http_any).accepted - self._own_probes,
                  "unix socket": _started(self.unix).accepted, "abstract socket": _started(self.abstract).accepted}
        return {k: v for k, v in counts.items() if v}

    def secret_intact(self) -> bool:
        return (_file_state(_started(self.secret_path)) == self._initial["secret"]
                and sorted(os.listdir(_started(self.dir))) == self._initial["listing"])

    def context_intact(self) -> bool:
        return _file_state(_started(self.context_path)) == self._initial["context"]

    def host_probe(self) -> bool:
        """The host can still reach its own canary (counted apart from the sandbox's attempts)."""
        self._own_probes += 1
        try:
            with socket.create_connection(("127.0.0.1", _started(self.http_any).server_address[1]), timeout=5) as sock:
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
