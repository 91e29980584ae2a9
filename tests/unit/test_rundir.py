"""Run folders on the host: the sandbox uid never owns them; none ever lacks its owner record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlm.errors import SandboxError
from rlm.sandbox import reaper
from rlm.sandbox.rundir import NEW_PREFIX, OWNER_FILE, RunDirs, check_sandbox_uid
from rlm.sandbox.settings import SANDBOX_UID, SandboxSettings


def test_the_default_sandbox_uid_is_not_a_usual_host_uid() -> None:
    assert SandboxSettings().uid == SANDBOX_UID >= 60000
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile.sandbox").read_text()
    assert f"USER {SANDBOX_UID}:{SANDBOX_UID}" in dockerfile


def test_the_uid_rlm_runs_as_is_refused_as_sandbox_uid(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:x:{os.getuid()}:{os.getgid()}::/home/alice:/bin/sh\n")
    with pytest.raises(SandboxError) as err:
        check_sandbox_uid(os.getuid(), tmp_path / "runs", str(passwd))
    assert "alice" in err.value.message and "RLM_USER" in (err.value.hint or "")


def test_the_owner_of_the_run_root_is_refused_as_sandbox_uid(tmp_path: Path) -> None:
    owner = tmp_path.stat().st_uid
    with pytest.raises(SandboxError, match="owns the run folder"):
        check_sandbox_uid(owner, tmp_path)
    check_sandbox_uid(SANDBOX_UID, tmp_path)   # another uid is fine


def test_run_dirs_refuse_the_host_uid(tmp_path: Path) -> None:
    with pytest.raises(SandboxError):
        RunDirs.create(str(tmp_path / "r"), "abc", os.getuid())
    assert not (tmp_path / "r" / "abc").exists()


def test_a_new_run_folder_has_its_owner_record_and_no_temporary_name_left(tmp_path: Path) -> None:
    dirs = RunDirs.create(str(tmp_path / "r"), "abc123", SANDBOX_UID)
    assert json.loads((dirs.root / OWNER_FILE).read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["abc123"]
    assert {p.name for p in dirs.root.iterdir()} == {OWNER_FILE, "run", "bridge", "context"}


class _NoEngine:
    def list_labelled(self, label: str) -> list:
        return []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_reaper_removes_folders_of_dead_owners_and_unfinished_ones(tmp_path: Path) -> None:
    root = tmp_path / "r"
    live = RunDirs.create(str(root), "live", SANDBOX_UID).root
    dead = root / "dead"
    dead.mkdir()
    (dead / OWNER_FILE).write_text(json.dumps({"pid": _dead_pid(), "start": "1"}))
    unfinished = root / f"{NEW_PREFIX}{_dead_pid()}-x"      # its creator died before the rename
    unfinished.mkdir()
    building = root / f"{NEW_PREFIX}{os.getpid()}-y"         # a live creator, still building
    building.mkdir()
    no_record_old = root / "old"
    no_record_old.mkdir()
    past = time.time() - reaper.STALE_AFTER_S - 5
    os.utime(no_record_old, (past, past))
    no_record_new = root / "new"
    no_record_new.mkdir()
    report = reaper.reap_orphans(_NoEngine(), str(root))  # type: ignore[arg-type]
    assert sorted(Path(p).name for p in report.run_dirs) == sorted([dead.name, unfinished.name, "old"])
    assert live.exists() and building.exists() and no_record_new.exists()
    assert reaper.STALE_AFTER_S <= 30
