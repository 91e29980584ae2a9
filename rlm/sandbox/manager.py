"""The kernel manager: starts the kernel through the container's supervisor, watches it, restarts it.

It owns the supervisor's events (bridge control frames, queued and signalled on a wake socket the
kernel client also waits on), the kernel connection, and recovery: a kernel restart through the
supervisor, a new container when that fails.  What it finds and does it reports as typed events
(``KernelDied``, ``Restarted``), returned to the caller and passed to ``on_event``; the words for
the model are the cell client's (cells.py).
"""

from __future__ import annotations

import logging
import queue
import socket
import time
from dataclasses import dataclass
from typing import Callable, Literal, Union

from rlm.errors import SandboxError, SandboxTimeout, SessionClosed
from rlm.sandbox.container import SandboxContainer, signal_name
from rlm.sandbox.kernel import CellOutput, KernelClient, Outcome
from rlm.sandbox.protocol import Command, Event

log = logging.getLogger(__name__)

_DEATHS = (Event.KERNEL_EXIT, Event.CONTROL_CLOSED)
RESTART_TIMEOUT_S = 20.0  # at most, for a kernel restart through the supervisor (then the container is recreated)


@dataclass(frozen=True)
class KernelDied:
    """The kernel (or its container) died; ``reason`` in words, e.g. ``killed by SIGKILL, probably out of memory``."""
    reason: str


@dataclass(frozen=True)
class Restarted:
    """The kernel was restarted (``what="kernel"``) or its container recreated (``"container"``): variables
    are lost.  ``after_failure``: brought back before a cell because the previous restart had failed."""
    what: Literal["kernel", "container"]
    reason: str
    after_failure: bool = False


ManagerEvent = Union[KernelDied, Restarted]


def describe_event(event: dict) -> str:
    """A supervisor event (a death, an error) in words."""
    kind = event.get("event")
    if kind == Event.KERNEL_EXIT:
        code = event.get("code")
        text = signal_name(code)
        if code in (-9, 137):
            text += ", probably out of memory"
        return text
    if kind == Event.CONTROL_CLOSED:
        return "the container stopped"
    return str(event.get("message") or kind)


class KernelManager:
    """The kernel of one ``SandboxContainer``.  ``restarts`` counts kernel restarts and container recreations."""

    def __init__(self, box: SandboxContainer, on_event: Callable[[ManagerEvent], None] | None = None) -> None:
        self.box = box
        self.on_event = on_event
        self.client: KernelClient | None = None
        self.restarts = {"kernel": 0, "container": 0}
        self._events: queue.Queue[dict] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)

    @property
    def live_client(self) -> KernelClient:
        if self.client is None:
            raise SessionClosed("this sandbox session has no kernel connection")
        return self.client

    def _emit(self, event: ManagerEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    # -- supervisor events -----------------------------------------------------------------
    def on_control(self, event: dict) -> None:
        """The bridge's callback for the supervisor's frames (on the bridge's thread)."""
        self._events.put(event)
        try:
            self._wake_w.send(b"!")
        except OSError:
            pass

    def drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def await_event(self, name: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxTimeout(f"the sandbox did not report '{name}' within {timeout:g} s",
                                     hint="run `rlm sandbox check` to diagnose")
            try:
                event = self._events.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                self.box.check_alive()
                continue
            kind = event.get("event")
            if kind == name:
                return event
            if kind in (Event.CONTROL_CLOSED, Event.KERNEL_EXIT, Event.ERROR):
                raise SandboxError(f"the sandbox failed while starting: {describe_event(event)}")

    def has_death(self) -> bool:
        return any(e.get("event") in _DEATHS for e in list(self._events.queue))

    def take_death(self) -> KernelDied | None:
        """The first death among the queued events (all of them are consumed), or None."""
        reason = None
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event.get("event") in _DEATHS:
                reason = reason or describe_event(event)
        if reason is None:
            return None
        died = KernelDied(reason)
        self._emit(died)
        return died

    # -- the kernel ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the container and wait for its supervisor, then for its kernel."""
        timeout = self.box.settings.start_timeout_s
        self.box.start(self.restarts["container"])
        self.await_event(Event.HELLO, timeout)
        self.await_kernel(timeout)

    def await_kernel(self, timeout: float) -> None:
        self.await_event(Event.KERNEL_READY, timeout)
        if self.client is not None:
            self.live_client.close()
        self.client = KernelClient(self.box.live_connection, self.box.live_dirs.run, {self.box.uid})
        self.live_client.wait_ready(timeout)
        self.box.live_dirs.lock_run()
        self.drain_wake()

    def reconnect(self) -> None:
        """A fresh client on the same kernel (its variables are kept).  A kernel that keeps flooding iopub
        with oversized frames keeps it down: the shell answering is enough (the next cells say their
        output was dropped)."""
        self.live_client.close()
        self.client = KernelClient(self.box.live_connection, self.box.live_dirs.run, {self.box.uid})
        self.live_client.wait_ready(self.box.settings.start_timeout_s, iopub_within=1.0)

    def collect(self, msg_id: str, out: CellOutput, deadline: float) -> Outcome:
        """Collect a request's output until it completes, ``deadline`` passes or the kernel dies (WOKEN)."""
        while True:
            outcome = self.live_client.collect(msg_id, out, deadline, self._wake_r.fileno())
            if outcome is not Outcome.WOKEN:
                return outcome
            self.drain_wake()
            if self.has_death():
                return Outcome.WOKEN

    def send_attach(self) -> None:
        """Have the kernel load the context placed in its container (after attaching, and after a restart)."""
        assert self.box.attached is not None
        target, fmt = self.box.attached
        out = CellOutput(self.box.settings.output_limit_bytes)
        msg_id = self.live_client.start_execute(f"_rlm_attach_context({target!r}, {fmt!r})")
        if self.collect(msg_id, out, time.monotonic() + self.box.settings.start_timeout_s) is not Outcome.COMPLETED \
                or out.error:
            raise SandboxError(f"could not attach the context in the sandbox: {out.error or 'no answer'}")

    def interrupt(self) -> None:
        """Interrupt what runs in the kernel; the requests it has in flight on the bridge are cancelled."""
        self.box.live_bridge.send_control(Command.INTERRUPT)
        self.box.live_bridge.cancel_in_flight()

    # -- recovery --------------------------------------------------------------------------
    def recover(self) -> Restarted | None:
        """Before a cell: if the kernel or container died since the last one, bring it back."""
        self.drain_wake()
        if self.client is None:  # an earlier restart failed: try again, or fail clearly
            self._recreate_container()
            self.restarts["container"] += 1
            restarted = Restarted("container", "an earlier restart failed", after_failure=True)
            self._emit(restarted)
            return restarted
        died = self.take_death()
        if died is None:
            return None
        return self.restart(died.reason)

    def restart(self, reason: str) -> Restarted:
        """Kernel restart through the supervisor; container recreation when that fails."""
        log.info("restarting sandbox %s: %s", self.box.session_id, reason)
        bridge, limit = self.box.live_bridge, min(self.box.settings.start_timeout_s, RESTART_TIMEOUT_S)
        what: Literal["kernel", "container"] = "container"
        if bridge.send_control(Command.KILL):
            try:
                self.await_event(Event.KILLED, limit)
                # no process of the old kernel is left: the new one may create its sockets
                self.box.live_dirs.unlock_run(self.box.uid)
                bridge.send_control(Command.START)
                self.await_kernel(limit)
                if self.box.attached is not None:
                    self.send_attach()  # a restarted kernel starts from the container's environment
                what = "kernel"
            except SandboxError as exc:
                log.info("kernel restart failed (%s); recreating the container", exc)
        if what == "container":
            self._recreate_container()
        self.restarts[what] += 1
        restarted = Restarted(what, reason)
        self._emit(restarted)
        return restarted

    def _recreate_container(self) -> None:
        if self.client is not None:
            self.live_client.close()
            self.client = None
        self.box.discard()
        while not self._events.empty():
            self._events.get_nowait()
        self.box.clear_run()
        self.start()

    def close(self) -> None:
        """The kernel connection (the container is the box's to remove)."""
        if self.client is not None:
            self.live_client.close()
            self.client = None

    def close_wake(self) -> None:
        for sock in (self._wake_r, self._wake_w):
            sock.close()
