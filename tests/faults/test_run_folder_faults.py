"""Fault round 2 on run folders (issue 33: D11): no run folder lacks its owner record, and what an
interrupted owner leaves is removed by ``rlm sandbox prune`` (the reaper) at once or after a short grace,
not after 300 s.  Marker ``docker``: the reaper also asks the engine for orphaned containers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm.sandbox.reaper import STALE_AFTER_S
from rlm.sandbox.rundir import NEW_PREFIX, OWNER_FILE

from .conftest import cli_env, run_cli, sigint_default

pytestmark = pytest.mark.docker

# A child that builds a run folder and is killed (SIGKILL: no cleanup of any kind) just before the
# rename that gives the folder its final name: the worst moment for an interrupt.
KILLED_WHILE_BUILDING = """
import os, signal, sys
from rlm.sandbox.rundir import RunDirs
os.rename = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
RunDirs.create(sys.argv[1], "sess01", 61000)
"""


@pytest.fixture
def run_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="rlm-f-"))     # short: Unix socket paths live under it
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _prune(run_root: Path, cwd: Path) -> list[str]:
    result = run_cli("sandbox", "prune", env=cli_env(RLM_RUN_ROOT=str(run_root)), cwd=cwd, timeout=60)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return [Path(line.strip()).name for line in result.stdout.splitlines()[1:]]


def test_an_owner_killed_while_building_leaves_no_folder_without_its_record(run_root: Path, tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", KILLED_WHILE_BUILDING, str(run_root)],
                             stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, stderr
    left = sorted(p.name for p in run_root.iterdir())
    assert left == [f"{NEW_PREFIX}{child.pid}-sess01"], left            # never under its final name
    assert json.loads((run_root / left[0] / OWNER_FILE).read_text())["pid"] == child.pid
    assert _prune(run_root, tmp_path) == left                           # its pid is gone: removed at once
    assert list(run_root.iterdir()) == []


def test_a_folder_without_owner_record_is_removed_after_its_short_grace(run_root: Path, tmp_path: Path) -> None:
    stale, fresh = run_root / "stale01", run_root / "fresh01"
    stale.mkdir()
    fresh.mkdir()
    past = time.time() - STALE_AFTER_S - 5
    os.utime(stale, (past, past))
    assert STALE_AFTER_S <= 30                                          # a grace, not the 300 s of before
    assert _prune(run_root, tmp_path) == ["stale01"]
    assert sorted(p.name for p in run_root.iterdir()) == ["fresh01"]    # may still be being built


def test_a_live_owners_folder_under_construction_is_left_alone(run_root: Path, tmp_path: Path) -> None:
    building = run_root / f"{NEW_PREFIX}{os.getpid()}-sess02"
    building.mkdir()
    past = time.time() - STALE_AFTER_S / 2
    os.utime(building, (past, past))
    assert _prune(run_root, tmp_path) == []
    assert building.exists()
