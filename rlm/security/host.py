"""What the host kernel sees of a session's container: its host processes, their seccomp state and
namespaces, its cgroup limits.

Under gVisor the guest's processes are not host processes: the container's host processes are the
Sentry (gVisor's kernel), the gofer and the ptrace stubs.  The checks judge gVisor by what reaches the
host: these processes stay seccomp-filtered with no_new_privs, their namespaces do not change whatever
the guest calls, and the host cgroup holds the CPU and memory limits.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

_CGROUP_DIRS = ("/sys/fs/cgroup/pids/docker/{id}", "/sys/fs/cgroup/pids/system.slice/docker-{id}.scope",
                "/sys/fs/cgroup/docker/{id}", "/sys/fs/cgroup/system.slice/docker-{id}.scope")
_CPU_DIRS = ("/sys/fs/cgroup/cpu,cpuacct/docker/{id}", "/sys/fs/cgroup/cpu/docker/{id}",
             "/sys/fs/cgroup/cpu,cpuacct/system.slice/docker-{id}.scope", "/sys/fs/cgroup/docker/{id}",
             "/sys/fs/cgroup/system.slice/docker-{id}.scope")


def _first_dir(patterns: tuple[str, ...], container_id: str) -> Path | None:
    for pattern in patterns:
        for found in glob.glob(pattern.format(id=container_id)):
            if os.path.isdir(found):
                return Path(found)
    return None


def host_pids(container_id: str) -> list[int]:
    """Host pids of every process in the container's cgroup ([] when the cgroup cannot be read)."""
    folder = _first_dir(_CGROUP_DIRS, container_id)
    if folder is None:
        return []
    try:
        return [int(p) for p in (folder / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def host_status(pids: list[int]) -> dict[int, dict[str, str]]:
    """Seccomp, NoNewPrivs and CapEff of each host process, as the host kernel reports them."""
    out = {}
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        out[pid] = {k: fields.get(k, "").strip() for k in ("Name", "Seccomp", "NoNewPrivs", "CapEff")}
    return out


def filtered(container_id: str) -> tuple[bool, str]:
    """Every host process of the container runs under a seccomp filter with no_new_privs."""
    status = host_status(host_pids(container_id))
    if not status:
        return False, "cannot read the container's host processes (cgroup or /proc)"
    bad = {pid: s for pid, s in status.items() if s["Seccomp"] != "2" or s["NoNewPrivs"] != "1"}
    names = sorted({s["Name"] for s in status.values()})
    if bad:
        return False, f"HOST PROCESSES WITHOUT SECCOMP/no_new_privs: {bad}"
    return True, f"{len(status)} host processes ({', '.join(names)}) all seccomp-filtered with no_new_privs"


def host_namespaces(container_id: str) -> set[str]:
    """The host namespaces (``ns:[inode]`` links) of the container's host processes."""
    found: set[str] = set()
    for pid in host_pids(container_id):
        try:
            for name in os.listdir(f"/proc/{pid}/ns"):
                found.add(f"{name}:{os.readlink(f'/proc/{pid}/ns/{name}')}")
        except OSError:
            continue
    return found


def cpu_limit(container_id: str) -> float | None:
    """The container's CPU quota in CPUs, read from the host cgroup (v1 or v2); None when unlimited/unread."""
    folder = _first_dir(_CPU_DIRS, container_id)
    if folder is None:
        return None
    try:
        if (folder / "cpu.max").exists():
            quota, period = (folder / "cpu.max").read_text().split()
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int((folder / "cpu.cfs_quota_us").read_text())
        period_us = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us < 0 else quota_us / period_us
