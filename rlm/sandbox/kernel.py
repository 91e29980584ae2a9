"""Host-side Jupyter client for the sandboxed kernel: the only module importing jupyter_client.

It speaks the Jupyter wire protocol to the kernel's ZeroMQ ``ipc`` sockets with jupyter_client's
``Session`` for signing and building requests, but reads replies with a lean path of its
own (signature check + ``json.loads``, no date parsing on every message), and it caps
output while it streams.  It never unpickles anything.

What a kernel can make the host hold is bounded: the host connects only to the kernel's shell
and iopub sockets (never control, stdin or heartbeat: interrupts and restarts go through the
supervisor), and reads them with its own ZMTP peer (rlm/sandbox/zmtp.py), which keeps a message
only while all its frames add up to ``MAX_MESSAGE_BYTES`` and skips the rest unstored.  libzmq
cannot do that (its ZMQ_MAXMSGSIZE is per frame and it assembles a multipart message whole).
What the host has not read stays in the kernel's socket buffer.  Messages that answer no request
of this client (a thread that keeps publishing after its cell) are dropped unparsed.
"""

from __future__ import annotations

import enum
import hmac
import json
import os
import select
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.session import Session

from rlm.errors import SandboxError
from rlm.sandbox.execution import OutputCap
from rlm.sandbox.protocol import STATE_MIME
from rlm.sandbox.rundir import SocketPath
from rlm.sandbox.zmtp import ZmtpError, ZmtpPeer

DELIM = b"<IDS|MSG>"

MAX_MESSAGE_BYTES = 16 * 1024 * 1024   # all frames of one message, on shell and iopub (outputs are capped at 1 MiB)
MAX_HEADER_BYTES = 64 * 1024            # a parent header larger than this is not the kernel's own
IDLE_GRACE_S = 2.0                      # after the reply, how long to wait for the idle status once output was lost
DRAIN_MESSAGES = 256                    # messages dropped at most before a cell (a thread may keep publishing)


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
        self._peers: list[ZmtpPeer] = []
        try:
            self.shell = self._connect(b"DEALER", host_run_dir, connection["shell_port"], allowed_uids,
                                       max_message_bytes)
            self.iopub = self._connect(b"SUB", host_run_dir, connection["iopub_port"], allowed_uids,
                                       max_message_bytes)
        except Exception:
            self.close()
            raise

    def _connect(self, kind: bytes, run_dir: Path, port: int, allowed: set[int], max_bytes: int) -> ZmtpPeer:
        path = SocketPath(run_dir / f"k-{port}", allowed)
        self._paths.append(path)
        try:
            peer = ZmtpPeer(path.path, kind, max_bytes)
        except ZmtpError as exc:
            raise SandboxError(f"cannot connect to the kernel's {kind.decode().lower()} socket: {exc}") from exc
        self._peers.append(peer)
        return peer

    def close(self) -> None:
        for peer in self._peers:
            peer.close()
        self._peers.clear()
        for path in self._paths:
            path.close()
        self._paths.clear()

    @property
    def dropped(self) -> int:
        """Messages skipped for their size so far, on both sockets."""
        return sum(peer.dropped for peer in self._peers)

    # -- messages ------------------------------------------------------------------------
    def _send(self, peer: ZmtpPeer, msg_type: str, content: dict) -> str:
        msg = self.session.msg(msg_type, content)
        try:
            peer.send(self.session.serialize(msg))
        except OSError as exc:
            raise SandboxError(f"the kernel does not take requests ({exc.__class__.__name__})") from exc
        return msg["header"]["msg_id"]

    def _parse(self, parts: list[bytes], msg_id: str | None = None) -> dict | None:
        """One message; None when it is unsigned, badly signed or malformed, or (with ``msg_id``)
        answers another request: those are dropped before their signature or content is looked at."""
        try:
            at = parts.index(DELIM)
        except ValueError:
            return None
        body = parts[at + 1: at + 6]
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
        """Drop what arrived since the last cell (left by an earlier cell); how many messages.  Bounded
        (a thread may keep publishing): what comes later is dropped unparsed by ``collect``."""
        dropped = 0
        for peer in (self.iopub, self.shell):
            while dropped < DRAIN_MESSAGES:
                got = peer.read()
                if not got:
                    break
                dropped += len(got)
        return dropped

    # -- readiness -----------------------------------------------------------------------
    def wait_ready(self, timeout: float, iopub_within: float | None = None) -> bool:
        """Confirm both shell and iopub work: kernel_info until its reply and an iopub status arrive.
        With ``iopub_within``, a kernel whose shell answered but whose iopub stays silent for that long
        is accepted: returns False."""
        deadline = time.monotonic() + timeout
        replied_at: float | None = None
        poller = select.poll()
        poller.register(self.shell.fileno(), select.POLLIN)
        poller.register(self.iopub.fileno(), select.POLLIN)
        while True:
            msg_id = self._send(self.shell, "kernel_info_request", {})
            got_reply = got_iopub = False
            resend_at = time.monotonic() + 0.25
            while not (got_reply and got_iopub):
                now = time.monotonic()
                if now >= deadline or (self.shell.closed and not got_reply):
                    raise SandboxError("the sandbox kernel did not answer in time")
                if now >= resend_at and got_reply:
                    break  # iopub subscription not established yet: ask again
                wait_until = min(deadline, resend_at) if got_reply else deadline
                poller.poll(max(1, int((wait_until - now) * 1000)))
                if any(self._parse(m, msg_id) for m in self.shell.read()):
                    got_reply = True
                if any(self._parse(m, msg_id) for m in self.iopub.read()):
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
        poller = select.poll()
        watched = {peer: peer.fileno() for peer in (self.shell, self.iopub) if not peer.closed}
        for fd in (*watched.values(), wake_fd):
            poller.register(fd, select.POLLIN)
        dropped = self.dropped
        replied_at: float | None = None
        while not self._finished(out, replied_at):
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return Outcome.TIMEOUT
            if replied_at is not None:   # only the idle status is missing: wait for it a little
                remaining = min(remaining, replied_at + IDLE_GRACE_S - now)
            events = dict(poller.poll(max(1, int(remaining * 1000))))
            for parts in self.iopub.read():
                msg = self._parse(parts, msg_id)
                if msg:
                    self._on_iopub(msg, out)
            if any(self._parse(m, msg_id) for m in self.shell.read()):
                out.got_reply = True
                replied_at = replied_at or time.monotonic()
            if self.dropped != dropped or self.iopub.closed:
                out.lost_output = True  # a message over the size cap was skipped (or iopub went away)
                dropped = self.dropped
            for peer, fd in list(watched.items()):
                if peer.closed:      # the kernel's end went away: wait for the deadline or a wake-up
                    poller.unregister(fd)
                    del watched[peer]
            if wake_fd in events and not self._finished(out, replied_at):
                return Outcome.WOKEN
        return Outcome.COMPLETED

    def _finished(self, out: CellOutput, replied_at: float | None) -> bool:
        """The reply and the idle status are in; or, when output was dropped (the idle status may be among
        it), the reply and then ``IDLE_GRACE_S`` for the rest of the output to come through."""
        if not out.got_reply:
            return False
        if out.got_idle:
            return True
        return out.lost_output and (self.iopub.closed or replied_at is None
                                    or time.monotonic() - replied_at >= IDLE_GRACE_S)

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
