"""Cleanup when the owner process ends: normal exit, SIGINT, SIGTERM (no reaper involved)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

# Opens a session without closing it, reports it, then waits for the test to end it (stdin EOF or a signal).
CHILD = """
import faulthandler, signal, sys
faulthandler.register(signal.SIGUSR1, all_threads=True)  # lets the test see where a stuck child hangs
from rlm.sandbox import SandboxSession, SandboxSettings
s = SandboxSession(settings=SandboxSettings(run_root=sys.argv[1])).open()
assert s.execute("x = 1").ok
untouched = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # library code installs no signal handler


def on_sigterm(signum, frame):  # the program's own (as the CLI's): unwinding lets atexit close the session
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, on_sigterm)
print(s.container_id, s.run_dir, untouched, flush=True)
sys.stdin.read()
"""


@pytest.fixture
def run_root():
    root = tempfile.mkdtemp(prefix="rlm-exit-", dir="/tmp")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _sigint_default() -> None:
    """In the child, before exec: a background job ignores SIGINT and children inherit that, so the
    test's Ctrl-C would never reach the child; with the default restored, Python turns it into
    KeyboardInterrupt as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_child(engine, run_root: str, how: str) -> tuple[str, Path, int]:
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, run_root], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=_sigint_default)
    try:
        line = proc.stdout.readline()  # the session is open once this line arrives
        assert line, "the child did not open a session"
        container, run_dir, untouched = line.split()
        assert untouched == "True", "opening a session changed the SIGTERM handler"
        assert engine.inspect(container) is not None
        if how == "exit":
            proc.stdin.close()
        else:
            proc.send_signal(getattr(signal, how))
        try:
            code = proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # dump every thread's stack to stderr, then fail with it
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            err.seek(0)
            pytest.fail(f"the owner did not exit within 45 s after {how}; its stacks:\n{err.read()[-6000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
    return container, Path(run_dir), code


@pytest.mark.parametrize("how", ["exit", "SIGINT", "SIGTERM"])
def test_owner_ending_cleans_up(engine, run_root, how):
    """The owner closes its session itself: the container is removed and the run folder deleted at once."""
    container, run_dir, _ = _run_child(engine, run_root, how)
    try:
        assert engine.inspect(container) is None
        assert not run_dir.exists()
    finally:
        engine.remove(container)
