"""A warm pool of ready sandbox sessions.

``SandboxPool(size)`` keeps ``size`` containers with ready kernels; ``acquire`` is safe from many
threads at once (``rlm serve`` takes one per request, ``RLM(sandbox_pool=...)`` one per run).  ``acquire(context)``
takes one, places the context in its read-only context folder (hard-linked, not copied,
when on the same filesystem; it never travels through a protocol) and hands it over; the
caller closes it when done.  A container is never reused: a refill thread starts a
replacement in the background.  If refills fail, ``acquire`` says why.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

from rlm.errors import SandboxError
from rlm.sandbox.bridge import Handler
from rlm.sandbox.engine import Engine
from rlm.sandbox.session import SandboxSession
from rlm.sandbox.settings import SandboxSettings

log = logging.getLogger(__name__)


class SandboxPool:
    def __init__(self, size: int, settings: SandboxSettings | None = None, *, engine: Engine | None = None) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one session")
        self.size = size
        self.settings = settings or SandboxSettings()
        self._engine = engine
        self._ready: deque[SandboxSession] = deque()
        self._cond = threading.Condition()
        self._starting = 0
        self._closed = False
        self.last_error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "SandboxPool":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "SandboxPool":
        if self._engine is None:
            self._engine = Engine()
        self._refill()
        return self

    @property
    def ready(self) -> int:
        with self._cond:
            return len(self._ready)

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Block until the pool is full (or a refill failed); True when full."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._ready) < self.size and self.last_error is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return len(self._ready) >= self.size

    def acquire(self, context: str | os.PathLike | None = None, *, handler: Handler | None = None,
                timeout: float | None = None) -> SandboxSession:
        """A ready session with ``context`` attached; falls back to a cold start when none is ready soon."""
        timeout = self.settings.start_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._closed:
                raise SandboxError("the sandbox pool is closed")
            while not self._ready:
                if self.last_error is not None and self._starting == 0:
                    raise SandboxError(f"the warm pool cannot start sessions: {self.last_error}",
                                       hint="run `rlm sandbox check` to diagnose") from self.last_error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SandboxError(f"no warm session became ready within {timeout:g} s",
                                       hint="lower the pool size or raise start_timeout_s")
                self._cond.wait(remaining)
            session = self._ready.popleft()
        self._refill()
        try:
            if handler is not None:
                session.set_handler(handler)
            if context is not None:
                session.attach_context(context)
        except BaseException:
            session.close()
            raise
        return session

    def close(self) -> None:
        with self._cond:
            self._closed = True
            sessions = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        for session in sessions:
            session.close()
        with self._cond:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=self.settings.start_timeout_s)
        with self._cond:  # sessions that finished starting after close began
            late = list(self._ready)
            self._ready.clear()
        for session in late:
            session.close()

    # -- refill --------------------------------------------------------------------------
    def _refill(self) -> None:
        with self._cond:
            missing = self.size - len(self._ready) - self._starting
            if self._closed or missing <= 0:
                return
            self._starting += missing
        for _ in range(missing):
            thread = threading.Thread(target=self._start_one, name="rlm-pool-refill", daemon=True)
            with self._cond:  # acquire() refills from many threads at once
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _start_one(self) -> None:
        session = SandboxSession(settings=self.settings, engine=self._engine, attachable=True)
        try:
            session.open()
        except BaseException as exc:  # noqa: BLE001 - reported through acquire()
            log.warning("warm pool: a session failed to start: %s", exc)
            with self._cond:
                self._starting -= 1
                self.last_error = exc
                self._cond.notify_all()
            return
        with self._cond:
            self._starting -= 1
            if self._closed:
                closed = True
            else:
                closed = False
                self._ready.append(session)
                self.last_error = None
            self._cond.notify_all()
        if closed:
            session.close()
