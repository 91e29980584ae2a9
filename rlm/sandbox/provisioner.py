"""The container a session runs in: its spec (mounts, limits, hardening, labels), from settings.

Everything that decides *how* the container is confined lives here, so a runtime's needs
(runc + seccomp, or gVisor) are read in one place.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from rlm.sandbox import runtime as runtimes
from rlm.sandbox import seccomp
from rlm.sandbox.engine import ContainerSpec, Mount
from rlm.sandbox.protocol import (
    CONTAINER_BRIDGE,
    CONTAINER_CONTEXT,
    CONTAINER_RUN,
    SANDBOX_HOME,
    SUPERVISOR_COMMAND,
    Env,
)
from rlm.sandbox.rundir import RunDirs, process_start_time
from rlm.sandbox.settings import SandboxSettings

SUPERVISOR = list(SUPERVISOR_COMMAND)
LABEL = "rlm.session"
HOME = SANDBOX_HOME


def container_spec(s: SandboxSettings, *, session_id: str, generation: int, dirs: RunDirs, attachable: bool,
                   attached: tuple[str, str] | None, context: tuple[Path, str] | None) -> ContainerSpec:
    """The spec of generation ``generation`` of session ``session_id``'s container.

    ``context`` is a fixed context (host path, format) mounted read-only; an ``attachable``
    session mounts its context folder instead and names the ``attached`` file, if any.
    """
    uid = int(s.user.split(":")[0])
    runtime = runtimes.resolve(s.runtime)
    limits = runtimes.limits(runtime, s.pids_limit, s.memory_mb)
    ulimits = [("nofile", s.nofile, s.nofile), ("fsize", s.fsize_mb * 1024 * 1024, s.fsize_mb * 1024 * 1024)]
    if limits.nproc is not None:   # gVisor: its kernel counts processes and threads per uid (see runtime.py)
        ulimits.append(("nproc", limits.nproc, limits.nproc))
    env = {Env.AS_LIMIT: str(s.address_space_limit_bytes), Env.OUTPUT_LIMIT: str(s.output_limit_bytes),
           Env.FINAL_LIMIT: str(s.final_limit_chars), Env.BRIDGE_MAX_FRAME: str(s.bridge_max_frame)}
    mounts = [Mount(str(dirs.run), CONTAINER_RUN, read_only=False),
              Mount(str(dirs.bridge), CONTAINER_BRIDGE, read_only=True)]
    if attachable:
        mounts.append(Mount(str(dirs.context), CONTAINER_CONTEXT, read_only=True))
        if attached is not None:
            env[Env.CONTEXT_PATH], env[Env.CONTEXT_FORMAT] = attached
    elif context is not None:
        path, fmt = context
        target = f"{CONTAINER_CONTEXT}/{path.name or 'context'}"
        mounts.append(Mount(str(path), target, read_only=True))
        env[Env.CONTEXT_PATH] = target
        env[Env.CONTEXT_FORMAT] = fmt
    # rlm's own labels last: the user's extra labels never stand in for them
    labels = {**dict(s.extra_labels), LABEL: session_id, "rlm.owner_pid": str(os.getpid()),
              "rlm.owner_start": process_start_time(os.getpid()) or "",
              "rlm.owner_host": socket.gethostname(), "rlm.run_dir": str(dirs.root)}
    return ContainerSpec(
        image=s.image, command=SUPERVISOR, name=f"rlm-{session_id}-{generation}", user=s.user,
        environment=env, labels=labels, mounts=mounts,
        tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={s.tmpfs_mb}m",
               HOME: f"rw,nosuid,nodev,noexec,size={s.home_tmpfs_mb}m,uid={uid},gid={uid},mode=0700"},
        network_mode=s.network_mode, read_only=s.read_only_rootfs, cap_drop=list(s.cap_drop),
        security_opt=(["no-new-privileges:true"] if s.no_new_privileges else []) + seccomp.security_opt(s.seccomp),
        pids_limit=limits.pids_limit, mem_limit_bytes=s.memory_mb * 1024 * 1024,
        memswap_limit_bytes=s.memory_mb * 1024 * 1024, nano_cpus=int(s.cpus * 1e9),
        ulimits=ulimits, init=s.init, runtime=runtime, working_dir=HOME)
