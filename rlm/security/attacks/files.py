"""File attacks: host paths, mounts, read-only mounts, links planted in run/, restarts, disk fill."""

from __future__ import annotations

import json

from rlm.sandbox.execution import Execution
from rlm.security.context import CheckContext
from rlm.security.context import short as _short
from rlm.security.model import Verify, _indent, attack
from rlm.security.verify import _missing, refused, report_of


# --------------------------------------------------------------------------- files
def _secret_untouched(execution: Execution, ctx: CheckContext, data: dict) -> tuple[bool, str]:
    text = json.dumps(data)
    leaked = ctx.canaries.secret_text in text or ctx.canaries.secret_text in execution.output
    intact = ctx.canaries.secret_intact()
    ok = intact and not leaked
    return ok, ("secret unread and unchanged" if ok else "SECRET LEAKED" if leaked else "SECRET FILE CHANGED")


attack("files_host_secret", "files", "the host's secret file is not there, by any path", r"""
    import os
    sp, sd = PROBE["secret_path"], PROBE["secret_dir"]
    out = {
        "open by host path": attempt(open, sp, "rb"),
        "list host folder": attempt(os.listdir, sd),
        "stat host path": attempt(os.stat, sp),
        "via /proc/1/root": attempt(open, "/proc/1/root" + sp, "rb"),
        "via /proc/self/root": attempt(open, "/proc/self/root" + sp, "rb"),
        "via ../ from /rlm/run": attempt(open, "/rlm/run/../../.." + sp, "rb"),
        "via ../ from the context": attempt(open, os.path.dirname(PROBE["context_path"]) + "/../../.." + sp, "rb"),
        "write to host path": attempt(open, sp, "wb"),
    }
    report(out=out)
""", refused("out", extra=_secret_untouched))


def _verify_proc_roots(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    other = {pid: v for pid, v in data["roots"].items() if v.startswith("OTHER")}
    ok = not other and data["init_root_is_ours"]
    return ok, (f"{len(data['roots'])} processes, all rooted in the container" if ok else f"FOREIGN ROOT: {other}")


attack("files_proc_root", "files", "/proc/*/root of every process is the container's own root", r"""
    import os
    root = os.stat("/")
    roots = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                st = os.stat(f"/proc/{pid}/root/")
            except OSError as exc:
                roots[pid] = type(exc).__name__
                continue
            same = (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino)
            roots[pid] = "container" if same else f"OTHER {st.st_dev}:{st.st_ino}"
    try:
        ours = open("/proc/1/root/etc/hostname").read() == open("/etc/hostname").read()
    except PermissionError:
        ours = True  # pid 1 (the supervisor) is not dumpable: its root is not even visible
    report(roots=roots, init_root_is_ours=ours)
""", _verify_proc_roots)

_ALLOWED_MOUNT_PREFIXES = ("/proc", "/dev", "/sys", "/rlm/context/")
_ALLOWED_MOUNTS = {"/", "/tmp", "/home/sandbox", "/rlm/run", "/rlm/bridge", "/etc/hosts", "/etc/hostname",
                   "/etc/resolv.conf", "/usr/sbin/docker-init", "/sbin/docker-init", "/dev/init"}


def _verify_mounts(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    unexpected = [m for m, *_ in data["mounts"]
                  if m not in _ALLOWED_MOUNTS and not m.startswith(_ALLOWED_MOUNT_PREFIXES)]
    writable = sorted({m for m, opts, fstype in data["mounts"]
                       if opts.split(",")[0] == "rw" and fstype not in ("tmpfs", "proc", "devpts", "mqueue", "sysfs")})
    ok = not unexpected and data["root_ro"]
    if not ok:
        return False, f"UNEXPECTED MOUNTS: {unexpected}; root read-only: {data['root_ro']}"
    return True, (f"{len(data['mounts'])} mounts, none unexpected; read-only root; host-backed writable: "
                  f"{', '.join(writable) or 'none'}")


attack("files_mounts", "files", "only run/bridge/context come from the host; root fs read-only", r"""
    mounts = []
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        mounts.append((f[4], f[5], f[f.index("-") + 1]))
    root_ro = [m for m in mounts if m[0] == "/"][-1][1].split(",")[0] == "ro"
    report(mounts=mounts, root_ro=root_ro)
""", _verify_mounts)


def _context_untouched(execution: Execution, ctx: CheckContext, data: dict) -> tuple[bool, str]:
    ok = ctx.canaries.context_intact()
    return ok, "host context file unchanged" if ok else "HOST CONTEXT FILE CHANGED"


attack("files_write_context", "files", "the context mount refuses every write (EROFS)", r"""
    import os
    cp = PROBE["context_path"]
    out = {
        "open r+": attempt(open, cp, "r+b"),
        "append": attempt(open, cp, "ab"),
        "truncate": attempt(os.truncate, cp, 0),
        "chmod": attempt(os.chmod, cp, 0o666),
        "utime": attempt(os.utime, cp, (0, 0)),
        "unlink": attempt(os.unlink, cp),
        "rename": attempt(os.rename, cp, cp + ".moved"),
        "create next to it": attempt(open, os.path.join(os.path.dirname(cp), "planted.txt"), "wb"),
    }
    report(out=out, context_still_reads=context[:40] == open(cp).read()[:40])
""", refused("out", extra=_context_untouched))

attack("files_write_rootfs", "files", "the root filesystem and the REPL's own code are read-only", r"""
    import os
    out = {}
    for path, mode in [("/etc/passwd", "ab"), ("/opt/rlm/repl.py", "ab"), ("/opt/rlm/supervisor.py", "ab"),
                       ("/opt/rlm/evil.py", "wb"), ("/usr/lib/python3.11/sitecustomize.py", "wb"),
                       ("/etc/ld.so.preload", "wb"), ("/usr/bin/evil", "wb"), ("/var/tmp/evil", "wb"),
                       ("/evil", "wb"), ("/rlm/evil", "wb")]:
        out["write " + path] = attempt(open, path, mode)
    out["rename /opt/rlm/repl.py"] = attempt(os.rename, "/opt/rlm/repl.py", "/opt/rlm/repl.old")
    out["chmod /usr/bin/python3"] = attempt(os.chmod, "/usr/bin/python3", 0o777)
    out["mkdir /opt/rlm/x"] = attempt(os.mkdir, "/opt/rlm/x")
    report(out=out)
""", refused("out"))

attack("files_write_bridge", "files", "the bridge folder is read-only: no plant, no unlink, no rebind", r"""
    import os, socket
    b = "/rlm/bridge"
    def bind():
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(b + "/fake.sock")
    out = {
        "create file": attempt(open, b + "/planted", "wb"),
        "symlink": attempt(os.symlink, PROBE["secret_path"], b + "/planted-link"),
        "hard link": attempt(os.link, b + "/llm.sock", b + "/llm2.sock"),
        "unlink llm.sock": attempt(os.unlink, b + "/llm.sock"),
        "rename ctl.sock": attempt(os.rename, b + "/ctl.sock", b + "/ctl.old"),
        "chmod llm.sock": attempt(os.chmod, b + "/llm.sock", 0o600),
        "mkdir": attempt(os.mkdir, b + "/d"),
        "bind a socket": attempt(bind),
    }
    report(out=out)
""", refused("out"))


_KILL_KERNEL = "import os\nos._exit(1)"
# The supervisor is pid 1 and cannot be killed from inside; the kernel's death makes the host
# restart it, which locks run/ again and removes anything planted there.
_KILL_SUPERVISOR = "import os\nos._exit(1)"


def _after_death(kill: str, *, refuse: bool = False, container: bool = False) -> Verify:
    """Judge a planting attack: the cell planted (or failed to plant) links in /rlm/run and reported
    it; then the kernel or the supervisor is killed so that the host restarts, reconnects and cleans.
    Contained when nothing reached a host canary, the secret is intact and the session recovered; when
    the planting worked, ``refuse`` also requires that the host refused the planted paths (it had to
    recreate the container) and ``container`` that the container was recreated."""

    def verify(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
        data = report_of(execution)
        if data is None:
            return _missing(execution)
        planted = {k: v for k, v in data["planted"].items() if v == "ok"}
        death = ctx.run(kill)
        hits = ctx.canaries.foreign_connections()
        intact = ctx.canaries.secret_intact()
        if hits or not intact:
            return False, f"HOST FOLLOWED A PLANTED LINK: canary hits {hits}, secret intact {intact}"
        if not death.restarted:
            return False, "the host did not restart the sandbox: " + _short(death.output, 80)
        if not planted:
            kinds = ", ".join(sorted(set(data["planted"].values())))
            return True, f"planting refused ({kinds}); host restarted the {death.restarted}; canaries untouched"
        if (refuse or container) and death.restarted != "container":
            return False, f"the host accepted planted paths ({', '.join(planted)}); restarted the {death.restarted}"
        return True, (f"{len(planted)} links planted; host restarted the {death.restarted} without following "
                      f"them; canaries untouched")

    return verify


attack("files_run_symlink_kernel_socket", "files",
       "no symlink can replace /rlm/run/k-1, or the host never follows it; session recovers", r"""
    import os
    def plant(target, name):
        os.unlink(name)
        os.symlink(target, name)
    # Replace the kernel's shell socket with a symlink to a host socket and another with one to the host
    # secret; the verification then kills the kernel so that the host reconnects to a restarted one.
    report(planted={"k-1 -> host socket": attempt(plant, PROBE["unix_socket"], "/rlm/run/k-1"),
                    "k-2 -> host secret": attempt(plant, PROBE["secret_path"], "/rlm/run/k-2")})
""", _after_death(_KILL_KERNEL))

_REDIRECT_KERNEL = _indent(r"""
import json, os
def redirect():
    # Point the next kernel's sockets elsewhere (by rewriting its connection file), so that whatever is
    # planted at /rlm/run/k-N is still there when the host reconnects.
    cf = "/rlm/run/kernel.json"
    info = json.load(open(cf))
    info["ip"] = "/rlm/run/elsewhere/k"
    os.makedirs("/rlm/run/elsewhere", exist_ok=True)
    with open(cf + ".new", "w") as fh:
        json.dump(info, fh)
    os.replace(cf + ".new", cf)
""")

attack("files_run_symlink_persistent", "files",
       "host refuses symlinks left at k-1..k-5 (O_PATH|O_NOFOLLOW); canary socket counts 0",
       _REDIRECT_KERNEL + r"""
    def plant():
        for n in range(1, 6):
            os.unlink(f"/rlm/run/k-{n}")
            os.symlink(PROBE["unix_socket"] if n % 2 else PROBE["secret_path"], f"/rlm/run/k-{n}")
    report(planted={"redirect kernel.json": attempt(redirect), "symlinks at k-1..k-5": attempt(plant)})
""", _after_death(_KILL_KERNEL, refuse=True), fast=False)

attack("files_run_hardlink_socket", "files",
       "host refuses a kernel socket with extra hard links (st_nlink != 1); session recovers",
       _REDIRECT_KERNEL + r"""
    import socket
    evil = socket.socket(socket.AF_UNIX)
    def plant():
        evil.bind("/rlm/run/evil.sock")
        evil.listen(8)
        for n in range(1, 6):
            os.unlink(f"/rlm/run/k-{n}")
            os.link("/rlm/run/evil.sock", f"/rlm/run/k-{n}")   # the same inode under several names
    report(planted={"redirect kernel.json": attempt(redirect), "hard links at k-1..k-5": attempt(plant)})
""", _after_death(_KILL_KERNEL, refuse=True), fast=False)

attack("files_hardlink_escape", "files", "no hard link from /rlm/run to a file outside it (EXDEV)", r"""
    import os
    out = {
        "context -> run": attempt(os.link, PROBE["context_path"], "/rlm/run/ctx-link"),
        "/etc/passwd -> run": attempt(os.link, "/etc/passwd", "/rlm/run/passwd-link"),
        "/opt/rlm/repl.py -> run": attempt(os.link, "/opt/rlm/repl.py", "/rlm/run/repl-link"),
        "bridge socket -> run": attempt(os.link, "/rlm/bridge/llm.sock", "/rlm/run/llm-link"),
        "/tmp file -> run": attempt(os.link, open("/tmp/rlm-link-src", "w").name, "/rlm/run/tmp-link"),
    }
    os.unlink("/tmp/rlm-link-src")
    report(out=out)
""", refused("out"))

attack("files_run_cleanup_links", "files", "emptying run/ on recreation does not follow planted links",
       r"""
    import os
    def plant():
        os.symlink(PROBE["secret_dir"], "/rlm/run/host-dir")
        os.symlink(PROBE["secret_path"], "/rlm/run/host-file")
        os.makedirs("/rlm/run/nested/deeper")
        os.symlink(PROBE["secret_dir"], "/rlm/run/nested/deeper/host-dir")
        os.symlink("/", "/rlm/run/nested/root")
    # The verification then kills the supervisor: the host recreates the container and empties run/.
    report(planted={"links to the host secret folder": attempt(plant)})
""", _after_death(_KILL_SUPERVISOR))


_RESTART_RACE = r"""
import os, time
for _ in range(3):                # helpers that outlive the kernel until the supervisor's clean-up
    if os.fork() == 0:
        try:
            while not os.path.isdir("/rlm/run/escape"):
                try:
                    os.mkdir("/rlm/run/escape", 0o777)
                except OSError:
                    pass
            time.sleep(3600)
        finally:
            os._exit(0)
time.sleep(0.2)
os._exit(1)                       # the kernel dies: the host makes run/ writable again for the restart
"""

_USE_ESCAPE = r"""
import os
exists = os.path.isdir("/rlm/run/escape")
written, stopped = 0, None
if exists:
    try:
        for i in range(12):
            with open(f"/rlm/run/escape/fill-{i}.bin", "wb") as fh:
                for _ in range(8):
                    fh.write(b"\0" * (1 << 20))
                    written += 1 << 20
    except OSError as exc:
        stopped = type(exc).__name__
report(exists=exists, mb=written >> 20, stopped=stopped)
"""


def _verify_restart_race(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    restarts = []
    for attempt_no in range(3):   # the window is short: give the race three chances
        if attempt_no:
            execution = ctx.run(_RESTART_RACE)
        if not execution.restarted:
            return False, "the kernel did not die as planned: " + _short(execution.output, 80)
        restarts.append(execution.restarted)
        after = ctx.run(_USE_ESCAPE)
        data = report_of(after)
        if data is None:
            return _missing(after)
        if data["exists"]:
            cap = ctx.probe["tmpfs_mb"]
            ok = data["mb"] <= cap
            return ok, (f"a folder made in run/ during a {execution.restarted} restart stays writable: "
                        f"{data['mb']} MB written to the host disk afterwards (stopped: {data['stopped']})"
                        if not ok else f"a folder was made during the restart but writes stop at {data['mb']} MB")
    return True, f"{len(restarts)} restarts ({', '.join(restarts)}): nothing could be created in run/ meanwhile"


attack("files_run_restart_race", "files",
       "no window during a kernel restart lets the sandbox create files in /rlm/run", _RESTART_RACE,
       _verify_restart_race, cleanup=r"""
    import glob, os
    for p in glob.glob("/rlm/run/escape/*"):
        os.unlink(p)
""")


def _verify_disk_fill(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    cap = data["cap"]
    ok = data["mb"] <= cap
    return ok, (f"stopped at {data['mb']} MB ({data['stopped']})" if ok else
                f"{data['mb']} MB landed on the host disk through /rlm/run (cap of the largest scratch tmpfs: "
                f"{cap} MB; stopped: {data['stopped']})")


attack("files_run_disk_fill", "files", "writes into /rlm/run are capped (cannot fill the host disk)", r"""
    import os
    chunk = b"\0" * (1 << 20)
    written, stopped = 0, None
    try:
        for i in range(12):
            with open(f"/rlm/run/fill-{i}.bin", "wb") as fh:
                for _ in range(8):
                    fh.write(chunk)
                    written += len(chunk)
    except OSError as exc:
        stopped = type(exc).__name__ + ":" + str(exc.errno)
    report(mb=written >> 20, stopped=stopped, cap=PROBE["tmpfs_mb"])
""", _verify_disk_fill, cleanup=r"""
    import glob, os
    for p in glob.glob("/rlm/run/fill-*.bin"):
        os.unlink(p)
""")


def _run_folder_kept(execution: Execution, ctx: CheckContext, data: dict) -> tuple[bool, str]:
    import os
    import stat

    root = ctx.session.run_dir
    if root is None:
        return False, "the session has no run folder"
    sandbox_uid = ctx.probe["uid"]
    bad = []
    for path in (root, root / "run", root / "bridge"):
        info = os.lstat(path)
        if info.st_uid == sandbox_uid or stat.S_IMODE(info.st_mode) & 0o022 or stat.S_ISLNK(info.st_mode):
            bad.append(f"{path.name} uid {info.st_uid} mode {oct(stat.S_IMODE(info.st_mode))}")
    planted = sorted(e.name for e in os.scandir(root / "run") if e.name.startswith("planted"))
    ok = not bad and not planted
    return ok, (f"run folder owned by uid {os.lstat(root).st_uid}, not the sandbox's {sandbox_uid}; nothing planted"
                if ok else f"HOST RUN FOLDER CHANGED: {bad} planted {planted}")


attack("files_run_folder_owner", "files",
       "the sandbox uid owns nothing of its run folder: no chmod, no big file, no symlink or FIFO planted", r"""
    import os
    def write_big():
        with open("/rlm/run/planted-big", "wb") as fh:
            for _ in range(64):
                fh.write(b"\0" * (1 << 20))
    out = {
        "chmod 0777 /rlm/run": attempt(os.chmod, "/rlm/run", 0o777),
        "chmod 0777 /rlm/bridge": attempt(os.chmod, "/rlm/bridge", 0o777),
        "chmod kernel.json": attempt(os.chmod, "/rlm/run/kernel.json", 0o666),
        "chown /rlm/run": attempt(os.chown, "/rlm/run", os.getuid(), os.getgid()),
        "utime /rlm/run": attempt(os.utime, "/rlm/run", (0, 0)),
        "write 64 MiB into /rlm/run": attempt(write_big),
        "symlink in /rlm/run": attempt(os.symlink, "/", "/rlm/run/planted-link"),
        "FIFO in /rlm/run": attempt(os.mkfifo, "/rlm/run/planted-fifo"),
        "folder in /rlm/run": attempt(os.mkdir, "/rlm/run/planted-dir"),
        "rename kernel.json": attempt(os.rename, "/rlm/run/kernel.json", "/rlm/run/planted-json"),
    }
    report(out=out)
""", refused("out", extra=_run_folder_kept))
