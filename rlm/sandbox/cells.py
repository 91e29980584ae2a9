"""The cell client: runs one cell, times it, escalates when it overruns, and says what happened.

Timing: a cell has ``timeout`` seconds of code time.  On timeout it is interrupted; a cell that does
not stop within the interrupt grace has its kernel restarted by the manager (which decides kernel
restart or new container).  A kernel that dies mid-cell is restarted likewise.  The notices are the
words the model reads about all this.
"""

from __future__ import annotations

import time

from rlm.errors import ContextError
from rlm.sandbox.cgroup import ContainerCPU
from rlm.sandbox.context_fit import load_failure_hint
from rlm.sandbox.execution import Execution, checked_state
from rlm.sandbox.kernel import CellOutput, Outcome
from rlm.sandbox.manager import KernelManager, Restarted
from rlm.sandbox.protocol import State

BUSY_CPU_FRACTION = 0.05  # a container using more of a CPU than this while a request is in flight is computing
POLL_WAITING_S = 0.1      # how often a cell that waits on the bridge is looked at
POLL_S = 1.0

LOST_OUTPUT = "Some output was too large to transfer and was dropped."


def recovered_notice(restarted: Restarted) -> str:
    """Before a cell: the sandbox was brought back since the last one."""
    if restarted.after_failure:
        return "The sandbox had failed and was started again; all variables were lost."
    return (f"The kernel had died since the last cell ({restarted.reason}); the {restarted.what} was restarted "
            "and all variables were lost.")


def interrupted_notice(timeout: float) -> str:
    return f"The cell timed out after {timeout:g} s and was interrupted; variables defined before it are kept."


def restarted_after_timeout_notice(timeout: float, what: str) -> str:
    return (f"The cell timed out after {timeout:g} s and did not stop when interrupted; "
            f"the {what} was restarted and all variables were lost.")


def died_notice(timeout: float, reason: str, what: str, late: bool) -> str:
    return ((f"The cell ran past its timeout of {timeout:g} s and the kernel died ({reason}); "
             if late else f"The kernel died while running this cell ({reason}); ")
            + f"the {what} was restarted and all variables were lost.")


def late_notice(timeout: float, took: float) -> str:
    return f"The cell ran past its timeout of {timeout:g} s ({took:.0f} s) before the sandbox could stop it."


class CellClient:
    """Runs cells on a manager's kernel."""

    def __init__(self, manager: KernelManager) -> None:
        self.manager = manager
        self.box = manager.box
        self.settings = manager.box.settings
        self._cell_waited_before = 0.0

    def execute(self, code: str, timeout: float) -> Execution:
        """Run one cell.  Errors in ``code`` come back in ``Execution.error``, never raised."""
        recovered = self.manager.recover()
        bridge = self.box.live_bridge
        started = time.perf_counter()
        out = CellOutput(self.settings.output_limit_bytes)
        msg_id = self.manager.live_client.start_execute(code)
        outcome = self._collect_cell(msg_id, out, timeout)
        result = Execution()
        if outcome is Outcome.TIMEOUT:
            result.timed_out = True
            self.manager.interrupt()  # the cell is abandoned: so are its sub-calls
            outcome = self.manager.collect(msg_id, out, time.monotonic() + self.settings.interrupt_grace_s)
            if outcome is Outcome.COMPLETED:
                result.notice = interrupted_notice(timeout)
                out.error, out.error_name = out.error, out.error_name or "TimeoutError"
            else:
                result.restarted = self.manager.restart(reason="the cell did not stop after an interrupt").what
                result.state_lost = True
                result.notice = restarted_after_timeout_notice(timeout, result.restarted)
        elif outcome is Outcome.WOKEN:
            died = self.manager.take_death()
            if died is not None:
                bridge.cancel_in_flight()
                late = self._past_timeout(started, timeout)
                result.timed_out = late
                result.restarted = self.manager.restart(reason=died.reason).what
                result.state_lost = True
                result.notice = died_notice(timeout, died.reason, result.restarted, late)
        elif self._past_timeout(started, timeout):
            # It finished, but later than its timeout (a host too busy to stop it in time: a fork bomb
            # under gVisor's ptrace platform starves it).  Still a timeout: said so, never silently.
            result.timed_out = True
            result.notice = late_notice(timeout, time.perf_counter() - started)
        if out.lost_output and result.restarted is None:
            self.manager.reconnect()  # ZeroMQ dropped the iopub connection over the oversized message
        if recovered is not None:
            notice = recovered_notice(recovered)
            result.notice = notice + ("\n" + result.notice if result.notice else "")
            result.state_lost = True
            result.restarted = result.restarted or recovered.what
        result.duration_s = time.perf_counter() - started
        self._fill(result, out)
        failure = result.meta.get(State.CONTEXT_ERROR)
        if failure:
            raise ContextError(f"the sandbox could not load the context: {failure}", hint=self._load_hint(failure))
        return result

    def _past_timeout(self, started: float, timeout: float) -> bool:
        """Whether a cell started at ``started`` (perf_counter) has used more than its timeout plus the
        interrupt grace, not counting the time it waited on the bridge (model time)."""
        waited = self.box.live_bridge.waited_seconds() - self._cell_waited_before
        return time.perf_counter() - started - waited > timeout + self.settings.interrupt_grace_s

    def _load_hint(self, failure: str) -> str:
        if "does not fit" not in failure:
            return "check the context file"
        return load_failure_hint(self.box.context_path, self.settings)

    def _collect_cell(self, msg_id: str, out: CellOutput, timeout: float) -> Outcome:
        """Collect a cell's output until it completes or has used ``timeout`` seconds of code time.

        Time during which the bridge has a request of this session in flight (llm_query and the
        like) is model time: it does not count.  The bridge decides that, not the frames (a forged
        ``"waiting"`` is ignored), and each request ends by its deadline (sub_call_timeout_s, by
        default the cell's timeout), so waiting cannot extend a cell past its sub-calls' deadlines.
        Waiting costs the container no CPU: while a request is in flight and the container computes
        (more than ``BUSY_CPU_FRACTION`` of a CPU, read from its cgroup: a thread of the cell's own,
        forged requests), the time counts as code time after all."""
        bridge = self.box.live_bridge
        started, waited_before = time.monotonic(), bridge.waited_seconds()
        self._cell_waited_before = waited_before
        cpu: ContainerCPU | None = None
        mark: tuple[float, float, float] | None = None  # (time, container CPU-seconds, waited) at the last look
        busy = 0.0  # time in flight during which the container computed
        first = True
        while True:
            now, waited, waiting = time.monotonic(), bridge.waited_seconds(), bridge.waiting
            computing = False
            if not first:  # a cell still running after its first look: watch what its container does
                cpu = cpu or ContainerCPU(self.box.id)
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
            outcome = self.manager.collect(msg_id, out, time.monotonic() + step)
            if outcome is not Outcome.TIMEOUT:
                return outcome

    def _fill(self, result: Execution, out: CellOutput) -> None:
        result.stdout = out.stdout.text()
        result.stderr = out.stderr.text()
        display = out.display.text()
        result.display = [display.rstrip("\n")] if display else []
        result.truncated = bool(out.stdout.dropped or out.stderr.dropped or out.display.dropped
                                or out.state.get(State.OUTPUT_DROPPED) or out.lost_output)
        if out.lost_output and not result.restarted:   # (a dead container also drops the connection)
            result.notice = f"{result.notice}\n{LOST_OUTPUT}" if result.notice else LOST_OUTPUT
        result.error = out.error
        result.error_name = out.error_name
        final, meta = checked_state(out.state, self.settings.final_limit_chars)
        result.final = final
        result.context_restored = bool(out.state.get(State.CONTEXT_RESTORED) is True)
        result.meta = meta
