"""SandboxSession: one hardened container with one long-lived Jupyter kernel.

Lifecycle::

    open()    run folders -> bridge sockets -> container -> supervisor hello -> kernel ready
    execute() one cell; on timeout: interrupt -> (grace) kernel restart -> container recreate
    close()   idempotent; the container is removed, the run folders deleted

The container has no network: the kernel's ZeroMQ sockets are Unix sockets in the run
folder, and ``llm_query`` reaches the host through the bridge socket.  The host never
runs, unpickles or evaluates anything that comes out of the container.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
import weakref
from pathlib import Path

from rlm.errors import ContextError, SandboxError, SandboxTimeout, SessionClosed
from rlm.sandbox.bridge import BridgeServer, Handler
from rlm.sandbox.cgroup import ContainerCPU
from rlm.sandbox.context_fit import check_context_fits, context_format, load_failure_hint
from rlm.sandbox.engine import ContainerSpec, Engine
from rlm.sandbox.execution import Execution, checked_state
from rlm.sandbox.kernel import CellOutput, KernelClient, Outcome, new_key
from rlm.sandbox.protocol import CONTAINER_CONTEXT, Command, Event, State
from rlm.sandbox.provisioner import container_spec
from rlm.sandbox.reaper import reap_orphans
from rlm.sandbox.rundir import RunDirs, write_connection_file
from rlm.sandbox.settings import SandboxSettings

log = logging.getLogger(__name__)

BUSY_CPU_FRACTION = 0.05  # a container using more of a CPU than this while a request is in flight is computing
POLL_WAITING_S = 0.1      # how often a cell that waits on the bridge is looked at
POLL_S = 1.0

_open_sessions: "weakref.WeakSet[SandboxSession]" = weakref.WeakSet()
_DEATHS = (Event.KERNEL_EXIT, Event.CONTROL_CLOSED)


@atexit.register
def _close_open_sessions() -> None:  # cleanup on normal interpreter exit (and after SIGINT/SIGTERM unwinding)
    for session in list(_open_sessions):
        session.close()


def _install_sigterm_cleanup() -> None:
    """If the process leaves SIGTERM at its default (die at once, skipping atexit), close the
    open sessions first and then die of SIGTERM as before.  A handler of the program's own
    is left alone (the CLI turns SIGTERM into KeyboardInterrupt, which unwinds `with` blocks)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum, frame):
        _close_open_sessions()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def _signal_name(code: int | None) -> str:
    if code is None:
        return "unknown status"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class SandboxSession:
    """A sandboxed REPL.  ``context`` is a path (file or folder) or None."""

    def __init__(self, context: str | os.PathLike | None = None, settings: SandboxSettings | None = None, *,
                 engine: Engine | None = None, handler: Handler | None = None, attachable: bool = False) -> None:
        self.settings = settings or SandboxSettings()
        self.attachable = attachable  # started without a context; one is placed later by attach_context()
        self._attached: tuple[str, str] | None = None  # (path inside, format) once attached
        self.context_path = Path(context).resolve() if context is not None else None
        self.handler = handler
        self.id = uuid.uuid4().hex[:12]
        self._engine = engine
        self._own_engine = engine is None
        self._dirs: RunDirs | None = None
        self._bridge: BridgeServer | None = None
        self._container: str | None = None
        self._client: KernelClient | None = None
        self._connection: dict | None = None
        self._events: queue.Queue[dict] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._pending_notice: str | None = None
        self._cell_waited_before = 0.0
        self.opened = False
        self.closed = False
        self.open_seconds: float | None = None
        self.restarts = {"kernel": 0, "container": 0}

    # -- public API ----------------------------------------------------------------------
    def __enter__(self) -> "SandboxSession":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def container_id(self) -> str | None:
        return self._container

    @property
    def run_dir(self) -> Path | None:
        return self._live_dirs.root if self._dirs else None

    def set_handler(self, handler: Handler | None) -> None:
        """Attach (or replace) what serves llm_query from this session's REPL."""
        self.handler = handler
        if self._bridge is not None:
            self._live_bridge.handler = handler or self._live_bridge.handler

    def open(self) -> "SandboxSession":
        if self.closed:
            raise SessionClosed("this sandbox session is closed; open a new one")
        if self.opened:
            return self
        started = time.perf_counter()
        self._check_context()
        try:
            if self._engine is None:
                self._engine = Engine()
            if not self._live_engine.image_exists(self.settings.image):
                from rlm.errors import ImageMissing

                raise ImageMissing(f"the sandbox image {self.settings.image} is not built",
                                   hint="run `rlm sandbox build` (or ./scripts/rlm setup)")
            reap_orphans(self._engine, self.settings.resolved_run_root)
            _install_sigterm_cleanup()
            _open_sessions.add(self)
            self.opened = True
            self._dirs = RunDirs.create(self.settings.resolved_run_root, self.id, self._sandbox_uid)
            self._bridge = BridgeServer(self._live_dirs.bridge, allowed_uids={self._sandbox_uid, os.getuid()},
                                        on_control=self._on_control, handler=self.handler,
                                        max_frame=self.settings.bridge_max_frame)
            self._live_bridge.start()
            self._start_container()
        except BaseException:
            self.close()
            raise
        self.open_seconds = time.perf_counter() - started
        return self

    def execute(self, code: str, timeout: float | None = None) -> Execution:
        """Run one cell.  Errors in ``code`` come back in ``Execution.error``, never raised."""
        if self.closed:
            raise SessionClosed("this sandbox session is closed; open a new one")
        if not self.opened:
            self.open()
        timeout = self.settings.cell_timeout_s if timeout is None else timeout
        notice, recovered = self._recover_if_needed()
        started = time.perf_counter()
        out = CellOutput(self.settings.output_limit_bytes)
        msg_id = self._live_client.start_execute(code)
        outcome = self._collect_cell(msg_id, out, timeout)
        result = Execution()
        if outcome is Outcome.TIMEOUT:
            result.timed_out = True
            self._live_bridge.send_control(Command.INTERRUPT)
            self._live_bridge.cancel_in_flight()  # the cell is abandoned: so are its sub-calls
            outcome = self._collect(msg_id, out, time.monotonic() + self.settings.interrupt_grace_s)
            if outcome is Outcome.COMPLETED:
                result.notice = (f"The cell timed out after {timeout:g} s and was interrupted; "
                                 "variables defined before it are kept.")
                out.error, out.error_name = out.error, out.error_name or "TimeoutError"
            else:
                result.restarted = self._restart(reason="the cell did not stop after an interrupt")
                result.state_lost = True
                result.notice = (f"The cell timed out after {timeout:g} s and did not stop when interrupted; "
                                 f"the {result.restarted} was restarted and all variables were lost.")
        elif outcome is Outcome.WOKEN:
            event = self._take_death()
            if event is not None:
                self._live_bridge.cancel_in_flight()
                late = self._past_timeout(started, timeout)
                result.timed_out = late
                result.restarted = self._restart(reason=event)
                result.state_lost = True
                result.notice = ((f"The cell ran past its timeout of {timeout:g} s and the kernel died ({event}); "
                                  if late else f"The kernel died while running this cell ({event}); ")
                                 + f"the {result.restarted} was restarted and all variables were lost.")
        elif self._past_timeout(started, timeout):
            # It finished, but later than its timeout (a host too busy to stop it in time: a fork bomb
            # under gVisor's ptrace platform starves it).  Still a timeout: said so, never silently.
            result.timed_out = True
            result.notice = (f"The cell ran past its timeout of {timeout:g} s "
                             f"({time.perf_counter() - started:.0f} s) before the sandbox could stop it.")
        if out.lost_output and result.restarted is None:
            self._reconnect()  # ZeroMQ dropped the iopub connection over the oversized message
        if notice:
            result.notice = notice + ("\n" + result.notice if result.notice else "")
            result.state_lost = True
            result.restarted = result.restarted or recovered
        result.duration_s = time.perf_counter() - started
        self._fill(result, out)
        failure = result.meta.get(State.CONTEXT_ERROR)
        if failure:
            raise ContextError(f"the sandbox could not load the context: {failure}", hint=self._load_hint(failure))
        return result

    def _past_timeout(self, started: float, timeout: float) -> bool:
        """Whether a cell started at ``started`` (perf_counter) has used more than its timeout plus the
        interrupt grace, not counting the time it waited on the bridge (model time)."""
        waited = self._live_bridge.waited_seconds() - self._cell_waited_before
        return time.perf_counter() - started - waited > timeout + self.settings.interrupt_grace_s

    def _load_hint(self, failure: str) -> str:
        if "does not fit" not in failure:
            return "check the context file"
        return load_failure_hint(self.context_path, self.settings)

    def _collect_cell(self, msg_id: str, out: CellOutput, timeout: float) -> Outcome:
        """Collect a cell's output until it completes or has used ``timeout`` seconds of code time.

        Time during which the bridge has a request of this session in flight (llm_query and the
        like) is model time: it does not count.  The bridge decides that, not the frames (a forged
        ``"waiting"`` is ignored), and each request ends by its deadline (sub_call_timeout_s, by
        default the cell's timeout), so waiting cannot extend a cell past its sub-calls' deadlines.
        Waiting costs the container no CPU: while a request is in flight and the container computes
        (more than ``BUSY_CPU_FRACTION`` of a CPU, read from its cgroup: a thread of the cell's own,
        forged requests), the time counts as code time after all."""
        started, waited_before = time.monotonic(), self._live_bridge.waited_seconds()
        self._cell_waited_before = waited_before
        cpu: ContainerCPU | None = None
        mark: tuple[float, float, float] | None = None  # (time, container CPU-seconds, waited) at the last look
        busy = 0.0  # time in flight during which the container computed
        first = True
        while True:
            now, waited, waiting = time.monotonic(), self._live_bridge.waited_seconds(), self._live_bridge.waiting
            computing = False
            if not first:  # a cell still running after its first look: watch what its container does
                cpu = cpu or ContainerCPU(self._container)
                cpu_now = cpu.seconds()
                if mark is not None and cpu_now is not None and now > mark[0]:
                    computing = (cpu_now - mark[1]) / (now - mark[0]) > BUSY_CPU_FRACTION
                    if computing:
                        busy += waited - mark[2]
                mark = None if cpu_now is None else (now, cpu_now, waited)
            first = False
            used = (now - started) - (waited - waited_before) + busy
            left = timeout - used
            if left <= 0 and (not waiting or computing):
                return Outcome.TIMEOUT
            # once the cell has waited on the bridge, look often; otherwise at least every POLL_S
            step = POLL_WAITING_S if waiting or waited > waited_before else max(min(left, POLL_S), 0.001)
            outcome = self._collect(msg_id, out, time.monotonic() + step)
            if outcome is not Outcome.TIMEOUT:
                return outcome

    def attach_context(self, context: str | os.PathLike) -> None:
        """Give a started (warm) session its context: placed in its read-only context folder
        (hard-linked, not copied, when on the same filesystem) and loaded lazily by the next cell."""
        if not self.attachable:
            raise SandboxError("this session was not started to take a context later (attachable=False)")
        if self._attached is not None:
            raise SandboxError("this session already has a context; open a new session for another one")
        if not self.opened or self.closed:
            raise SessionClosed("attach_context needs an open session")
        path = Path(context).resolve()
        self.context_path = path
        self._check_context()
        placed = self._live_dirs.place_context(path)
        self._attached = (f"{CONTAINER_CONTEXT}/{placed.name}", context_format(path))
        self._send_attach()

    def add_context(self, context: str | os.PathLike, source: str | None = None) -> str:
        """Load another context (file or folder) in this attachable session's kernel, nothing lost;
        returns its variable: ``context`` for the first, then ``context_1``, ``context_2``, ..."""
        from rlm.sandbox import contexts

        return contexts.add_context(self, self._live_dirs, context, source)

    def _send_attach(self) -> None:
        assert self._attached is not None
        target, fmt = self._attached
        out = CellOutput(self.settings.output_limit_bytes)
        msg_id = self._live_client.start_execute(f"_rlm_attach_context({target!r}, {fmt!r})")
        if self._collect(msg_id, out, time.monotonic() + self.settings.start_timeout_s) is not Outcome.COMPLETED \
                or out.error:
            raise SandboxError(f"could not attach the context in the sandbox: {out.error or 'no answer'}")

    def interrupt(self) -> None:
        if self._bridge is not None:
            self._live_bridge.send_control(Command.INTERRUPT)
            self._live_bridge.cancel_in_flight()

    def close(self) -> None:
        """Remove the container and the run folders; safe to call any number of times."""
        if self.closed:
            return
        self.closed = True
        _open_sessions.discard(self)
        if self._client is not None:
            self._live_client.close()
            self._client = None
        if self._container is not None and self._engine is not None:
            try:
                self._live_engine.remove(self._container)
            except SandboxError as exc:
                log.warning("could not remove container %s: %s", self._container[:12], exc)
            self._container = None
        if self._bridge is not None:
            self._live_bridge.cancel_in_flight()
            self._live_bridge.close()
        if self._dirs is not None:
            self._live_dirs.remove()
        for sock in (self._wake_r, self._wake_w):
            sock.close()
        if self._own_engine and self._engine is not None:
            self._live_engine.close()

    # -- internals -----------------------------------------------------------------------
    # What an open session has; reaching for it on a session that is not open is a SessionClosed.
    @property
    def _live_bridge(self) -> BridgeServer:
        if self._bridge is None:
            raise SessionClosed("this sandbox session is not open")
        return self._bridge

    @property
    def _live_client(self) -> KernelClient:
        if self._client is None:
            raise SessionClosed("this sandbox session has no kernel connection")
        return self._client

    @property
    def _live_dirs(self) -> RunDirs:
        if self._dirs is None:
            raise SessionClosed("this sandbox session is not open")
        return self._dirs

    @property
    def _live_engine(self) -> Engine:
        if self._engine is None:
            raise SessionClosed("this sandbox session is not open")
        return self._engine

    @property
    def _live_connection(self) -> dict:
        if self._connection is None:
            raise SessionClosed("this sandbox session has no kernel")
        return self._connection

    @property
    def _sandbox_uid(self) -> int:
        return int(self.settings.user.split(":")[0])

    def _check_context(self) -> None:
        path = self.context_path
        if path is None:
            return
        if not path.exists():
            raise ContextError(f"context file not found: {path}", hint="check the path given with -f")
        if not (path.is_file() or path.is_dir()):
            raise ContextError(f"context is not a regular file or folder: {path}")
        if not os.access(path, os.R_OK):
            raise ContextError(f"context file is not readable: {path}", hint="check its permissions")
        check_context_fits(path, self.settings)

    def _spec(self) -> ContainerSpec:
        context: tuple[Path, str] | None = None
        if self.attachable:
            context = None
        elif self.context_path is not None:
            context = (self.context_path, context_format(self.context_path))
        return container_spec(self.settings, session_id=self.id, generation=self.restarts["container"],
                              dirs=self._live_dirs, attachable=self.attachable, attached=self._attached,
                              context=context)

    def _start_container(self) -> None:
        self._connection = write_connection_file(self._live_dirs.run, new_key(), self._sandbox_uid)
        self._live_dirs.unlock_run(self._sandbox_uid)
        self._container = self._live_engine.run(self._spec())
        self._await_event(Event.HELLO, self.settings.start_timeout_s)
        self._await_kernel(self.settings.start_timeout_s)

    def _await_event(self, name: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxTimeout(f"the sandbox did not report '{name}' within {timeout:g} s",
                                     hint="run `rlm sandbox check` to diagnose")
            try:
                event = self._events.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                self._check_container_alive()
                continue
            kind = event.get("event")
            if kind == name:
                return event
            if kind in (Event.CONTROL_CLOSED, Event.KERNEL_EXIT, Event.ERROR):
                raise SandboxError(f"the sandbox failed while starting: {self._describe(event)}")

    def _check_container_alive(self) -> None:
        info = self._live_engine.inspect(self._container) if self._container else None
        if info is None or info.status in ("exited", "dead"):
            code = None if info is None else info.exit_code
            raise SandboxError(f"the sandbox container stopped while starting ({_signal_name(code)})",
                               hint="run `rlm sandbox build --force` to rebuild the image")

    def _await_kernel(self, timeout: float) -> None:
        self._await_event(Event.KERNEL_READY, timeout)
        if self._client is not None:
            self._live_client.close()
        self._client = KernelClient(self._live_connection, self._live_dirs.run, {self._sandbox_uid})
        self._live_client.wait_ready(timeout)
        self._live_dirs.lock_run()
        self._drain_wake()

    def _reconnect(self) -> None:
        """A fresh client on the same kernel (its variables are kept).  A kernel that keeps flooding iopub
        with oversized frames keeps it down: the shell answering is enough (the next cells say their
        output was dropped)."""
        self._live_client.close()
        self._client = KernelClient(self._live_connection, self._live_dirs.run, {self._sandbox_uid})
        self._live_client.wait_ready(self.settings.start_timeout_s, iopub_within=1.0)

    def _on_control(self, event: dict) -> None:
        self._events.put(event)
        try:
            self._wake_w.send(b"!")
        except OSError:
            pass

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _collect(self, msg_id: str, out: CellOutput, deadline: float) -> Outcome:
        while True:
            outcome = self._live_client.collect(msg_id, out, deadline, self._wake_r.fileno())
            if outcome is not Outcome.WOKEN:
                return outcome
            self._drain_wake()
            if self._has_death():
                return Outcome.WOKEN

    def _has_death(self) -> bool:
        return any(e.get("event") in _DEATHS for e in list(self._events.queue))

    def _take_death(self) -> str | None:
        reason = None
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return reason
            if event.get("event") in _DEATHS:
                reason = reason or self._describe(event)

    def _describe(self, event: dict) -> str:
        kind = event.get("event")
        if kind == Event.KERNEL_EXIT:
            code = event.get("code")
            text = _signal_name(code)
            if code in (-9, 137):
                text += ", probably out of memory"
            return text
        if kind == Event.CONTROL_CLOSED:
            return "the container stopped"
        return str(event.get("message") or kind)

    def _recover_if_needed(self) -> tuple[str | None, str | None]:
        """Before a cell: if the kernel or container died since the last one, bring it back.
        Returns (notice for the model, what was restarted)."""
        self._drain_wake()
        if self._client is None:  # an earlier restart failed: try again, or fail clearly
            self._recreate_container()
            self.restarts["container"] += 1
            return "The sandbox had failed and was started again; all variables were lost.", "container"
        reason = self._take_death()
        if reason is None:
            return None, None
        restarted = self._restart(reason=reason)
        return (f"The kernel had died since the last cell ({reason}); the {restarted} was restarted "
                "and all variables were lost.", restarted)

    def _restart(self, reason: str) -> str:
        """Kernel restart through the supervisor; container recreation when that fails."""
        log.info("restarting sandbox %s: %s", self.id, reason)
        if self._live_bridge.send_control(Command.KILL):
            try:
                self._await_event(Event.KILLED, min(self.settings.start_timeout_s, 20.0))
                # no process of the old kernel is left: the new one may create its sockets
                self._live_dirs.unlock_run(self._sandbox_uid)
                self._live_bridge.send_control(Command.START)
                self._await_kernel(min(self.settings.start_timeout_s, 20.0))
                if self._attached is not None:
                    self._send_attach()  # a restarted kernel starts from the container's environment
                self.restarts["kernel"] += 1
                return "kernel"
            except SandboxError as exc:
                log.info("kernel restart failed (%s); recreating the container", exc)
        self._recreate_container()
        self.restarts["container"] += 1
        return "container"

    def _recreate_container(self) -> None:
        if self._client is not None:
            self._live_client.close()
            self._client = None
        if self._container is not None:
            self._live_engine.remove(self._container)
            self._container = None
        self._live_bridge.expect_new_supervisor()
        while not self._events.empty():
            self._events.get_nowait()
        self._live_dirs.clear_run()
        self._start_container()

    def _fill(self, result: Execution, out: CellOutput) -> None:
        result.stdout = out.stdout.text()
        result.stderr = out.stderr.text()
        display = out.display.text()
        result.display = [display.rstrip("\n")] if display else []
        result.truncated = bool(out.stdout.dropped or out.stderr.dropped or out.display.dropped
                                or out.state.get(State.OUTPUT_DROPPED) or out.lost_output)
        if out.lost_output and not result.restarted:   # (a dead container also drops the connection)
            lost = "Some output was too large to transfer and was dropped."
            result.notice = f"{result.notice}\n{lost}" if result.notice else lost
        result.error = out.error
        result.error_name = out.error_name
        final, meta = checked_state(out.state, self.settings.final_limit_chars)
        result.final = final
        result.context_restored = bool(out.state.get(State.CONTEXT_RESTORED) is True)
        result.meta = meta
