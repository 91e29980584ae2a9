"""Per-session folders on the host, and safe paths to sockets the sandbox created.

Layout (short paths: Unix socket paths must stay under ~107 characters)::

    <run_root>/<session id>/owner.json   host-only: owner pid + start time (for the reaper)
    <run_root>/<session id>/run/         mounted read-write at /rlm/run (kernel sockets, connection file)
    <run_root>/<session id>/bridge/      mounted read-only at /rlm/bridge (host-served sockets)

The sandbox can plant symlinks or hard links in ``run/``.  The host never follows a path
there: ``open_socket_path`` opens with O_PATH|O_NOFOLLOW, checks the inode is a socket
owned by the sandbox user, and hands out ``/proc/self/fd/N`` so that later connects reach
exactly that inode.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from rlm.errors import SandboxError
from rlm.sandbox.protocol import CONNECTION_FILE_NAME, CONTAINER_BRIDGE, CONTAINER_CONTEXT, CONTAINER_RUN

__all__ = ["CONTAINER_BRIDGE", "CONTAINER_CONTEXT", "CONTAINER_RUN", "RunDirs", "SocketPath",
           "write_connection_file"]

OWNER_FILE = "owner.json"
NEW_PREFIX = ".new-"     # a run folder being built: ".new-<owner pid>-<session id>"
KERNEL_FILES = frozenset({CONNECTION_FILE_NAME, "k-1", "k-2", "k-3", "k-4", "k-5"})


def process_start_time(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot) to tell a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def owner_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start is None or process_start_time(pid) == start


def _account(uid: int, passwd: str = "/etc/passwd") -> str | None:
    """The host account name of ``uid`` in ``passwd``, or None."""
    try:
        with open(passwd, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split(":")
                if len(fields) > 2 and fields[2] == str(uid):
                    return fields[0]
    except OSError:
        pass
    return None


def check_sandbox_uid(sandbox_uid: int, run_root: Path, passwd: str = "/etc/passwd") -> None:
    """Refuse a sandbox uid that would own the run folder on the host: the uid rlm runs as, or the owner
    of the run root.  The container's processes run with that uid on the host kernel (runc; gVisor's gofer
    too), so such a sandbox could chmod the run folder, fill the disk through it, plant links and FIFOs."""
    owners = {os.getuid(), os.geteuid()}
    try:
        if run_root.exists():
            owners.add(run_root.stat().st_uid)
    except OSError:
        pass
    if sandbox_uid in owners:
        name = _account(sandbox_uid, passwd)
        who = f"uid {sandbox_uid}" + (f" ({name} on this host)" if name else "")
        raise SandboxError(
            f"the sandbox user {who} is the user rlm runs as or owns the run folder {run_root}: model code "
            f"would own its run folder on the host",
            hint="set the sandbox user (RLM_USER, sandbox.user in YAML, SandboxSettings.user) to a uid no host "
                 "account has; the default is 61000:61000")


@dataclass(frozen=True)
class RunDirs:
    root: Path
    run: Path
    bridge: Path
    context: Path

    @classmethod
    def create(cls, run_root: str, session_id: str, sandbox_uid: int) -> "RunDirs":
        base = Path(run_root)
        check_sandbox_uid(sandbox_uid, base)
        if len(str(base / session_id / "run")) + 12 > 100:
            raise SandboxError(f"run folder {base / session_id / 'run'} is too long for Unix sockets; "
                               "set a shorter run_root")
        try:
            base.mkdir(mode=0o700, parents=True, exist_ok=True)
            if base.is_symlink() or base.stat().st_uid != os.getuid():
                raise SandboxError(f"run folder {base} is not owned by this user; choose another run_root")
            root = base / session_id
            # Built complete under a temporary name that carries the owner's pid, then renamed: no
            # folder under its final name ever lacks owner.json (an interrupt between the two steps
            # leaves a ".new-<pid>-..." folder, which the reaper removes once that pid is gone).
            building = base / f"{NEW_PREFIX}{os.getpid()}-{session_id}"
            building.mkdir(mode=0o700)
            try:
                (building / OWNER_FILE).write_text(json.dumps(
                    {"pid": os.getpid(), "start": process_start_time(os.getpid())}))
                for name, mode in (("run", 0o711), ("bridge", 0o755), ("context", 0o755)):
                    (building / name).mkdir(mode=mode)
                    os.chmod(building / name, mode)   # whatever the umask
                os.chmod(building, 0o711)
                os.rename(building, root)
            except BaseException:
                shutil.rmtree(building, ignore_errors=True)
                raise
        except OSError as exc:
            raise SandboxError(f"cannot create the session's run folder under {base}: {exc}") from exc
        return cls(root=root, run=root / "run", bridge=root / "bridge", context=root / "context")

    def unlock_run(self, sandbox_uid: int) -> None:
        """Let the kernel (re)create its sockets in run/ (only while it starts)."""
        if os.geteuid() == 0:
            os.chown(self.run, sandbox_uid, sandbox_uid)
            os.chmod(self.run, 0o700)
        else:  # the sandbox user cannot be given the folder; the 0700 parents keep other users out
            os.chmod(self.run, 0o777)

    def lock_run(self) -> None:
        """Once the kernel's sockets exist, the sandbox may no longer create files in run/
        (it is on the host's disk: no filling it, no planting links for later).  Anything
        but the connection file and the kernel's sockets is removed (links are not followed)."""
        if os.geteuid() == 0:
            os.chown(self.run, 0, 0)
        os.chmod(self.run, 0o711)
        for entry in os.scandir(self.run):
            if entry.name in KERNEL_FILES:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                Path(entry.path).unlink(missing_ok=True)

    def clear_run(self) -> None:
        """Empty the kernel's folder (before a container is recreated) without following links."""
        for entry in os.scandir(self.run):
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def place_context(self, source: Path) -> Path:
        """Put ``source`` (file or folder) into the context folder without copying bytes when possible.

        Files are hard-linked (same filesystem) and copied otherwise; folders are rebuilt
        from hard links.  Returns the placed path.
        """
        target = self.context / (source.name or "context")
        if source.is_dir():
            shutil.copytree(source, target, copy_function=_link_or_copy, symlinks=False)
        else:
            _link_or_copy(str(source), str(target))
        return target

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)  # rmtree never follows symlinks


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=True)
    except OSError:
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)


class SocketPath:
    """An O_PATH handle on a socket inode; ``endpoint`` connects to exactly that inode."""

    def __init__(self, path: Path, allowed_uids: set[int]) -> None:
        try:
            self.fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise SandboxError(f"kernel socket {path.name} is missing: {exc.strerror}") from exc
        info = os.fstat(self.fd)
        if not stat.S_ISSOCK(info.st_mode) or info.st_uid not in allowed_uids or info.st_nlink != 1:
            os.close(self.fd)
            raise SandboxError(f"kernel socket {path.name} is not a socket owned by the sandbox user; refusing it")
        self.path = f"/proc/self/fd/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_connection_file(run: Path, key: str, sandbox_uid: int) -> dict:
    """Write the kernel's connection file (ipc transport, container paths); return it."""
    info = {"transport": "ipc", "ip": f"{CONTAINER_RUN}/k", "shell_port": 1, "iopub_port": 2,
            "stdin_port": 3, "control_port": 4, "hb_port": 5, "key": key,
            "signature_scheme": "hmac-sha256", "kernel_name": "rlm"}
    path = run / CONNECTION_FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh)
    os.chmod(path, 0o644)  # host-owned: the kernel reads it and never needs to write it
    return info
