"""Cleanup of what an owner process left behind: containers and run folders whose owner is gone."""

from __future__ import annotations

import json
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlm.sandbox.engine import Engine
from rlm.sandbox.rundir import NEW_PREFIX, OWNER_FILE, owner_alive


@dataclass
class PruneReport:
    containers: list[str] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)


# A folder with no owner record: one being built by a process that has not renamed it yet (under
# ".new-<pid>-..."), or left by an older rlm that wrote owner.json after mkdir.  Building takes
# milliseconds: past this grace it is an orphan.
STALE_AFTER_S = 10.0


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _owner_gone(labels: dict[str, str]) -> bool:
    if labels.get("rlm.owner_host") not in (None, "", socket.gethostname()):
        return False  # another machine's session on a shared engine: not ours to judge
    try:
        pid = int(labels.get("rlm.owner_pid", ""))
    except ValueError:
        return True
    return not owner_alive(pid, labels.get("rlm.owner_start") or None)


def reap_orphans(engine: Engine, run_root: str) -> PruneReport:
    """Remove rlm containers and run folders whose owner process has exited."""
    report = PruneReport()
    for info in engine.list_labelled("rlm.session"):
        if _owner_gone(info.labels):
            engine.remove(info.id)
            report.containers.append(info.name)
    root = Path(run_root)
    if root.is_dir() and not root.is_symlink():
        for entry in root.iterdir():
            if entry.is_symlink() or not entry.is_dir():
                continue
            if _orphaned(entry):
                shutil.rmtree(entry, ignore_errors=True)
                report.run_dirs.append(str(entry))
    return report


def _orphaned(entry: Path) -> bool:
    """A run folder whose owner is gone: by its owner record, by the pid in its temporary name, or
    (no record at all) past a short grace."""
    owner_file = entry / OWNER_FILE
    try:
        owner = json.loads(owner_file.read_text())
        return not owner_alive(int(owner["pid"]), owner.get("start"))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError):
        return _age_s(owner_file) > STALE_AFTER_S   # unreadable or half-written record
    if entry.name.startswith(NEW_PREFIX):
        pid = entry.name[len(NEW_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not owner_alive(int(pid), None):
            return True
    return _age_s(entry) > STALE_AFTER_S
