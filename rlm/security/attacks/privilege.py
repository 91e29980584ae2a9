"""Privilege attacks: uid, capabilities, setuid, namespaces, ptrace, syscalls, devices, cgroups, pid 1."""

from __future__ import annotations

import time

from rlm.sandbox.execution import Execution
from rlm.security.context import CheckContext
from rlm.security.context import short as _short
from rlm.security.host import filtered, host_namespaces
from rlm.security.model import _indent, attack
from rlm.security.verify import _missing, refused, report_of, served_by_gvisor


# --------------------------------------------------------------------------- privilege
def _verify_uid(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    uid, gid = ctx.probe["uid"], ctx.probe["gid"]
    others = {pid: ids for pid, ids in data["procs"].items() if set(ids) != {str(uid)}}
    ok = (data["uid"] == data["euid"] == uid and data["gid"] == gid and set(data["groups"]) <= {gid}
          and not others and uid != 0)
    if not ok:
        return False, f"uid {data['uid']} euid {data['euid']} groups {data['groups']}; other processes: {others}"
    return True, (f"uid {data['uid']} gid {data['gid']} groups {data['groups']}; "
                  f"all {len(data['procs'])} processes uid {uid}")


attack("priv_uid", "privilege", "uid/gid 1000 (not 0) for every process in the container", r"""
    import os
    procs = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                status = open(f"/proc/{pid}/status").read()
            except OSError:
                continue
            procs[pid] = [l.split()[1:] for l in status.splitlines() if l.startswith("Uid:")][0]
    report(uid=os.getuid(), euid=os.geteuid(), gid=os.getgid(), groups=os.getgroups(), procs=procs)
""", _verify_uid)


def _verify_caps(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    gvisor = ctx.probe.get("gvisor")
    bad = {}
    for pid, status in data["procs"].items():
        for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            if status.get(key, "0").strip("0"):
                bad[f"{pid} {key}"] = status[key]
        if gvisor:
            continue   # gVisor's /proc has no NoNewPrivs line and no Seccomp state: judged on the host below
        if status.get("NoNewPrivs") != "1":
            bad[f"{pid} NoNewPrivs"] = status.get("NoNewPrivs")
        if status.get("Seccomp") not in ("2", None):
            bad[f"{pid} Seccomp"] = status.get("Seccomp")
    if data.get("nnp") != 1:
        bad["no_new_privs (prctl)"] = data.get("nnp")
    if bad:
        return False, f"PRIVILEGE: {bad}"
    if gvisor:
        ok, host = filtered(ctx.session.container_id or "")
        return ok, (f"{len(data['procs'])} processes in gVisor: no capability, no_new_privs (prctl); "
                    f"syscalls served by gVisor's kernel; on the host: {host}")
    return True, f"{len(data['procs'])} processes: no capability, no_new_privs, seccomp filter"


attack("priv_capabilities", "privilege", "empty capability sets, no_new_privs and seccomp on every process", r"""
    import os
    procs = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                lines = open(f"/proc/{pid}/status").read().splitlines()
            except OSError:
                continue
            procs[pid] = {l.split(":")[0]: l.split(":", 1)[1].strip() for l in lines
                          if l.startswith(("Cap", "NoNewPrivs", "Seccomp:"))}
    import ctypes
    nnp = ctypes.CDLL(None, use_errno=True).prctl(39, 0, 0, 0, 0)   # PR_GET_NO_NEW_PRIVS
    report(procs=procs, nnp=nnp)
""", _verify_caps)


def _verify_setuid_bins(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ran = data["runs"]
    gained = {k: v for k, v in ran.items() if v.get("rc") == 0 or "uid=0" in v.get("out", "") or v.get("out") == "0"}
    ok = not gained and data["nnp"] == 1
    return ok, (f"{len(data['found'])} setuid/setgid files present, inert (no_new_privs): "
                + ", ".join(f"{k} rc={v.get('rc')}" for k, v in ran.items())) if ok else f"ROOT GAINED: {gained}"


attack("priv_setuid_binaries", "privilege", "setuid binaries (if any) give no root: no_new_privs", r"""
    import os, stat, subprocess
    found = []
    tops = ["/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/usr/libexec"]
    tops += [e.path for e in os.scandir("/usr/lib") if e.is_dir(follow_symlinks=False)
             and not e.name.startswith(("python", "x86_64", "aarch64", "locale"))]
    for top in tops:
        for root, dirs, files in os.walk(top):
            for f in files:
                p = os.path.join(root, f)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                    found.append(p)
    runs = {}
    for label, cmd in {"mount": ["mount", "-t", "tmpfs", "none", "/home/sandbox"],
                       "su": ["su", "-c", "id -u", "root"], "umount": ["umount", "/rlm/bridge"]}.items():
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
            runs[label] = {"rc": p.returncode, "out": p.stdout.strip()[:40]}
        except Exception as exc:
            runs[label] = {"rc": None, "out": type(exc).__name__}
    import ctypes
    nnp = ctypes.CDLL(None, use_errno=True).prctl(39, 0, 0, 0, 0)   # PR_GET_NO_NEW_PRIVS
    report(found=found, runs=runs, nnp=nnp)
""", _verify_setuid_bins)

attack("priv_setuid0", "privilege", "setuid(0) and friends: EPERM", r"""
    import os
    out = {
        "setuid(0)": attempt(os.setuid, 0), "seteuid(0)": attempt(os.seteuid, 0),
        "setresuid(0,0,0)": attempt(os.setresuid, 0, 0, 0), "setreuid(0,0)": attempt(os.setreuid, 0, 0),
        "setgid(0)": attempt(os.setgid, 0), "setgroups([0])": attempt(os.setgroups, [0]),
        "setuid(65534)": attempt(os.setuid, 65534),
    }
    report(out=out, uid_after=os.getuid())
""", refused("out"))

_LIBC = _indent(r"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def call(fn, *args):
    ctypes.set_errno(0)
    if fn(*args) == -1:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
""")

attack("priv_mount", "privilege", "mount/umount refused (EPERM)", _LIBC + r"""
    out = {
        "mount tmpfs": attempt(call, libc.mount, b"none", b"/home/sandbox", b"tmpfs", 0, None),
        "mount proc": attempt(call, libc.mount, b"proc", b"/tmp", b"proc", 0, None),
        "bind / to /tmp": attempt(call, libc.mount, b"/", b"/tmp", None, 4096, None),
        "remount / rw": attempt(call, libc.mount, None, b"/", None, 32, None),
        "umount /rlm/bridge": attempt(call, libc.umount2, b"/rlm/bridge", 2),
        "umount /proc/sys": attempt(call, libc.umount2, b"/proc/sys", 2),
    }
    report(out=out)
""", refused("out"))

def _before_unshare(ctx: CheckContext) -> None:
    ctx.notes["host_ns"] = host_namespaces(ctx.session.container_id or "")


def _verify_unshare(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    allowed = sorted(k for k, v in data["out"].items() if v == "ok")
    if not ctx.probe.get("gvisor") or not allowed:
        return refused("out")(execution, ctx)
    # gVisor's kernel may create namespaces of its own; they must not be host namespaces.  The children
    # that unshared are still alive (they sleep until the clean-up), so a host namespace would show now.
    before, after = ctx.notes.get("host_ns") or set(), host_namespaces(ctx.session.container_id or "")
    if not before or not after:
        return False, "cannot read the host namespaces of the container's processes (run as root)"
    new = sorted(after - before)
    return (not new, f"inside gVisor's kernel {', '.join(allowed)} succeeded with no host effect: the "
            f"container's host processes keep their {len(before)} namespaces" if not new
            else f"NEW HOST NAMESPACES after unshare: {new}")


attack("priv_unshare", "privilege",
       "no new namespaces: EPERM (runc); under gVisor, none on the host", r"""
    import json, subprocess, sys
    probe = '''
    import ctypes, errno, json, os
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    for name, flag in [("user", 0x10000000), ("mount", 0x00020000), ("net", 0x40000000), ("pid", 0x20000000),
                       ("cgroup", 0x02000000), ("ipc", 0x08000000), ("uts", 0x04000000), ("user+mount", 0x10020000)]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            null = os.open("/dev/null", os.O_RDWR)
            os.dup2(null, 1)
            os.dup2(null, 2)
            rc = libc.unshare(flag)
            os.write(w, b"%d" % (0 if rc == 0 else (ctypes.get_errno() or 255)))
            os.close(w)
            if rc == 0:
                open("/tmp/rlm-unshare.pids", "a").write("%d\\n" % os.getpid())
                import time
                time.sleep(60)      # stays in its namespaces until the clean-up: the host looks meanwhile
            os._exit(0)
        os.close(w)
        code = int(os.read(r, 16) or b"255")
        os.close(r)
        out["unshare " + name] = "ok" if code == 0 else "OSError:" + errno.errorcode.get(code, str(code))
    print(json.dumps(out))
    '''
    import textwrap
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(probe)], capture_output=True, text=True, timeout=20)
    out = json.loads(p.stdout)   # a fresh single-threaded process (unshare(CLONE_NEWUSER) needs one)
    report(out=out)
""", _verify_unshare, prepare=_before_unshare, cleanup=r"""
    import os, signal
    try:
        for line in open("/tmp/rlm-unshare.pids"):
            try:
                os.kill(int(line), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        os.unlink("/tmp/rlm-unshare.pids")
    except FileNotFoundError:
        pass
""")

attack("priv_ptrace", "privilege", "no ptrace of init or the supervisor; their memory unreadable", _LIBC + r"""
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    def attach(pid):
        call(libc.ptrace, 16, pid, None, None)          # PTRACE_ATTACH
        os.waitpid(pid, 0x40000000)                     # __WALL: wait for the stop
        libc.ptrace(17, pid, None, None)                # PTRACE_DETACH: let it run again
    def peek_mem(pid):
        with open(f"/proc/{pid}/mem", "rb") as fh:
            maps = open(f"/proc/{pid}/maps").readline()
            fh.seek(int(maps.split("-")[0], 16))
            fh.read(16)
    def open_mem_rw(pid):
        os.close(os.open(f"/proc/{pid}/mem", os.O_RDWR))   # opening is enough: nothing is written
    sup = os.getppid()
    out = {"attach init (pid 1)": attempt(attach, 1), f"attach supervisor (pid {sup})": attempt(attach, sup),
           "read init's memory": attempt(peek_mem, 1), "read supervisor's memory": attempt(peek_mem, sup),
           "open init's memory for writing": attempt(open_mem_rw, 1),
           "open supervisor's memory for writing": attempt(open_mem_rw, sup)}
    report(out=out)
""", refused("out"))

_SYSCALLS = _indent(r"""
import platform
NR = {"x86_64": {"add_key": 248, "request_key": 249, "keyctl": 250, "bpf": 321, "perf_event_open": 298,
                 "userfaultfd": 323, "kexec_load": 246, "init_module": 175, "finit_module": 313,
                 "open_by_handle_at": 304, "setns": 308, "io_uring_setup": 425, "reboot": 169},
      "aarch64": {"add_key": 217, "request_key": 218, "keyctl": 219, "bpf": 280, "perf_event_open": 241,
                  "userfaultfd": 282, "kexec_load": 104, "init_module": 105, "finit_module": 273,
                  "open_by_handle_at": 265, "setns": 268, "io_uring_setup": 425, "reboot": 142}}.get(platform.machine())
libc.syscall.restype = ctypes.c_long
def sys_call(name, *args):
    '''"ok" when the kernel ran the call (even if it then failed on our dummy arguments).'''
    ctypes.set_errno(0)
    rc = libc.syscall(NR[name], *[ctypes.c_long(a) for a in args])
    err = ctypes.get_errno()
    if rc == -1 and err in (errno.EPERM, errno.ENOSYS, errno.EACCES):
        raise OSError(err, os.strerror(err))
    return rc
""")

attack("priv_keyring", "privilege", "kernel keyring syscalls refused (seccomp)", _LIBC + _SYSCALLS + r"""
    if NR is None:
        report(out={"not checked on " + platform.machine(): "skipped"})
    else:
        out = {
            "keyctl(GET_KEYRING_ID, session)": attempt(sys_call, "keyctl", 0, -3, 0),
            "add_key(user, session)": attempt(sys_call, "add_key", 0, 0, 0, 0, -3),
            "request_key": attempt(sys_call, "request_key", 0, 0, 0, 0),
        }
        report(out=out)
""", refused("out"))

attack("priv_dangerous_syscalls", "privilege", "bpf, perf, kexec, modules, setns, open_by_handle_at: refused",
       _LIBC + _SYSCALLS + r"""
    if NR is None:
        report(out={"not checked on " + platform.machine(): "skipped"})
    else:
        out = {
            "bpf": attempt(sys_call, "bpf", 0, 0, 0),
            "perf_event_open": attempt(sys_call, "perf_event_open", 0, 0, -1, -1, 0),
            "userfaultfd": attempt(sys_call, "userfaultfd", 0),
            "kexec_load": attempt(sys_call, "kexec_load", 0, 0, 0, 0),
            "init_module": attempt(sys_call, "init_module", 0, 0, 0),
            "finit_module": attempt(sys_call, "finit_module", -1, 0, 0),
            "open_by_handle_at (shocker)": attempt(sys_call, "open_by_handle_at", 0, 0, 0),
            "setns": attempt(sys_call, "setns", -1, 0),
            "reboot": attempt(sys_call, "reboot", 0, 0, 0, 0),
        }
        report(out=out)
""", served_by_gvisor("out"))

attack("priv_io_uring", "privilege", "io_uring (a large kernel attack surface) refused", _LIBC + _SYSCALLS + r"""
    if NR is None:
        report(out={"not checked on " + platform.machine(): "skipped"})
    else:
        # io_uring_setup(1, NULL): EFAULT means the kernel accepted the call and read our (null) arguments.
        report(out={"io_uring_setup": attempt(sys_call, "io_uring_setup", 1, 0)})
""", served_by_gvisor("out"))


attack("priv_seccomp_allowlist", "privilege",
       "syscalls outside Docker's default allowlist stay refused (recent ones, personality flags)",
       _LIBC + r"""
    libc.syscall.restype = ctypes.c_long
    def sys_call(nr, *args):
        # raises unless the kernel ran the call (EPERM/ENOSYS: refused by seccomp, or unknown to the kernel)
        ctypes.set_errno(0)
        rc = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
        err = ctypes.get_errno()
        if rc == -1 and err in (errno.EPERM, errno.ENOSYS):
            raise OSError(err, os.strerror(err))
    def no_aslr():
        call(libc.personality, 0x0040000)      # ADDR_NO_RANDOMIZE: turns off ASLR, a help for exploits
        libc.personality(0)
    # Syscall numbers >= 424 are the same on every architecture.
    out = {"process_madvise (440)": attempt(sys_call, 440, -1, 0, 0, 0, 0),
           "cachestat (451)": attempt(sys_call, 451, -1, 0, 0, 0),
           "statmount (457)": attempt(sys_call, 457, 0, 0, 0, 0),
           "lsm_get_self_attr (459)": attempt(sys_call, 459, 0, 0, 0, 0),
           "mseal (462)": attempt(sys_call, 462, 0, 0, 0),
           "personality(ADDR_NO_RANDOMIZE)": attempt(no_aslr)}
    report(out=out)
""", refused("out"))


# gVisor's own virtual devices (served by its kernel, no host device behind them): FUSE in the Sentry, and
# netstack's tun (no network with --network=none).
GVISOR_DEVICES = {"fuse", "net"}


def _verify_dev(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    gvisor = ctx.probe.get("gvisor")
    opened = [k for k, v in data["out"].items() if v == "ok" and k.startswith("open")]
    made = [k for k, v in data["out"].items() if v == "ok" and k.startswith("mknod")]
    dangerous = set(data["dangerous"]) - (GVISOR_DEVICES if gvisor else set())
    ok = not dangerous and not opened and (gvisor or not made)
    if not ok:
        return False, f"DEVICES: {sorted(dangerous)} {opened + ([] if gvisor else made)}"
    if gvisor:
        return True, (f"/dev: {', '.join(data['present'])} (gVisor's virtual devices); mknod "
                      f"{'made inert nodes in gVisor tmpfs' if made else 'refused'}, opening them and raw "
                      "devices fails: no host device behind them")
    return True, f"/dev: {', '.join(data['present'])}; mknod and raw devices refused"


attack("priv_devices", "privilege", "no disk/memory/kmsg devices in /dev; mknod refused", r"""
    import os, stat
    present = sorted(os.listdir("/dev"))
    risky = {"mem", "kmem", "port", "kmsg", "sda", "vda", "xvda", "nvme0", "nvme0n1", "fuse", "kvm", "net",
             "loop0", "loop-control", "mapper", "dri", "sg0", "hda", "vhost-net", "vsock", "userfaultfd", "tty0",
             "console", "cpu", "autofs"}
    out = {
        "mknod char 1:1 (mem)": attempt(os.mknod, "/home/sandbox/mem", 0o600 | stat.S_IFCHR, os.makedev(1, 1)),
        "mknod block 254:0 (vda)": attempt(os.mknod, "/dev/shm/vda", 0o600 | stat.S_IFBLK, os.makedev(254, 0)),
    }
    for dev in ("/dev/mem", "/dev/kmem", "/dev/kmsg", "/dev/vda", "/dev/sda", "/dev/port", "/home/sandbox/mem",
                "/dev/shm/vda"):
        out["open " + dev] = attempt(lambda p: open(p, "rb").read(1), dev)
    for node in ("/home/sandbox/mem", "/dev/shm/vda"):
        attempt(os.unlink, node)
    report(present=present, dangerous=sorted(risky & set(present)), out=out)
""", _verify_dev)

attack("priv_proc_sys", "privilege", "sysrq-trigger, core_pattern, sysctls, kcore: not writable/readable", r"""
    import os
    def open_write(path):
        os.close(os.open(path, os.O_WRONLY))   # opening is enough to prove it; nothing is written
    out = {}
    for path in ("/proc/sysrq-trigger", "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe",
                 "/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches", "/sys/kernel/uevent_helper",
                 "/proc/sys/fs/binfmt_misc/register", "/sys/power/state"):
        out["write " + path] = attempt(open_write, path)
    for path in ("/proc/kcore", "/proc/kmsg", "/dev/kmsg"):
        out["read " + path] = attempt(lambda p: open(p, "rb").read(1), path)
    report(out=out)
""", refused("out"))

attack("priv_cgroup_escape", "privilege", "cgroup files (release_agent, limits) read-only; no cgroup mount",
       _LIBC + r"""
    names = {"release_agent", "notify_on_release", "memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
             "memory.max", "memory.swap.max", "pids.max", "cgroup.procs", "cpu.cfs_quota_us", "cpu.max",
             "cgroup.subtree_control", "devices.allow"}
    targets, dirs_seen = [], []
    for root, dirs, files in os.walk("/sys/fs/cgroup"):
        if root.count("/") > 5:
            dirs[:] = []
        dirs_seen.append(root)
        targets += [os.path.join(root, f) for f in files if f in names]
    def open_write(path):
        os.close(os.open(path, os.O_WRONLY))
    out = {"write " + t: attempt(open_write, t) for t in targets}
    for d in dirs_seen[:3]:
        out["mkdir in " + d] = attempt(os.mkdir, d + "/rlm-escape")
    out["mount cgroup (v1 memory)"] = attempt(call, libc.mount, b"cgroup", b"/tmp", b"cgroup", 0, b"memory")
    out["mount cgroup2"] = attempt(call, libc.mount, b"cgroup2", b"/tmp", b"cgroup2", 0, None)
    report(out=out)
""", refused("out"))


def _verify_kill_init(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution) or {}
    if execution.restarted != "container":
        return False, "expected the container to stop and be recreated: " + _short(execution.output, 80)
    if ctx.probe.get("gvisor"):
        return True, (GVISOR_INIT + ": SIGKILL stopped this container; the host recreated it"
                      if "init_alive_after_sigkill" not in data else
                      "SIGKILL to pid 1 ignored; SIGTERM stopped the container, host recreated it")
    if data.get("init_alive_after_sigkill") is False:
        return False, "init died of SIGKILL from inside"
    return True, "SIGKILL to pid 1 ignored; SIGTERM stopped the container, host recreated it"


GVISOR_INIT = ("gVisor's kernel (20221219) lets a process signal pid 1 of its own sandbox (Linux shields init)")


attack("priv_kill_init", "privilege", "killing pid 1 only stops this container; the host recreates it", r"""
    import os, signal, time
    os.kill(1, signal.SIGKILL)         # ignored: init of a pid namespace cannot be SIGKILLed from inside
    time.sleep(0.2)
    report(init_alive_after_sigkill=os.path.exists("/proc/1/status"))
    os.kill(1, signal.SIGTERM)         # init forwards it: the container stops
    time.sleep(60)
""", _verify_kill_init)


def _verify_kill_all(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if ctx.probe.get("gvisor") and data is not None and data.get("kill_1") == "ok" and execution.restarted is None:
        # gVisor delivers the SIGKILL to pid 1 a moment later: wait until the host has recreated the container
        # (a cell that finds it dead restarts it), so that the runner's "still answers" check sees the result.
        old, deadline = ctx.session.container_id, time.monotonic() + 20
        while ctx.session.container_id == old and time.monotonic() < deadline:
            ctx.run("print(1+1)", timeout=5)
        if ctx.session.container_id != old:
            return True, GVISOR_INIT + ": SIGKILL ended this session's container; the host recreated it, nothing else"
    if ctx.probe.get("gvisor") and execution.restarted == "container":   # with or without the cell's report
        return True, GVISOR_INIT + ": kill(-1) ended this session's container; the host recreated it, nothing else"
    if data is None:
        return _missing(execution)
    ok = data["supervisor_alive"] and execution.restarted is None
    return ok, (f"kill(-1): {data['kill']}; SIGKILL to pid 1: {data['kill_1']}; the supervisor lives on"
                if ok else f"supervisor alive {data['supervisor_alive']}, restarted {execution.restarted}")


attack("priv_kill_everything", "privilege", "kill(-1) / SIGKILL of pid 1 reach nothing: the supervisor is pid 1",
       r"""
    import os, signal
    out = {"kill": attempt(os.kill, -1, signal.SIGKILL), "kill_1": attempt(os.kill, 1, signal.SIGKILL)}
    out["supervisor_alive"] = os.path.exists("/proc/1") and open("/proc/1/stat").read().split()[2] != "Z"
    report(**out)
""", _verify_kill_all, fast=False)

attack("priv_docker_socket", "privilege", "no Docker/containerd/podman socket, no DOCKER_HOST", r"""
    import os
    out = {}
    for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
              "/var/run/crio/crio.sock", "/run/podman/podman.sock", "/run/user/1000/docker.sock",
              "/home/sandbox/.docker/run/docker.sock"):
        out[p] = attempt(os.stat, p)
    found = [l.split()[-1] for l in open("/proc/net/unix").read().splitlines()[1:]
             if any(w in l for w in ("docker", "containerd", "podman", "crio"))]
    for f in found:
        out["listed in /proc/net/unix: " + f] = "ok"
    out["DOCKER_HOST"] = "ok" if "DOCKER_HOST" in os.environ else "absent"
    report(out=out)
""", refused("out"))
