"""The sandbox container's provisioning and lifecycle (the kernel provisioner, in jupyter_client's terms).

What a session stands on, in the order it is provisioned and the reverse order it is released:
the engine, the run folders, the bridge sockets and the container itself.  Nothing here talks to
the kernel: the manager (manager.py) starts, watches and restarts it through the supervisor.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Callable, TypeVar

from rlm.errors import ImageMissing, SandboxError, SessionClosed
from rlm.sandbox.bridge import BridgeServer, Handler
from rlm.sandbox.context_fit import check_context_path, context_format
from rlm.sandbox.engine import ContainerSpec, Engine
from rlm.sandbox.kernel import new_key
from rlm.sandbox.protocol import CONTAINER_CONTEXT
from rlm.sandbox.provisioner import container_spec
from rlm.sandbox.reaper import reap_orphans
from rlm.sandbox.rundir import RunDirs, write_connection_file
from rlm.sandbox.settings import SandboxSettings

log = logging.getLogger(__name__)


def signal_name(code: int | None) -> str:
    """How a process ended, in words: ``exit code 1``, ``killed by SIGKILL``."""
    if code is None:
        return "unknown status"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


_T = TypeVar("_T")


def _live(value: _T | None, closed: str = "this sandbox session is not open") -> _T:
    """``value``, the part of a provisioned container asked for; a SessionClosed when it is not there."""
    if value is None:
        raise SessionClosed(closed)
    return value


class SandboxContainer:
    """One session's engine, run folders, bridge and container.  ``context_path`` is checked before
    anything is provisioned; a warm (``attachable``) container takes its context later by ``place_context``."""

    def __init__(self, settings: SandboxSettings, session_id: str, *, engine: Engine | None,
                 context_path: Path | None, attachable: bool) -> None:
        self.settings = settings
        self.session_id = session_id
        self.context_path = context_path
        self.attachable = attachable
        self.attached: tuple[str, str] | None = None  # (path inside, format) once a context is placed
        self.engine = engine
        self.own_engine = engine is None
        self.dirs: RunDirs | None = None
        self.bridge: BridgeServer | None = None
        self.id: str | None = None
        self.connection: dict | None = None

    # What a provisioned container has; reaching for it otherwise is a SessionClosed.
    @property
    def live_bridge(self) -> BridgeServer:
        return _live(self.bridge)

    @property
    def live_dirs(self) -> RunDirs:
        return _live(self.dirs)

    @property
    def live_engine(self) -> Engine:
        return _live(self.engine)

    @property
    def live_connection(self) -> dict:
        return _live(self.connection, "this sandbox session has no kernel")

    @property
    def uid(self) -> int:
        return int(self.settings.user.split(":")[0])

    def check_context(self) -> None:
        path = self.context_path
        if path is None:
            return
        check_context_path(path, self.settings, hint="check the path given with -f")

    def check_image(self) -> None:
        """The engine (opened here when none was given), the image, and the orphans of dead owners reaped."""
        if self.engine is None:
            self.engine = Engine()
        if not self.live_engine.image_exists(self.settings.image):
            raise ImageMissing(f"the sandbox image {self.settings.image} is not built",
                               hint="run `rlm sandbox build` (or ./scripts/rlm setup)")
        reap_orphans(self.engine, self.settings.resolved_run_root)

    def provision(self, handler: Handler | None, on_control: Callable[[dict], None]) -> None:
        """The run folders and the bridge sockets (listening) the container will be started on."""
        self.dirs = RunDirs.create(self.settings.resolved_run_root, self.session_id, self.uid)
        self.bridge = BridgeServer(self.live_dirs.bridge, allowed_uids={self.uid, os.getuid()},
                                   on_control=on_control, handler=handler,
                                   max_frame=self.settings.bridge_max_frame)
        self.live_bridge.start()

    def place_context(self, path: Path) -> tuple[str, str]:
        """A warm container's context: checked, placed in its read-only context folder (hard-linked when
        possible); returns (path inside, format) for the kernel to load."""
        self.context_path = path
        self.check_context()
        placed = self.live_dirs.place_context(path)
        self.attached = (f"{CONTAINER_CONTEXT}/{placed.name}", context_format(path))
        return self.attached

    def spec(self, generation: int) -> ContainerSpec:
        context: tuple[Path, str] | None = None
        if self.attachable:
            context = None
        elif self.context_path is not None:
            context = (self.context_path, context_format(self.context_path))
        return container_spec(self.settings, session_id=self.session_id, generation=generation,
                              dirs=self.live_dirs, attachable=self.attachable, attached=self.attached,
                              context=context)

    def start(self, generation: int) -> None:
        """A new connection file, the run folder opened to the kernel, and the container started."""
        self.connection = write_connection_file(self.live_dirs.run, new_key(), self.uid)
        self.live_dirs.unlock_run(self.uid)
        self.id = self.live_engine.run(self.spec(generation))

    def check_alive(self) -> None:
        """Raise if the container stopped (while starting: a broken image, a bad runtime)."""
        info = self.live_engine.inspect(self.id) if self.id else None
        if info is None or info.status in ("exited", "dead"):
            code = None if info is None else info.exit_code
            raise SandboxError(f"the sandbox container stopped while starting ({signal_name(code)})",
                               hint="run `rlm sandbox build --force` to rebuild the image")

    def discard(self) -> None:
        """Remove the container (before a new one is started): the bridge waits for a new supervisor.
        The run folder is emptied by ``clear_run`` once the old supervisor's events are dropped."""
        if self.id is not None:
            self.live_engine.remove(self.id)
            self.id = None
        self.live_bridge.expect_new_supervisor()

    def clear_run(self) -> None:
        self.live_dirs.clear_run()

    def close(self) -> None:
        """Release everything, in reverse order; a container that cannot be removed is logged (the
        reaper removes it later)."""
        if self.id is not None and self.engine is not None:
            try:
                self.live_engine.remove(self.id)
            except SandboxError as exc:
                log.warning("could not remove container %s: %s", self.id[:12], exc)
            self.id = None
        if self.bridge is not None:
            self.live_bridge.cancel_in_flight()
            self.live_bridge.close()
        if self.dirs is not None:
            self.live_dirs.remove()
        if self.own_engine and self.engine is not None:
            self.live_engine.close()
