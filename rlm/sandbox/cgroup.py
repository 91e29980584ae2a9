"""The CPU time a container has used, read on the host from its cgroup.

The session uses it to tell a cell that waits on a model from a cell that keeps computing while
a sub-call is in flight (a thread of its own, a forged request): waiting costs the container no
CPU, computing does.  Returns None where the cgroup cannot be read (another engine layout, a
remote engine); the session then relies on the sub-calls' deadlines alone.
"""

from __future__ import annotations

from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")
# (path under the cgroup root, file format): cgroup v1 and v2, Docker's cgroupfs and systemd drivers
_LAYOUTS = (
    ("cpuacct/docker/{id}/cpuacct.usage", "ns"),
    ("cpu,cpuacct/docker/{id}/cpuacct.usage", "ns"),
    ("cpuacct/system.slice/docker-{id}.scope/cpuacct.usage", "ns"),
    ("cpu,cpuacct/system.slice/docker-{id}.scope/cpuacct.usage", "ns"),
    ("system.slice/docker-{id}.scope/cpu.stat", "stat"),
    ("docker/{id}/cpu.stat", "stat"),
)


class ContainerCPU:
    """``seconds()``: CPU seconds used so far by every process of the container (None: unknown)."""

    def __init__(self, container_id: str | None, root: Path = _ROOT) -> None:
        self._file: Path | None = None
        self._kind = ""
        if not container_id or not all(c in "0123456789abcdef" for c in container_id):
            return  # only a full hexadecimal id names a cgroup; never build a path from anything else
        for pattern, kind in _LAYOUTS:
            path = root / pattern.format(id=container_id)
            if path.is_file():
                self._file, self._kind = path, kind
                return

    def seconds(self) -> float | None:
        if self._file is None:
            return None
        try:
            text = self._file.read_text()
        except OSError:
            return None
        try:
            if self._kind == "ns":
                return int(text.strip()) / 1e9
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        except ValueError:
            return None
        return None
