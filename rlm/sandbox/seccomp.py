"""rlm's seccomp profile: everything allowed except the syscalls a REPL never needs and
kernel attack surface that capabilities alone do not close.

Docker's own default profile (20.10) still lets a container call ``ptrace`` and
``io_uring_*``; this profile refuses those, namespace creation (``unshare``, ``setns``,
``clone`` with CLONE_NEW* flags, including unprivileged user namespaces), the kernel
keyring, ``bpf``, ``perf_event_open``, ``userfaultfd``, mounts, module loading, clock
setting and the other privileged calls (which ``cap_drop=ALL`` already denies; refusing
them here too is defence in depth).  ``clone3`` answers ENOSYS so libc falls back to
``clone``, whose flags can be checked.
"""

from __future__ import annotations

import json
import platform

EPERM = 1
ENOSYS = 38

DENIED = (
    # debugging other processes and reading their memory
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    # io_uring: a large, frequently exploited kernel surface
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # namespaces
    "unshare", "setns",
    # kernel keyring
    "add_key", "keyctl", "request_key",
    # BPF, perf, userfaultfd
    "bpf", "perf_event_open", "userfaultfd",
    # mounts and file handles
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at", "fanotify_init",
    # modules, kexec, reboot, swap, accounting, quotas
    "init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
    "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    # clocks, I/O ports, kernel logs, obsolete calls
    "clock_adjtime", "clock_settime", "settimeofday", "stime", "adjtimex", "ioperm", "iopl", "syslog",
    "lookup_dcookie", "nfsservctl", "sysfs", "_sysctl", "uselib", "ustat", "vm86", "vm86old",
)

CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "arm64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def profile(machine: str | None = None) -> dict:
    machine = (machine or platform.machine()).lower()
    rules: list[dict] = [
        {"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]
    clone_flags_arg = 1 if machine.startswith("s390") else 0
    for flag in CLONE_NAMESPACE_FLAGS:
        rules.append({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
                      "args": [{"index": clone_flags_arg, "value": flag, "valueTwo": flag,
                                "op": "SCMP_CMP_MASKED_EQ"}]})
    out: dict = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}
    if machine in _ARCHES:
        out["architectures"] = _ARCHES[machine]
    return out


def security_opt(setting: str) -> list[str]:
    """``security_opt`` entries for the ``seccomp`` setting: "rlm", "docker-default" or a JSON file path."""
    if setting == "docker-default":
        return []
    if setting == "rlm":
        return ["seccomp=" + json.dumps(profile(), separators=(",", ":"))]
    with open(setting, encoding="utf-8") as fh:
        return ["seccomp=" + json.dumps(json.load(fh), separators=(",", ":"))]
