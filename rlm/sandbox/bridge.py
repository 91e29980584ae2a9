"""The host end of a session's two Unix sockets, both in the read-only bridge folder.

* ``ctl.sock`` (``protocol.CONTROL_SOCKET_NAME``): the in-container supervisor connects once per container start; it
  reports kernel life events and takes ``interrupt`` / ``restart`` commands.  Only the
  first connection of each container start is accepted as the supervisor.
* ``llm.sock`` (``protocol.BRIDGE_SOCKET_NAME``): the REPL's ``llm_query`` family.  Each request frame is handed to the
  session's ``handler`` on a worker thread; its reply (or a refusal) goes back on the same
  connection.  Malformed frames get an error reply and the server keeps serving; an
  oversized frame gets an error reply and that connection is closed.

Whether the cell is waiting on a model is decided here, on the host: a request counts from the
moment its frame is complete until its reply is sent (a frame's own ``"waiting"`` field is
ignored: anything in the sandbox can forge it).  That time (``waited_seconds``) is model time,
which the session does not count toward the cell's code timeout, and it is bounded: a request
the handler gives a deadline (``handler.deadline_for(request)``) is answered with a time-out
error when that deadline passes, whatever the handler is still doing, so no request extends a
cell past its deadline.  ``cancel_in_flight`` cancels what the handler is still serving.

What a session may make the host spend is bounded: frames larger than ``max_frame`` are refused
from their length prefix (nothing of the body is parsed), and each session has a token bucket
of frames (new connections count as frames) and of bytes read: past it, the server stops
reading that session's sockets until the bucket refills, so a flood costs the host a little
time, not CPU.

Peers are checked with SO_PEERCRED: only the sandbox user (and this process's own user)
may connect.  Nothing received is ever unpickled or evaluated.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import select
import selectors
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Callable

from rlm.errors import BridgeError
from rlm.sandbox import protocol
from rlm.sandbox.protocol import Event, ReplyKind

log = logging.getLogger(__name__)

Handler = Callable[[dict], dict]
"""Takes a request (``op`` and its fields) and returns the reply's fields; raises
``BridgeRefusal`` to send a clean refusal the REPL turns into an exception."""


class BridgeRefusal(Exception):
    """A request the host will not serve (disabled, over budget, bad arguments)."""


class _Bucket:
    """A token bucket: ``rate`` tokens a second, up to ``burst``; may go negative (debt)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self._at = time.monotonic()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self, n: float) -> None:
        self._refill(time.monotonic())
        self.tokens -= n

    def wait(self) -> float:
        """Seconds until at least one token is there (0: now)."""
        self._refill(time.monotonic())
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    @property
    def level(self) -> float:
        self._refill(time.monotonic())
        return self.tokens


class _Workers:
    """A fixed set of daemon threads serving requests in order of arrival.

    Daemon threads, unlike ``ThreadPoolExecutor``'s: a handler still blocked when the run is
    over (a child RLM, a model request that cannot be cancelled) must not keep the process
    alive after its answer.  ``shutdown`` drops what has not started."""

    def __init__(self, count: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., None], tuple[object, ...]] | None] = queue.SimpleQueue()
        self._count, self._name = count, name
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the bridge is closed")
            if len(self._threads) < self._count:  # started as needed, up to count
                thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._queue.put((fn, args))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._closed:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - a worker survives whatever a request does
                log.debug("bridge worker error", exc_info=True)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)


class _WaitClock:
    """Total time during which at least one request was in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0
        self._since = 0.0
        self._total = 0.0

    def begin(self) -> None:
        with self._lock:
            if self.active == 0:
                self._since = time.monotonic()
            self.active += 1

    def end(self) -> None:
        with self._lock:
            self.active -= 1
            if self.active == 0:
                self._total += time.monotonic() - self._since

    def seconds(self) -> float:
        with self._lock:
            return self._total + (time.monotonic() - self._since if self.active else 0.0)


_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]+")
_HOST_PORT = re.compile(r"\b(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:]+\]|localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
                        r":\d{1,5}\b")
_MODEL_LIST = re.compile(r"(?:it offers|offered models?|available models?|models? available)\s*:[^;\n]*",
                         re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` without the host's URLs, addresses (host:port) and model lists: for messages the
    model (inside the sandbox) reads."""
    text = _URL.sub("<model server>", text)
    text = _HOST_PORT.sub("<host>", text)
    return _MODEL_LIST.sub("its model list is not shown", text)


def _no_handler(request: dict) -> dict:
    raise BridgeRefusal("sub-calls are not available in this session (no model is attached)")


class _Request:
    """One request in flight: answered once, by the handler or by its deadline, whichever is first."""

    def __init__(self, conn: "_Conn", request_id: object, deadline_s: float | None) -> None:
        self.conn = conn
        self.id = request_id
        self.deadline_s = deadline_s
        self.expires = None if deadline_s is None else time.monotonic() + deadline_s
        self.done = False


class _Conn:
    def __init__(self, sock: socket.socket, max_frame: int) -> None:
        self.sock = sock
        self.reader = protocol.FrameReader(max_frame)
        self.lock = threading.Lock()
        self.closed = False
        self.partial_since: float | None = None

    def send(self, message: dict, timeout: float = 60.0) -> None:
        """Write a whole frame on the non-blocking socket, waiting for room up to ``timeout``.

        A peer that does not read is cut off (shutdown), so it sees EOF instead of hanging."""
        data = memoryview(protocol.encode(message))
        deadline = time.monotonic() + timeout
        with self.lock:
            if self.closed:
                return
            try:
                while data:
                    try:
                        sent = self.sock.send(data)
                    except BlockingIOError:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or not select.select([], [self.sock], [], remaining)[1]:
                            raise TimeoutError("peer does not read") from None
                        continue
                    data = data[sent:]
            except OSError:
                self.closed = True
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


MAX_CONNECTIONS = 32               # open llm.sock connections per session
MAX_BUFFERED = 32 * 1024 * 1024    # bytes of unfinished frames held for a session
FRAME_DEADLINE_S = 30.0            # an unfinished frame older than this drops its connection
FRAMES_PER_S = 200.0               # per session: frames (and new connections) a second, sustained ...
FRAME_BURST = 400.0                # ... and in a burst
BYTES_PER_S = 8.0 * 1024 * 1024    # per session: bytes read a second, sustained ...
BYTE_BURST = 16.0 * 1024 * 1024    # ... and in a burst
READ_CHUNK = 1 << 20               # most bytes read from a socket at once
EXPIRED_SEND_S = 1.0               # the IO thread waits at most this long to send a time-out reply


class BridgeServer:
    def __init__(self, folder: Path, *, allowed_uids: set[int], on_control: Callable[[dict], None],
                 handler: Handler | None = None, max_frame: int = protocol.DEFAULT_MAX_FRAME,
                 workers: int = 16, frames_per_s: float = FRAMES_PER_S, frame_burst: float = FRAME_BURST,
                 bytes_per_s: float = BYTES_PER_S, byte_burst: float = BYTE_BURST) -> None:
        self.folder = folder
        self.allowed_uids = allowed_uids
        self.on_control = on_control
        self.handler: Handler = handler or _no_handler
        self.max_frame = max_frame
        self._pool = _Workers(workers, "rlm-bridge")
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._control: _Conn | None = None
        self._control_open = True   # a new supervisor may connect
        self._conns: set[_Conn] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._waits = _WaitClock()
        self._requests: set[_Request] = set()
        self._frames = _Bucket(frames_per_s, frame_burst)
        self._bytes = _Bucket(bytes_per_s, byte_burst)
        self._paused: list[tuple[socket.socket, object]] = []  # not read until the buckets refill
        self._resume_at = 0.0
        self.throttled = 0  # times this session's sockets were paused by the rate limit
        self.ctl_listener = self._listen(protocol.CONTROL_SOCKET_NAME)
        self.llm_listener = self._listen(protocol.BRIDGE_SOCKET_NAME)

    def _listen(self, name: str) -> socket.socket:
        path = self.folder / name
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o666)  # the sandbox user must be able to connect; the folder is read-only to it
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise BridgeError(f"cannot serve {path}: {exc}") from exc
        sock.setblocking(False)
        return sock

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._selector.register(self.ctl_listener, selectors.EVENT_READ, "ctl-accept")
        self._selector.register(self.llm_listener, selectors.EVENT_READ, "llm-accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, name="rlm-bridge-io", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._requests.clear()
        self._pool.shutdown()
        for sock in (self.ctl_listener, self.llm_listener, self._wake_r, self._wake_w):
            sock.close()
        with self._lock:
            conns = list(self._conns) + ([self._control] if self._control else [])
        for conn in conns:
            conn.closed = True
            conn.sock.close()
        self._selector.close()

    def expect_new_supervisor(self) -> None:
        """Forget the current supervisor (its container is being replaced) and accept the next one."""
        with self._lock:
            old, self._control, self._control_open = self._control, None, True
        if old is not None:
            old.closed = True
            try:
                old.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- what the cell waits on ----------------------------------------------------------
    def waited_seconds(self) -> float:
        """Seconds so far during which the cell's own thread waited on a request (all cells)."""
        return self._waits.seconds()

    @property
    def waiting(self) -> bool:
        """A request is in flight now (decided here: what the frame says about itself is ignored)."""
        return self._waits.active > 0

    @property
    def in_flight(self) -> int:
        """Requests received and not yet answered."""
        with self._lock:
            return len(self._requests)

    def cancel_in_flight(self) -> None:
        """The cell was abandoned: cancel what the handler still serves (if it can cancel)."""
        cancel = getattr(self.handler, "cancel", None)
        if callable(cancel) and self.in_flight:
            cancel()

    def send_control(self, command: str) -> bool:
        """Send a command to the supervisor; False when none is connected."""
        conn = self._control
        if conn is None or conn.closed:
            return False
        conn.send({"cmd": command})
        return not conn.closed

    # -- IO loop -------------------------------------------------------------------------
    def _peer_ok(self, sock: socket.socket) -> bool:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid in self.allowed_uids

    def _loop(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select(self._next_timeout()):
                tag = key.data
                if tag == "wake":
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                    if self._stopping:
                        return
                    continue
                try:
                    if tag == "ctl-accept":
                        self._accept_control()
                    elif tag == "llm-accept":
                        self._accept_llm()
                    elif isinstance(tag, tuple):
                        self._read(*tag)
                except Exception:  # noqa: BLE001 - the bridge must keep serving whatever a peer does
                    log.exception("bridge error")
            try:
                self._expire()
                self._resume()
            except Exception:  # noqa: BLE001
                log.exception("bridge error")

    def _next_timeout(self) -> float | None:
        """Seconds until the next deadline or the end of a pause (None: nothing to wait for)."""
        now = time.monotonic()
        with self._lock:
            times = [r.expires for r in self._requests if r.expires is not None]
        if self._paused:
            times.append(self._resume_at)
        return max(0.0, min(times) - now) if times else None

    # -- the rate limit ------------------------------------------------------------------
    def _over_budget(self) -> bool:
        return self._frames.level < 1 or self._bytes.level < 1

    def _pause(self, sock: socket.socket, tag: object) -> None:
        """Stop reading ``sock`` until the buckets refill (the peer's writes block meanwhile)."""
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            return
        if not self._paused:
            self.throttled += 1
        self._paused.append((sock, tag))
        self._resume_at = time.monotonic() + max(self._frames.wait(), self._bytes.wait(), 0.001)

    def _resume(self) -> None:
        if not self._paused or time.monotonic() < self._resume_at:
            return
        if self._over_budget():
            self._resume_at = time.monotonic() + max(self._frames.wait(), self._bytes.wait(), 0.001)
            return
        paused, self._paused = self._paused, []
        for sock, tag in paused:
            if sock.fileno() < 0 or (isinstance(tag, tuple) and tag[1].closed):
                continue
            try:
                self._selector.register(sock, selectors.EVENT_READ, tag)
            except (KeyError, ValueError, OSError):
                pass

    # -- deadlines -----------------------------------------------------------------------
    def _expire(self) -> None:
        """Answer the requests whose deadline passed with a time-out error (the handler's late
        reply is dropped)."""
        now = time.monotonic()
        with self._lock:
            late = [r for r in self._requests if r.expires is not None and r.expires <= now]
        for request in late:
            if self._finish(request):
                request.conn.send(protocol.error_reply(
                    request.id, f"the sub-call timed out after {request.deadline_s:g} s and was abandoned "
                                "(sub_call_timeout_s)", kind=ReplyKind.REFUSED), timeout=EXPIRED_SEND_S)

    def _accept_control(self) -> None:
        sock, _ = self.ctl_listener.accept()
        with self._lock:
            accept = self._control_open and self._peer_ok(sock)
            if accept:
                self._control_open = False
                self._control = _Conn(sock, 1 << 20)
        if not accept:
            sock.close()
            return
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, ("ctl", self._control))

    def _accept_llm(self) -> None:
        if self._over_budget():  # a connection costs a frame: past the rate, new ones wait in the backlog
            self._pause(self.llm_listener, "llm-accept")
            return
        self._frames.take(1)
        sock, _ = self.llm_listener.accept()
        with self._lock:
            full = len(self._conns) >= MAX_CONNECTIONS
        if full or not self._peer_ok(sock):
            sock.close()
            return
        sock.setblocking(False)
        conn = _Conn(sock, self.max_frame)
        with self._lock:
            self._conns.add(conn)
        self._selector.register(sock, selectors.EVENT_READ, ("llm", conn))

    def _drop(self, conn: _Conn) -> None:
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        with self._lock:
            self._conns.discard(conn)
        conn.closed = True
        conn.sock.close()

    def _read(self, kind: str, conn: _Conn) -> None:
        llm = kind == "llm"
        if llm and self._over_budget():
            self._pause(conn.sock, (kind, conn))
            return
        try:
            data = conn.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if llm:
            self._bytes.take(len(data))
        if not data:
            self._drop(conn)
            if kind == "ctl" and conn is self._control:
                self.on_control({"event": Event.CONTROL_CLOSED})
            return
        try:
            messages = conn.reader.feed(data)
            if llm:
                self._frames.take(len(messages))
                self._check_buffers(conn)
        except protocol.ProtocolError as exc:
            conn.send(protocol.error_reply(None, str(exc), kind=ReplyKind.PROTOCOL))
            self._drop(conn)
            return
        for message in messages:
            if kind == "ctl":
                if not isinstance(message, protocol.ProtocolError):
                    self.on_control(message)
            elif isinstance(message, protocol.ProtocolError):
                conn.send(protocol.error_reply(None, str(message), kind=ReplyKind.PROTOCOL))
            else:
                self._submit(conn, message)

    def _check_buffers(self, conn: _Conn) -> None:
        """Bound what unfinished frames may hold: per session in bytes, and in time."""
        now = time.monotonic()
        conn.partial_since = (conn.partial_since or now) if conn.reader.pending else None
        with self._lock:
            total = sum(c.reader.pending for c in self._conns)
            stale = [c for c in self._conns if c is not conn and c.partial_since
                     and now - c.partial_since > FRAME_DEADLINE_S]
        for old in stale:
            old.send(protocol.error_reply(None, "unfinished frame timed out", kind=ReplyKind.PROTOCOL))
            self._drop(old)
        if total > MAX_BUFFERED:
            raise protocol.ProtocolError(f"more than {MAX_BUFFERED} bytes of unfinished frames in this session")

    def _deadline(self, request: dict) -> float | None:
        deadline_for = getattr(self.handler, "deadline_for", None)
        if not callable(deadline_for):
            return None
        try:
            value = deadline_for(request)
        except Exception:  # noqa: BLE001 - a bad request gets its refusal from the handler
            return None
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    def _submit(self, conn: _Conn, request: dict) -> None:
        entry = _Request(conn, request.get("id"), self._deadline(request))
        with self._lock:
            self._requests.add(entry)
        self._waits.begin()
        try:
            self._pool.submit(self._serve, entry, request)
        except RuntimeError:  # the pool is shut down: the server is closing
            self._finish(entry)
            return
        if entry.expires is not None:
            self._wake_loop()  # the IO loop must time this deadline

    def _wake_loop(self) -> None:
        if threading.current_thread() is self._thread:
            return  # the loop computes its timeout after this round anyway
        try:
            self._wake_w.send(b"d")
        except OSError:
            pass

    def _finish(self, entry: _Request) -> bool:
        """Mark ``entry`` answered; False when it was answered already (by its deadline)."""
        with self._lock:
            if entry.done:
                return False
            entry.done = True
            self._requests.discard(entry)
        self._waits.end()
        return True

    def _serve(self, entry: _Request, request: dict) -> None:
        reply: dict | None = None
        try:
            reply = self._answer(request)
        finally:
            if self._finish(entry) and reply is not None:
                entry.conn.send(reply)

    def _answer(self, request: dict) -> dict:
        request_id = request.get("id")
        try:
            fields = self.handler(request)
            reply = protocol.ok_reply(request_id, **fields)
        except BridgeRefusal as exc:
            reply = protocol.error_reply(request_id, str(exc), kind=ReplyKind.REFUSED)
        except Exception as exc:  # noqa: BLE001 - a failing handler answers with an error, never kills the bridge
            if self._stopping:  # the run is over: whatever the handler met, nobody waits for it
                log.debug("bridge handler failed after the bridge closed", exc_info=True)
            else:  # one line; the traceback only with debug logging (--debug)
                log.error("bridge handler failed: %s: %s", exc.__class__.__name__, exc)
                log.debug("bridge handler traceback", exc_info=True)
            reply = protocol.error_reply(request_id, redact(f"host error: {exc.__class__.__name__}: {exc}"))
        frame_size = len(protocol.encode(reply))
        if frame_size > protocol.REPLY_MAX_FRAME:
            reply = protocol.error_reply(request_id, f"reply of {frame_size} bytes is too large to send")
        return reply
