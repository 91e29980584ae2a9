"""rlm's seccomp profile: an allowlist.  Syscalls not named here fail (ENOSYS for calls
newer than the list, so libc falls back; EPERM for the refused ones).

The allowlist is the Linux 6.1 x86_64 syscall table minus ``DENIED``.  Docker's own
default profile (20.10) still lets a container call ``ptrace`` and ``io_uring_*``; this
profile refuses those, namespace creation (``unshare``, ``setns``,
``clone`` with CLONE_NEW* flags, including unprivileged user namespaces), the kernel
keyring, ``bpf``, ``perf_event_open``, ``userfaultfd``, mounts, module loading, clock
setting and the other privileged calls (which ``cap_drop=ALL`` already denies; refusing
them here too is defence in depth).  ``clone3`` answers ENOSYS so libc falls back to
``clone``, whose flags can be checked.

``socket`` and ``socketpair`` are allowed only for the families in ``SOCKET_FAMILIES``
(AF_UNIX, AF_INET, AF_INET6, AF_NETLINK), compared on the whole 64-bit argument (a domain with
high bits set matches none); any other family gets the profile's refusal (runc's libseccomp
cannot give one syscall rules of two actions, so no EAFNOSUPPORT: EPERM, as Docker's own
profile answers AF_VSOCK).  Docker's default profile filters families too; without this,
AF_VSOCK sockets under runc bind in the host's vsock port space (a host ``bind`` of the
same port then fails with EADDRINUSE) and a connect to CID 1 leaves the container.
"""

from __future__ import annotations

import json
import platform

EPERM = 1
ENOSYS = 38

# socket(2) domains a cell may use: Unix sockets (the kernel's and the bridge's), IPv4/IPv6 (there is
# no network: only the container's own loopback), netlink (if_nameindex, getaddrinfo's interface scan).
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
SOCKET_FAMILIES = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)

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
    "lookup_dcookie", "nfsservctl", "sysfs", "_sysctl", "uselib", "ustat", "vm86", "vm86old", "modify_ldt",
    "process_madvise",
    # sync(2) and syncfs(2) write back every dirty page of a whole filesystem: the host's own disk for
    # the bind-mounted run folder (sync: every filesystem of the host).  A loop of them costs the host I/O
    # outside the container's quotas; a cell only ever needs fsync/fdatasync of its own files (allowed).
    "sync", "syncfs",
)

# Not in the allowlist and not in DENIED, so they answer ENOSYS as if this kernel lacked them:
# memfd_secret(2) makes memory that the kernel itself cannot map (taken out of the direct map, never
# swapped): hidden from every host-side inspection and an unaccounted way to pin host memory.  Libraries
# that probe for it fall back when it is "not implemented".
NOT_PROVIDED = ("memfd_secret",)

# Linux 6.1 x86_64 syscalls, minus DENIED, NOT_PROVIDED and clone/clone3/personality/socket/socketpair
# (conditional rules below).
ALLOWED = tuple("""
    accept accept4 access alarm arch_prctl bind brk capget capset chdir chmod chown clock_getres
    clock_gettime clock_nanosleep close close_range connect copy_file_range creat dup dup2 dup3
    epoll_create epoll_create1 epoll_ctl epoll_pwait epoll_pwait2 epoll_wait eventfd eventfd2 execve
    execveat exit exit_group faccessat faccessat2 fadvise64 fallocate fanotify_mark fchdir fchmod
    fchmodat fchown fchownat fcntl fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr
    fstat fstatfs fsync ftruncate futex futex_waitv futimesat get_mempolicy get_robust_list
    get_thread_area getcpu getcwd getdents getdents64 getegid geteuid getgid getgroups getitimer
    getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresuid getrlimit
    getrusage getsid getsockname getsockopt gettid gettimeofday getuid getxattr inotify_add_watch
    inotify_init inotify_init1 inotify_rm_watch io_cancel io_destroy io_getevents io_pgetevents
    io_setup io_submit ioctl ioprio_get ioprio_set kill landlock_add_rule landlock_create_ruleset
    landlock_restrict_self lchown lgetxattr link linkat listen listxattr llistxattr lremovexattr
    lseek lsetxattr lstat madvise mbind membarrier memfd_create migrate_pages mincore
    mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap move_pages mprotect mq_getsetattr
    mq_notify mq_open mq_timedreceive mq_timedsend mq_unlink mremap msgctl msgget msgrcv msgsnd
    msync munlock munlockall munmap nanosleep newfstatat open openat openat2 pause pidfd_open
    pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll prctl pread64 preadv
    preadv2 prlimit64 process_mrelease pselect6 pwrite64 pwritev pwritev2 read readahead readlink
    readlinkat readv recvfrom recvmmsg recvmsg remap_file_pages removexattr rename renameat
    renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo
    rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_tgsigqueueinfo sched_get_priority_max
    sched_get_priority_min sched_getaffinity sched_getattr sched_getparam sched_getscheduler
    sched_rr_get_interval sched_setaffinity sched_setattr sched_setparam sched_setscheduler
    sched_yield seccomp select semctl semget semop semtimedop sendfile sendmmsg sendmsg sendto
    set_mempolicy set_mempolicy_home_node set_robust_list set_thread_area set_tid_address
    setdomainname setfsgid setfsuid setgid setgroups sethostname setitimer setpgid setpriority
    setregid setresgid setresuid setreuid setrlimit setsid setsockopt setuid setxattr shmat shmctl
    shmdt shmget shutdown sigaltstack signalfd signalfd4 splice stat statfs statx
    symlink symlinkat sync_file_range sysinfo tee tgkill time timer_create timer_delete
    timer_getoverrun timer_gettime timer_settime timerfd_create timerfd_gettime timerfd_settime
    times tkill truncate umask uname unlink unlinkat utime utimensat utimes vfork vhangup vmsplice
    wait4 waitid write writev
""".split())

# personality(2) values libc and common runtimes use; others (e.g. ADDR_NO_RANDOMIZE) are refused.
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

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
    flags_arg = 1 if machine.startswith("s390") else 0
    rules: list[dict] = [
        {"names": list(ALLOWED), "action": "SCMP_ACT_ALLOW"},
        # clone without any CLONE_NEW* flag (threads and processes, no namespaces)
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": flags_arg, "value": sum(CLONE_NAMESPACE_FLAGS), "valueTwo": 0,
                   "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        {"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
    ]
    for family in SOCKET_FAMILIES:
        rules.append({"names": ["socket", "socketpair"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": family, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]})
    for value in PERSONALITIES:
        rules.append({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": value, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]})
    out: dict = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": ENOSYS, "syscalls": rules}
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
