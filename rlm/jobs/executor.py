"""Where batch work runs: an executor interface, a local thread executor, and cancellation.

The batch runner and the benchmark runner only ``submit`` functions and read the
returned futures, so a distributed executor (Ray, a remote Docker engine) can take
:class:`LocalExecutor`'s place without the runners changing.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rlm.sandbox import SandboxSession
from rlm.sandbox.settings import SandboxSettings

T = TypeVar("T")
log = logging.getLogger(__name__)

# Orchestrator progress events that are sent from the thread running the query (sub-call
# events come from bridge threads and must never raise).
RUN_THREAD_EVENTS = frozenset({"sandbox_ready", "iteration", "model_reply", "cell"})


class Executor(Protocol):
    """Runs submitted functions somewhere, at most some number at a time."""

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Schedule ``fn(*args)``; its result or exception arrives in the future."""

    def shutdown(self, *, cancel_pending: bool = False) -> None:
        """Accept no more work; with ``cancel_pending``, cancel what has not started."""


class LocalExecutor:
    """``concurrency`` daemon threads in this process.

    Daemon threads, so that an interrupted run can exit while a worker still waits on a
    model reply (its sandbox is closed by :class:`CancelToken` and the session's atexit
    hook; a container that escapes both is removed by the reaper of the next run).
    """

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self._queue: queue.SimpleQueue[tuple[Future, Callable, tuple] | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, name=f"rlm-batch-{i}", daemon=True)
                         for i in range(concurrency)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        with self._lock:
            if self._closed:
                raise RuntimeError("this executor is shut down")
            future: Future = Future()
            self._queue.put((future, fn, args))
        return future

    def shutdown(self, *, cancel_pending: bool = False, wait: bool = False) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if cancel_pending:
                    self._cancel_queued()
                for _ in self._threads:
                    self._queue.put(None)
        if wait:
            for t in self._threads:
                t.join()

    def _cancel_queued(self) -> None:
        kept: list[None] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
            else:
                kept.append(item)
        for item in kept:
            self._queue.put(item)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future
                future.set_exception(exc)
            else:
                future.set_result(result)


class Cancelled(BaseException):
    """Raised inside a query's own thread when the run is stopping (not an Exception on purpose:
    nothing on the way may swallow it; the orchestrator's ``finally`` still closes the session)."""


if TYPE_CHECKING:
    from rlm.sandbox.pool import SandboxPool


class CancelToken:
    """Stops running queries at their next step and closes the sandboxes they opened.

    Give :meth:`progress` and :meth:`session_factory` to each ``Orchestrator``; call
    :meth:`stop` and then :meth:`close_sessions` from the main thread on Ctrl-C.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._sessions: weakref.WeakSet[SandboxSession] = weakref.WeakSet()
        self._ids: set[str] = set()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def stop(self) -> None:
        self._event.set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()

    def progress(self, kind: str, data: dict) -> None:
        if kind in RUN_THREAD_EVENTS:
            self.check()

    def session_factory(self, settings: SandboxSettings,
                        pool: SandboxPool | None = None) -> Callable[[Path | None], SandboxSession]:
        def make(path: Path | None) -> SandboxSession:
            self.check()
            session = pool.acquire(path) if pool is not None else SandboxSession(context=path, settings=settings)
            with self._lock:
                self._sessions.add(session)
                self._ids.add(session.id)
            return session

        return make

    def open_sessions(self) -> list[SandboxSession]:
        with self._lock:
            return [s for s in self._sessions if not s.closed]

    def close_sessions(self) -> None:
        """Close every session still open, then remove any container of ours that a session
        being opened at that moment may have started (best effort: the reaper is the backstop)."""
        for session in self.open_sessions():
            try:
                session.close()
            except Exception:
                log.debug("closing a session while stopping failed", exc_info=True)
        with self._lock:
            ids = set(self._ids)
        if not ids:
            return
        try:
            from rlm.sandbox.engine import Engine
            from rlm.sandbox.provisioner import LABEL

            engine = Engine()
            try:
                for info in engine.list_labelled(LABEL):
                    if info.labels.get(LABEL) in ids:
                        engine.remove(info.id)
            finally:
                engine.close()
        except Exception:
            log.debug("no engine to sweep while stopping", exc_info=True)
