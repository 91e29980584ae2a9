"""Cleanup of what an owner process left behind: containers and run folders whose owner is gone."""

from __future__ import annotations

import json
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlm.sandbox.engine import Engine
from rlm.sandbox.rundir import owner_alive


@dataclass
class PruneReport:
    containers: list[str] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)


STALE_AFTER_S = 300.0


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
            owner_file = entry / "owner.json"
            try:
                owner = json.loads(owner_file.read_text())
                gone = not owner_alive(int(owner["pid"]), owner.get("start"))
            except (OSError, ValueError, KeyError, TypeError):
                # no readable owner: another process may be creating it right now; only stale ones go
                gone = entry.is_dir() and not owner_file.exists() and _age_s(entry) > STALE_AFTER_S
            if gone and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                report.run_dirs.append(str(entry))
    return report
