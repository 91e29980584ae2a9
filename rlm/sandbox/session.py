"""SandboxSession: one hardened container with one long-lived Jupyter kernel.

Lifecycle::

    open()    run folders -> bridge sockets -> container -> supervisor hello -> kernel ready
    execute() one cell; on timeout: interrupt -> (grace) kernel restart -> container recreate
    close()   idempotent; the container is removed, the run folders deleted

A thin facade over three parts split as jupyter_client splits them: the container's provisioning
and lifecycle (container.py), the kernel manager that restarts and recovers it (manager.py), and
the cell client that times cells and words what happened (cells.py).

The container has no network: the kernel's ZeroMQ sockets are Unix sockets in the run
folder, and ``llm_query`` reaches the host through the bridge socket.  The host never
runs, unpickles or evaluates anything that comes out of the container.

No signal handler is installed here: open sessions are closed at interpreter exit, and a program
that wants them closed on SIGTERM turns it into an exception that unwinds (the CLI and the service do).
"""

from __future__ import annotations

import atexit
import os
import time
import uuid
import weakref
from pathlib import Path

from rlm.errors import SandboxError, SessionClosed
from rlm.sandbox.bridge import Handler
from rlm.sandbox.cells import CellClient
from rlm.sandbox.container import SandboxContainer
from rlm.sandbox.engine import Engine
from rlm.sandbox.execution import Execution
from rlm.sandbox.manager import KernelManager
from rlm.sandbox.settings import SandboxSettings

_open_sessions: "weakref.WeakSet[SandboxSession]" = weakref.WeakSet()


@atexit.register
def _close_open_sessions() -> None:  # cleanup on normal interpreter exit (and after SIGINT/SIGTERM unwinding)
    for session in list(_open_sessions):
        session.close()


class SandboxSession:
    """A sandboxed REPL.  ``context`` is a path (file or folder) or None."""

    def __init__(self, context: str | os.PathLike | None = None, settings: SandboxSettings | None = None, *,
                 engine: Engine | None = None, handler: Handler | None = None, attachable: bool = False) -> None:
        self.settings = settings or SandboxSettings()
        self.attachable = attachable  # started without a context; one is placed later by attach_context()
        self.handler = handler
        self.id = uuid.uuid4().hex[:12]
        self._box = SandboxContainer(self.settings, self.id, engine=engine, attachable=attachable,
                                     context_path=Path(context).resolve() if context is not None else None)
        self._manager = KernelManager(self._box)
        self._cells = CellClient(self._manager)
        self.opened = False
        self.closed = False
        self.open_seconds: float | None = None
        self.restarts = self._manager.restarts  # {"kernel": n, "container": n}

    # -- public API ----------------------------------------------------------------------
    def __enter__(self) -> "SandboxSession":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def context_path(self) -> Path | None:
        return self._box.context_path

    @context_path.setter
    def context_path(self, path: Path | None) -> None:
        self._box.context_path = path

    @property
    def container_id(self) -> str | None:
        return self._box.id

    @property
    def run_dir(self) -> Path | None:
        return self._box.live_dirs.root if self._box.dirs else None

    def set_handler(self, handler: Handler | None) -> None:
        """Attach (or replace) what serves llm_query from this session's REPL."""
        self.handler = handler
        if self._box.bridge is not None:
            self._box.bridge.handler = handler or self._box.bridge.handler

    def open(self) -> "SandboxSession":
        if self.closed:
            raise SessionClosed("this sandbox session is closed; open a new one")
        if self.opened:
            return self
        started = time.perf_counter()
        self._box.check_context()
        try:
            self._box.check_image()
            _open_sessions.add(self)
            self.opened = True
            self._box.provision(self.handler, self._manager.on_control)
            self._manager.start()
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
        return self._cells.execute(code, self.settings.cell_timeout_s if timeout is None else timeout)

    def attach_context(self, context: str | os.PathLike) -> None:
        """Give a started (warm) session its context: placed in its read-only context folder
        (hard-linked, not copied, when on the same filesystem) and loaded lazily by the next cell."""
        if not self.attachable:
            raise SandboxError("this session was not started to take a context later (attachable=False)")
        if self._box.attached is not None:
            raise SandboxError("this session already has a context; open a new session for another one")
        if not self.opened or self.closed:
            raise SessionClosed("attach_context needs an open session")
        self._box.place_context(Path(context).resolve())
        self._manager.send_attach()

    def add_context(self, context: str | os.PathLike, source: str | None = None) -> str:
        """Load another context (file or folder) in this attachable session's kernel, nothing lost;
        returns its variable: ``context`` for the first, then ``context_1``, ``context_2``, ..."""
        from rlm.sandbox import contexts

        return contexts.add_context(self, self._box.live_dirs, context, source)

    def interrupt(self) -> None:
        if self._box.bridge is not None:
            self._manager.interrupt()

    def close(self) -> None:
        """Remove the container and the run folders; safe to call any number of times."""
        if self.closed:
            return
        self.closed = True
        _open_sessions.discard(self)
        self._manager.close()
        self._box.close()
        self._manager.close_wake()
