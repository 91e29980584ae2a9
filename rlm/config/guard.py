"""What weakens the sandbox: settings whose values differ from the hardened defaults in a way that
gives model code more reach.  Such a value is refused unless the user said ``--unsafe-sandbox`` on
the command line (or ``unsafe_sandbox=True`` in ``RLM(...)``), whatever layer it came from (a
trusted file, the environment, a flag, a keyword argument, a batch spec); with it, it applies and
every run lists it.  Raising limits (memory, pids, sizes) is not weakening."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["FILE_ONLY", "UNSAFE_FLAG", "WEAKENING_KEYS", "weakening"]

UNSAFE_FLAG = "--unsafe-sandbox"
_NUMERIC_USER = re.compile(r"[1-9][0-9]*:[1-9][0-9]*")
_STRONG_RUNTIMES = (None, "", "auto", "runsc")
# runc with rlm's seccomp profile is the documented floor: chosen in the environment or on the command
# line it is the user's word; a file (YAML, .env, a spec) may not downgrade the runtime behind their back.
FILE_ONLY = frozenset({"runtime"})


def _why(key: str, value: Any) -> str | None:
    if key == "network_mode":
        return None if value == "none" else "gives model code a network"
    if key == "user":
        return None if isinstance(value, str) and _NUMERIC_USER.fullmatch(value) else \
            "runs model code as root or an unnamed uid:gid (give uid:gid, both non-zero)"
    if key == "cap_drop":
        return None if any(str(c).upper() == "ALL" for c in value) else "keeps Linux capabilities (cap_drop without ALL)"
    if key == "seccomp":
        return None if value == "rlm" else "replaces rlm's seccomp profile"
    if key == "no_new_privileges":
        return None if value else "lets setuid binaries gain privileges"
    if key == "read_only_rootfs":
        return None if value else "makes the root filesystem writable"
    if key == "runtime":
        return None if value in _STRONG_RUNTIMES else "downgrades the runtime from gVisor (auto/runsc)"
    return None


WEAKENING_KEYS = ("network_mode", "user", "cap_drop", "seccomp", "no_new_privileges", "read_only_rootfs", "runtime")


def weakening(key: str, value: Any, *, from_file: bool) -> str | None:
    """Why ``value`` of ``key`` weakens the sandbox, or None (also None for keys that cannot)."""
    if key not in WEAKENING_KEYS or (key in FILE_ONLY and not from_file):
        return None
    return _why(key, value)
