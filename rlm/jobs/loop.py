"""The one job loop of batch runs and benchmarks.

Submit every item to an :class:`~rlm.jobs.executor.Executor`, hand each result to the
caller as it arrives (on the calling thread, so one writer appends the results file),
tell the reporter, and stop cleanly:

* an exception from a future (an error that dooms every item: no engine, image missing,
  model server unreachable, ...) stops the loop and propagates;
* Ctrl-C / SIGTERM (``KeyboardInterrupt`` in the calling thread) does the same: nothing
  more starts, running items stop at their next step (:class:`CancelToken`), results that
  still arrive within ``grace_s`` are kept, sandboxes still open are closed.

The batch runner and the benchmark runner are thin users of :func:`run_jobs`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Generic, Protocol, TypeVar

from rlm.jobs.executor import CancelToken, Executor

W = TypeVar("W")
R = TypeVar("R")

STOP_GRACE_S = 3.0
POLL_S = 0.25


class Reporter(Protocol):
    """What a run tells about its progress (the CLI shows a bar or plain lines)."""

    def start(self, total: int, to_run: int, skipped: int) -> None: ...

    def query_done(self, record: dict) -> None: ...

    def finish(self) -> None: ...


class Silent:
    def start(self, total: int, to_run: int, skipped: int) -> None:
        pass

    def query_done(self, record: dict) -> None:
        pass

    def finish(self) -> None:
        pass


class Outcome(Generic[W, R]):
    """What the loop does with each finished item: ``accept`` keeps a result and returns the
    record to report (or None); ``failed`` turns a non-fatal executor error (a task lost with
    its node) into a result, or re-raises to stop the run."""

    def __init__(self, accept: Callable[[W, R], dict | None],
                 failed: Callable[[W, BaseException], R | None] | None = None) -> None:
        self.accept = accept
        self.failed = failed


def run_jobs(executor: Executor, fn: Callable[[W], R | None], items: Sequence[W], outcome: Outcome[W, R], *,
             token: CancelToken, reporter: Reporter | None = None, total: int | None = None, skipped: int = 0,
             grace_s: float = STOP_GRACE_S, own_executor: bool = True) -> int:
    """Run ``fn(item)`` for every item on ``executor``; return how many results were accepted.

    ``fn`` returns None when it was stopped (nothing to keep).  The executor is shut down on
    the way out when stopping (pending work cancelled), and after a normal end when
    ``own_executor`` (a caller's executor stays theirs to shut down).
    """
    reporter = reporter or Silent()
    reporter.start(len(items) if total is None else total, len(items), skipped)
    accepted = 0
    pending: dict[Future, W] = {}

    def take(future: Future, item: W, *, stopping: bool) -> None:
        nonlocal accepted
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            if stopping or outcome.failed is None:
                if stopping:
                    return
                raise exc
            result = outcome.failed(item, exc)   # re-raises when the error is fatal
        else:
            result = future.result()
        if result is None:
            return
        record = outcome.accept(item, result)
        accepted += 1
        if record is not None:
            reporter.query_done(record)

    try:
        pending = {executor.submit(fn, item): item for item in items}
        while pending:
            done, _ = wait(list(pending), timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                take(future, pending.pop(future), stopping=False)
    except BaseException:
        token.stop()
        try:
            executor.shutdown(cancel_pending=True)
            deadline = time.monotonic() + grace_s
            while pending and time.monotonic() < deadline:
                done, _ = wait(list(pending), timeout=0.1, return_when=FIRST_COMPLETED)
                for future in done:
                    take(future, pending.pop(future), stopping=True)
        finally:
            token.close_sessions()
            reporter.finish()
        raise
    if own_executor:
        executor.shutdown()
    reporter.finish()
    return accepted
