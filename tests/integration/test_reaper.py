"""reap_orphans: containers and run folders whose owner process is dead are removed; live ones are not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import pytest

from rlm.sandbox import SandboxSession, SandboxSettings
from rlm.sandbox.reaper import STALE_AFTER_S, reap_orphans

pytestmark = pytest.mark.docker

# Opens a session, optionally freezes the in-container supervisor (so the container cannot notice that
# its owner died and stop by itself), prints the container id and run folder, and dies without closing.
CHILD = """
import os, sys
from rlm.sandbox import SandboxSession, SandboxSettings
run_root, freeze = sys.argv[1], sys.argv[2] == "freeze"
s = SandboxSession(settings=SandboxSettings(run_root=run_root)).open()
if freeze:
    ex = s.execute("import os, signal\\nos.kill(os.getppid(), signal.SIGSTOP)")
    assert ex.ok, ex.output
print(s.container_id, s.run_dir, flush=True)
os._exit(0)
"""


@pytest.fixture
def run_root():
    root = tempfile.mkdtemp(prefix="rlm-reap-", dir="/tmp")  # short: Unix socket paths must stay short
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _orphan(run_root: str, freeze: bool) -> tuple[str, Path]:
    done = subprocess.run([sys.executable, "-c", CHILD, run_root, "freeze" if freeze else "plain"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    container, run_dir = done.stdout.split()
    return container, Path(run_dir)


def _wait_removed(container: str, timeout: float = 20) -> None:
    """Block until the engine reports the container removed (an engine event, not a sleep)."""
    client = docker.from_env()
    try:
        client.api.wait(container, timeout=timeout, condition="removed")
    except docker.errors.NotFound:
        pass
    finally:
        client.close()


def test_orphan_of_a_dead_owner_is_reaped(engine, run_root):
    container, run_dir = _orphan(run_root, freeze=False)
    try:
        assert run_dir.is_dir()  # os._exit: the owner never cleaned up
        report = reap_orphans(engine, run_root)
        # the container may already be stopping on its own (its control socket closed): then the engine's
        # auto-removal is in progress and Engine.remove returns before it completes
        _wait_removed(container)
        assert engine.inspect(container) is None
        assert not run_dir.exists()
        assert str(run_dir) in report.run_dirs
    finally:
        engine.remove(container)


def test_running_container_of_a_dead_owner_is_removed(engine, run_root):
    container, run_dir = _orphan(run_root, freeze=True)
    try:
        info = engine.inspect(container)
        assert info is not None and info.status == "running"  # it outlived its owner
        report = reap_orphans(engine, run_root)
        assert info.name in report.containers
        assert engine.inspect(container) is None
        assert not run_dir.exists()
        assert str(run_dir) in report.run_dirs
    finally:
        engine.remove(container)


def test_live_sessions_are_not_reaped(engine, run_root):
    with SandboxSession(settings=SandboxSettings(run_root=run_root), engine=engine) as s:
        s.execute("kept = 5")
        report = reap_orphans(engine, run_root)
        assert s.run_dir.is_dir() and str(s.run_dir) not in report.run_dirs
        assert engine.inspect(s.container_id) is not None
        assert all(name != engine.inspect(s.container_id).name for name in report.containers)
        assert s.execute("print(kept)").stdout == "5\n"


def test_opening_a_session_reaps_orphans(engine, run_root):
    """The reaper runs on start: a new session cleans up after a dead owner."""
    container, run_dir = _orphan(run_root, freeze=True)
    try:
        assert engine.inspect(container) is not None
        with SandboxSession(settings=SandboxSettings(run_root=run_root), engine=engine) as s:
            assert engine.inspect(container) is None
            assert not run_dir.exists()
            assert s.execute("1 + 1").display == ["2"]
    finally:
        engine.remove(container)


def test_a_session_killed_while_its_folder_was_being_built_leaves_nothing(engine, run_root):
    """D11: a run folder is built under .new-<pid>-<id> and renamed with its owner record in it; a process
    killed before the rename leaves only the temporary folder, which the next start removes (its pid is
    gone), as it removes a folder with no owner record at all once it is older than a few seconds."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(child.stdout)
    unfinished = Path(run_root) / f".new-{dead_pid}-0123456789ab"
    (unfinished / "run").mkdir(parents=True)
    no_record = Path(run_root) / "abcdefabcdef"
    (no_record / "run").mkdir(parents=True)
    past = time.time() - STALE_AFTER_S - 1
    os.utime(no_record, (past, past))
    with SandboxSession(settings=SandboxSettings(run_root=run_root), engine=engine) as s:
        assert not unfinished.exists() and not no_record.exists()
        assert sorted(p.name for p in Path(run_root).iterdir()) == [s.id]
        assert (Path(run_root) / s.id / "owner.json").is_file()
