"""Typed settings of a sandbox session: every hardening choice and limit is a field."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

DEFAULT_IMAGE = "rlm-sandbox:latest"
# The uid:gid model code runs as.  A high uid that no host user is likely to have (regular accounts
# start at 1000, systemd's dynamic users at 61184): the sandbox must never be the owner of the run
# folder on the host (it could chmod it, fill it, plant links).  Dockerfile.sandbox makes this user.
SANDBOX_UID = 61000
DEFAULT_USER = f"{SANDBOX_UID}:{SANDBOX_UID}"
# The container labels that say whose session it is: the reaper reads them to find a session's owner,
# so ``extra_labels`` may not name one (rlm sets them itself, after the extra ones).
OWNER_LABELS = ("rlm.session", "rlm.owner_pid", "rlm.owner_start", "rlm.owner_host", "rlm.run_dir")


@dataclass(frozen=True)
class SandboxSettings:
    image: str = DEFAULT_IMAGE
    runtime: str | None = None          # None/"auto": gVisor (runsc) when the engine has it, else runc;
                                        # "runc"; or any registered runtime name (see rlm/sandbox/runtime.py)
    network_mode: str = "none"
    read_only_rootfs: bool = True
    tmpfs_mb: int = 64                  # /tmp inside the container
    home_tmpfs_mb: int = 16             # $HOME inside the container
    user: str = DEFAULT_USER            # uid:gid; never the uid rlm runs as (refused at start, see rundir.py)
    cap_drop: tuple[str, ...] = ("ALL",)
    no_new_privileges: bool = True
    seccomp: str = "rlm"                # "rlm" (rlm's profile), "docker-default", or a profile JSON file
    pids_limit: int = 128
    memory_mb: int = 2048               # cgroup memory limit; swap limit equal (no extra swap)
    address_space_margin_mb: int = 96   # RLIMIT_AS = memory - tmpfs sizes - margin
    cpus: float = 1.0
    nofile: int = 256                   # RLIMIT_NOFILE
    fsize_mb: int = 256                 # RLIMIT_FSIZE: largest file a cell may write
    init: bool = False                  # Docker's tini as pid 1; off: rlm's supervisor is pid 1 (it reaps
                                        # orphans and, as pid 1, cannot be killed from inside)
    cell_timeout_s: float = 30.0        # EXECUTION_TIMEOUT
    interrupt_grace_s: float = 2.0      # after an interrupt, how long before the kernel is restarted
    start_timeout_s: float = 30.0       # container + kernel ready
    output_limit_bytes: int = 1024 * 1024   # stdout/stderr kept per cell (head and tail)
    final_limit_chars: int = 1024 * 1024    # largest FINAL answer kept
    bridge_max_frame: int = 1024 * 1024
    run_root: str | None = None         # host folder for run directories; default /tmp/rlm-<uid>
    extra_labels: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        problems = []
        for name in ("tmpfs_mb", "home_tmpfs_mb", "pids_limit", "memory_mb", "nofile", "fsize_mb",
                     "output_limit_bytes", "final_limit_chars", "bridge_max_frame"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive (got {getattr(self, name)})")
        for name in ("cpus", "cell_timeout_s", "interrupt_grace_s", "start_timeout_s"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive (got {getattr(self, name)})")
        if not _valid_user(self.user):
            problems.append(f"user must be uid:gid in numbers (got {self.user!r})")
        if self.address_space_limit_bytes <= 64 * 1024 * 1024:
            problems.append("memory_mb is too small for the tmpfs sizes and margin")
        if problems:
            from rlm.errors import ConfigError

            raise ConfigError("invalid sandbox settings: " + "; ".join(problems))

    @property
    def address_space_limit_bytes(self) -> int:
        mb = self.memory_mb - self.tmpfs_mb - self.home_tmpfs_mb - self.address_space_margin_mb
        return mb * 1024 * 1024

    @property
    def uid(self) -> int:
        return int(self.user.split(":")[0])

    @property
    def resolved_run_root(self) -> str:
        return self.run_root or f"/tmp/rlm-{os.getuid()}"

    def with_(self, **changes) -> "SandboxSettings":
        return replace(self, **changes)


def _valid_user(user: str) -> bool:
    parts = str(user).split(":")
    return 1 <= len(parts) <= 2 and all(p.isdigit() for p in parts)
