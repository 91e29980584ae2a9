"""Host-side Jupyter client for the sandboxed kernel: the only module importing jupyter_client.

It speaks the Jupyter wire protocol over ZeroMQ ``ipc`` sockets with jupyter_client's
``Session`` for signing and building requests, but reads replies with a lean path of its
own (signature check + ``json.loads``, no date parsing on every message), and it caps
output while it streams.  It never unpickles anything.

What a kernel can make the host hold is bounded per socket: the host connects only to the
kernel's shell and iopub sockets (never control, stdin or heartbeat: interrupts and restarts
go through the supervisor), and each gets ZMQ_MAXMSGSIZE (a bigger frame makes ZeroMQ drop
the connection, which reconnects) and a small ZMQ_RCVHWM (a full queue drops the kernel's
newer iopub messages).  Queued messages a cell left behind (a thread that keeps publishing
after its cell returned) are dropped before the next cell, unparsed.  Not bounded: a single
message of many frames (libzmq assembles a multipart message whole before the reader sees
it, and MAXMSGSIZE applies per frame); see docs/security.md.
"""

from __future__ import annotations

import enum
import hmac
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import zmq
from jupyter_client.session import Session

from rlm.errors import SandboxError
from rlm.sandbox.execution import OutputCap
from rlm.sandbox.protocol import STATE_MIME
from rlm.sandbox.rundir import SocketPath

DELIM = b"<IDS|MSG>"

MAX_MESSAGE_BYTES = 16 * 1024 * 1024   # per frame, on shell and iopub (outputs are capped at 1 MiB by default)
IOPUB_RCVHWM = 8                        # messages queued on the host: 8 x 16 MiB at most
SHELL_RCVHWM = 4                        # the shell carries one reply per request
MAX_HEADER_BYTES = 64 * 1024            # a parent header larger than this is not the kernel's own


class Outcome(enum.Enum):
    COMPLETED = "completed"
    TIMEOUT = "timeout"
    WOKEN = "woken"  # something happened on the control channel (kernel death, container loss)


@dataclass
class CellOutput:
    """Output of one cell gathered from iopub and shell, bounded by ``OutputCap``."""

    limit: int
    stdout: OutputCap = field(init=False)
    stderr: OutputCap = field(init=False)
    display: OutputCap = field(init=False)
    error_name: str | None = None
    error: str | None = None
    state: dict = field(default_factory=dict)
    got_reply: bool = False
    got_idle: bool = False
    lost_output: bool = False   # an output message over the host's size cap was dropped


    def __post_init__(self) -> None:
        self.stdout = OutputCap(self.limit)
        self.stderr = OutputCap(self.limit)
        self.display = OutputCap(self.limit)

    @property
    def done(self) -> bool:
        # After a dropped oversized message the idle status may be lost too: the reply suffices.
        return self.got_reply and (self.got_idle or self.lost_output)


class KernelClient:
    """Connection to one kernel generation (a restarted kernel gets a new client)."""

    def __init__(self, connection: dict, host_run_dir: Path, allowed_uids: set[int],
                 max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.session = Session(key=connection["key"].encode(), signature_scheme=connection["signature_scheme"],
                               username="rlm")
        self._key = connection["key"].encode()
        self._paths: list[SocketPath] = []
        self.context = zmq.Context()
        try:
            self.shell = self._connect(zmq.DEALER, host_run_dir, connection["shell_port"], allowed_uids,
                                       max_message_bytes, SHELL_RCVHWM)
            self.iopub = self._connect(zmq.SUB, host_run_dir, connection["iopub_port"], allowed_uids,
                                       max_message_bytes, IOPUB_RCVHWM)
            self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
            self.iopub_monitor = self.iopub.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        except Exception:
            self.close()
            raise

    def _connect(self, kind: int, run_dir: Path, port: int, allowed: set[int], max_bytes: int,
                 rcvhwm: int) -> zmq.Socket:
        path = SocketPath(run_dir / f"k-{port}", allowed)
        self._paths.append(path)
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
        sock.connect(f"ipc://{path.path}")
        return sock

    def close(self) -> None:
        if hasattr(self, "iopub_monitor"):
            self.iopub.disable_monitor()
            self.iopub_monitor.close(linger=0)
        for sock in ("shell", "iopub"):
            if hasattr(self, sock):
                getattr(self, sock).close(linger=0)
        self.context.term()
        for path in self._paths:
            path.close()
        self._paths.clear()

    # -- messages ------------------------------------------------------------------------
    def _send(self, sock: zmq.Socket, msg_type: str, content: dict) -> str:
        msg = self.session.msg(msg_type, content)
        self.session.send(sock, msg)
        return msg["header"]["msg_id"]

    def _recv(self, sock: zmq.Socket, msg_id: str | None = None) -> dict | None:
        """Read one message; None when it is unsigned, badly signed or malformed, or (with ``msg_id``)
        answers another request: those are dropped before their signature or content is looked at."""
        parts = sock.recv_multipart(copy=True)
        try:
            at = parts.index(DELIM)
        except ValueError:
            return None
        body = parts[at + 1: at + 6]
        del parts
        if len(body) < 5:
            return None
        signature, header, parent, _metadata, content = body
        if msg_id is not None and not _answers(parent, msg_id):
            return None
        mac = hmac.new(self._key, digestmod="sha256")
        for part in (header, parent, _metadata, content):
            mac.update(part)
        if not hmac.compare_digest(mac.hexdigest().encode(), signature):
            return None
        try:
            return {"header": json.loads(header), "parent_header": json.loads(parent),
                    "content": json.loads(content)}
        except ValueError:
            return None

    def drain(self) -> int:
        """Drop the messages queued on iopub and shell (left by an earlier cell); how many.  Bounded (a
        thread may keep publishing): what comes later is dropped unparsed by ``collect``."""
        dropped = 0
        for sock in (self.iopub, self.shell):
            for _ in range(4 * IOPUB_RCVHWM):
                if not cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                    break
                sock.recv_multipart(copy=False)
                dropped += 1
        try:
            while True:
                self.iopub_monitor.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            pass
        return dropped

    # -- readiness -----------------------------------------------------------------------
    def wait_ready(self, timeout: float, iopub_within: float | None = None) -> bool:
        """Confirm both shell and iopub work: kernel_info until its reply and an iopub status arrive.
        With ``iopub_within``, a kernel whose shell answered but whose iopub stays silent for that long
        (a thread flooding it with frames over the size limit) is accepted: returns False."""
        deadline = time.monotonic() + timeout
        replied_at: float | None = None
        poller = zmq.Poller()
        poller.register(self.shell, zmq.POLLIN)
        poller.register(self.iopub, zmq.POLLIN)
        while True:
            msg_id = self._send(self.shell, "kernel_info_request", {})
            got_reply = got_iopub = False
            resend_at = time.monotonic() + 0.25
            while not (got_reply and got_iopub):
                now = time.monotonic()
                if now >= deadline:
                    raise SandboxError("the sandbox kernel did not answer in time")
                if now >= resend_at and got_reply:
                    break  # iopub subscription not established yet: ask again
                wait_until = min(deadline, resend_at) if got_reply else deadline
                events = dict(poller.poll(max(1, int((wait_until - now) * 1000))))
                if self.shell in events:
                    if self._recv(self.shell, msg_id):
                        got_reply = True
                if self.iopub in events:
                    if self._recv(self.iopub, msg_id):
                        got_iopub = True
            if got_reply and got_iopub:
                return True
            if got_reply and iopub_within is not None:
                replied_at = replied_at or time.monotonic()
                if time.monotonic() - replied_at > iopub_within:
                    return False

    # -- execution -----------------------------------------------------------------------
    def start_execute(self, code: str) -> str:
        self.drain()
        return self._send(self.shell, "execute_request", {
            "code": code, "silent": False, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": False})

    def collect(self, msg_id: str, out: CellOutput, deadline: float, wake_fd: int) -> Outcome:
        """Gather messages for ``msg_id`` into ``out`` until done, the deadline, or a wake-up."""
        poller = zmq.Poller()
        poller.register(self.shell, zmq.POLLIN)
        poller.register(self.iopub, zmq.POLLIN)
        poller.register(wake_fd, zmq.POLLIN)
        poller.register(self.iopub_monitor, zmq.POLLIN)
        while not out.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Outcome.TIMEOUT
            events = dict(poller.poll(max(1, int(remaining * 1000))))
            if self.iopub in events:
                while cast(int, self.iopub.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                    msg = self._recv(self.iopub, msg_id)
                    if msg:
                        self._on_iopub(msg, out)
            if self.shell in events:
                while cast(int, self.shell.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                    if self._recv(self.shell, msg_id):
                        out.got_reply = True
            if self.iopub_monitor in events:
                self.iopub_monitor.recv_multipart()
                out.lost_output = True  # ZeroMQ cut the connection over an oversized message; it reconnects
            if wake_fd in events and not out.done:
                return Outcome.WOKEN
        return Outcome.COMPLETED

    @staticmethod
    def _on_iopub(msg: dict, out: CellOutput) -> None:
        kind = msg["header"].get("msg_type")
        content = msg["content"]
        if kind == "stream":
            target = out.stderr if content.get("name") == "stderr" else out.stdout
            target.add(str(content.get("text", "")))
        elif kind in ("execute_result", "display_data"):
            data = content.get("data") or {}
            if isinstance(data.get(STATE_MIME), dict):
                out.state.update(data[STATE_MIME])  # untrusted: checked and capped by the session
            elif "text/plain" in data:
                text = str(data["text/plain"])
                out.display.add(text if text.endswith("\n") else text + "\n")
        elif kind == "error":
            out.error_name = str(content.get("ename", "Error"))
            traceback = content.get("traceback") or []
            text = "\n".join(str(line) for line in traceback) if isinstance(traceback, list) else str(traceback)
            capped = OutputCap(out.limit)
            capped.add(text or f"{out.error_name}: {content.get('evalue', '')}")
            out.error = capped.text()
            out.error_name = out.error_name[:200]
        elif kind == "status" and content.get("execution_state") == "idle":
            out.got_idle = True


def _answers(parent: bytes, msg_id: str) -> bool:
    """Whether a (not yet verified) parent header names ``msg_id``: a cheap filter, the HMAC still decides."""
    if len(parent) > MAX_HEADER_BYTES or msg_id.encode() not in parent:
        return False
    try:
        header = json.loads(parent)
    except ValueError:
        return False
    return isinstance(header, dict) and header.get("msg_id") == msg_id


def new_key() -> str:
    return os.urandom(32).hex()
