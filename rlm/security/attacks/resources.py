"""Resource attacks: fork/thread bombs, memory, files, tmpfs, output floods, timeouts, CPU."""

from __future__ import annotations

import time

from rlm.sandbox.execution import Execution
from rlm.security.budget import HostBudget
from rlm.security.context import CheckContext
from rlm.security.context import short as _short
from rlm.security.host import cpu_limit
from rlm.security.model import attack
from rlm.security.verify import _missing, report_of


# --------------------------------------------------------------------------- resources
def _verify_fork_bomb(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    # The same named refusal under both runtimes: fork fails with EAGAIN (runc: the pids cgroup; gVisor:
    # RLIMIT_NPROC in its kernel, kept under what the memory limit holds, see rlm/sandbox/runtime.py).  Under
    # gVisor with nproc = pids_limit the bomb filled the memory limit first and the whole sandbox died.
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    gvisor = ctx.probe.get("gvisor")
    limit = ctx.probe["nproc"] if gvisor else ctx.probe["pids_limit"]
    what = f"RLIMIT_NPROC {limit} in gVisor's kernel" if gvisor else f"pids limit {limit}"
    ok = (data["peak"] <= limit and data["spawn"] != "ok" and data["left"] <= 4 and not execution.restarted
          and not execution.timed_out)
    return ok, (f"peak {data['peak']} processes ({what}); new process refused ({data['spawn']}); "
                f"bomb killed" if ok else f"peak {data['peak']} ({what}), spawn {data['spawn']}, "
                f"left {data['left']}, restarted {execution.restarted}, timed out {execution.timed_out}")


attack("res_fork_bomb", "resources",
       "fork fails with EAGAIN (runc: pids limit; gVisor: RLIMIT_NPROC in its kernel); kernel keeps answering", r"""
    import os, signal, subprocess, time
    bomb = os.fork()
    if bomb == 0:
        try:
            os.setsid()
            while True:
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.05)    # at the limit: keep the slots, spare the CPU for the clean-up
        finally:
            os._exit(0)
    count = lambda: len([p for p in os.listdir("/proc") if p.isdigit()])
    peak, steady, deadline = count(), 0, time.monotonic() + 20
    while steady < 20 and time.monotonic() < deadline:    # until the count has not grown for a second
        time.sleep(0.05)
        n = count()
        steady = steady + 1 if n <= peak else 0
        peak = max(peak, n)
    spawn = attempt(subprocess.run, ["true"], timeout=5)
    for _ in range(500):                       # kill the bomb's process group until it is gone
        try:
            os.killpg(bomb, signal.SIGKILL)
        except ProcessLookupError:
            break
        try:
            os.waitpid(bomb, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.01)
    time.sleep(0.3)
    report(peak=peak, spawn=spawn, left=count())
""", _verify_fork_bomb, timeout=30, fresh=True)


def _verify_plain_fork_bomb(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return False, (f"no report: timed_out {execution.timed_out}, restarted {execution.restarted}, "
                       f"notice {_short(execution.notice or '', 100)}")
    ok = data["error"] == "BlockingIOError:EAGAIN" and not execution.restarted and not execution.timed_out
    return ok, (f"os.fork() refused after {data['forks']} forks ({data['error']}) in {execution.duration_s:.1f} s; "
                f"{data['left']} processes of the bomb killed by the clean-up" if ok else f"error {data['error']}, left {data['left']}, "
                f"restarted {execution.restarted}, timed_out {execution.timed_out}")


attack("res_fork_bomb_plain", "resources",
       "the plain os.fork() loop (every child forks too) ends with a named error (EAGAIN) under both runtimes",
       r"""
    import errno, os, time
    me, forks, error = os.getpid(), 0, None
    try:
        while True:
            os.fork()
            if os.getpid() == me:
                forks += 1
    except OSError as exc:
        if os.getpid() != me:
            os._exit(0)                  # a child at the limit leaves
        error = type(exc).__name__ + ":" + errno.errorcode.get(exc.errno, "")
    count = lambda: len([p for p in os.listdir("/proc") if p.isdigit()])
    report(forks=forks, error=error, left=count())
""", _verify_plain_fork_bomb, timeout=40, fresh=True, fast=False, cleanup=r"""
    import os, signal, time
    for _ in range(200):                 # the bomb's processes share the kernel's group: kill them one by one
        others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]
        if not others:
            break
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.01)
""")


def _verify_leftovers(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    if not execution.timed_out:
        return False, "the cell was expected to time out"
    after = ctx.run("import os, subprocess\n"
                    "report(procs=len([p for p in os.listdir('/proc') if p.isdigit()]),"
                    " spawn=attempt(subprocess.run, ['true'], timeout=5))")
    data = report_of(after)
    if data is None:
        return _missing(after)
    ok = data["procs"] <= 4 and data["spawn"] == "ok"
    how = f"the {execution.restarted} was restarted" if execution.restarted else "the kernel was interrupted"
    return ok, (f"{how}; the cell's processes are gone, new processes start" if ok else
                f"{how}, but {data['procs']} processes of the cell survive and hold the pids limit "
                f"(new process: {data['spawn']})")


attack("res_processes_outlive_cell", "resources",
       "processes forked by a timed-out cell are killed with it (pids freed)", r"""
    import os, time
    if os.fork() == 0:                 # fill the pids limit with sleeping processes...
        try:
            while True:
                try:
                    if os.fork() == 0:
                        time.sleep(3600)
                        os._exit(0)
                except OSError:
                    break
            time.sleep(3600)
        finally:
            os._exit(0)
    time.sleep(3600)                   # ...while the kernel itself waits politely: an interrupt stops it
""", _verify_leftovers, timeout=1, fresh=True)


def _verify_memory(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ok = data["huge"] == "MemoryError" and data["gradual"] == "MemoryError" and not execution.restarted
    return ok, (f"MemoryError (single: {data['huge']}, gradual after {data['mb']} MB); kernel kept"
                if ok else f"huge {data['huge']} gradual {data['gradual']} restarted {execution.restarted}")


attack("res_memory_bomb", "resources", "MemoryError (RLIMIT_AS) instead of an OOM kill", r"""
    held = []
    def gradual():
        while True:
            held.append(bytes(256 << 20))
    huge = attempt(bytearray, 10 ** 11)
    grad = attempt(gradual)
    mb = len(held) * 256
    held.clear()
    report(huge=huge, gradual=grad, mb=mb)
""", _verify_memory)


def _verify_oom(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    limit = ctx.probe["memory_mb"]
    if data is None:
        if execution.restarted:
            return True, f"the kernel was OOM-killed; the host restarted the {execution.restarted}"
        return _missing(execution)
    filled = data["filled"]  # children that filled and were still alive at the end (not OOM-killed later)
    ok = filled * data["mb"] <= limit
    return ok, (f"{filled} of {data['children']} x {data['mb']} MB children filled (limit {limit} MB); "
                f"exits {data['codes']}" if ok else f"{filled * data['mb']} MB resident > {limit} MB")


attack("res_memory_processes", "resources", "several processes together stay under the cgroup memory limit", r"""
    import subprocess, sys
    mb = 200
    # b"\1" * n writes every page (bytearray(n) would be lazily zeroed pages, never resident)
    child = f"b = b'\\1' * ({mb} << 20)\nprint('filled', flush=True)\nimport sys\nsys.stdin.read()"
    kids = [subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL) for _ in range(4)]
    lines = [k.stdout.readline().strip() for k in kids]      # "filled", or b"" when it was killed
    for k in kids:
        try:
            k.stdin.close()
        except OSError:
            pass
    codes = [k.wait(timeout=30) for k in kids]
    # all survivors held their memory at once (each waits on stdin until every child has answered)
    report(children=len(kids), mb=mb, filled=sum(l == b"filled" and c == 0 for l, c in zip(lines, codes)),
           codes=codes)
""", _verify_oom, settings={"memory_mb": 512, "fsize_mb": 8}, timeout=60, fast=False)


def _verify_fsize(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    cap = ctx.probe["fsize_mb"]
    ok = data["stopped"] is not None and "EFBIG" in data["stopped"] and data["mb"] <= cap
    return ok, f"stopped at {data['mb']} MB ({data['stopped']}); RLIMIT_FSIZE {cap} MB"


attack("res_huge_file", "resources", "RLIMIT_FSIZE stops a huge file (EFBIG)", r"""
    import errno
    written, stopped = 0, None
    try:
        with open("/tmp/huge.bin", "wb") as fh:
            for _ in range(32):
                fh.write(b"\0" * (1 << 20))
                written += 1 << 20
    except OSError as exc:
        stopped = errno.errorcode.get(exc.errno, str(exc.errno))
    import os
    os.unlink("/tmp/huge.bin")
    report(mb=written >> 20, stopped=stopped)
""", _verify_fsize, settings={"memory_mb": 512, "fsize_mb": 8}, fast=False)


def _verify_tmpfs(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    caps = {"/tmp": ctx.probe["tmpfs_mb"], "/home/sandbox": ctx.probe["home_tmpfs_mb"], "/dev/shm": 64}
    bad = {d: v for d, v in data["fill"].items() if v["stopped"] not in ("ENOSPC", "EFBIG") or v["mb"] > caps[d]}
    alive = ctx.run("print(1+1)")  # while /tmp and $HOME are still full
    ok = not bad and alive.stdout.strip() == "2"
    return ok, ("; ".join(f"{d} full at {v['mb']} MB" for d, v in data["fill"].items())
                + ("; kernel answers while full" if ok else f"; PROBLEM {bad} answer {alive.output[:60]!r}"))


attack("res_tmpfs_fill", "resources", "scratch tmpfs fill stops at its cap (ENOSPC); kernel keeps working", r"""
    import errno
    fill = {}
    for d in ("/tmp", "/home/sandbox", "/dev/shm"):
        written, stopped = 0, None
        try:
            with open(d + "/fill.bin", "wb") as fh:
                while written < (1 << 30):
                    fh.write(b"\0" * (1 << 20))
                    written += 1 << 20
        except OSError as exc:
            stopped = errno.errorcode.get(exc.errno, str(exc.errno))
        fill[d] = {"mb": written >> 20, "stopped": stopped}
    report(fill=fill)
""", _verify_tmpfs, cleanup=r"""
    import os
    for d in ("/tmp", "/home/sandbox", "/dev/shm"):
        try:
            os.unlink(d + "/fill.bin")
        except OSError:
            pass
""")


def _verify_output_cap(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    limit = ctx.session.settings.output_limit_bytes
    sizes = {"stdout": len(execution.stdout.encode()), "stderr": len(execution.stderr.encode()),
             "display": len("\n".join(execution.display).encode())}
    big = {k: v for k, v in sizes.items() if v > limit + 512}
    ok = not big and execution.truncated
    return ok, (f"kept {max(sizes.values())} bytes of ~10 MB (cap {limit}), marked truncated" if ok
                else f"UNCAPPED: {big}, truncated={execution.truncated}")


attack("res_output_flood", "resources", "output capped at output_limit_bytes, marked truncated", r"""
    import sys
    for _ in range(10):
        print("x" * 1_000_000)
    sys.stderr.write("e" * 3_000_000)
""", _verify_output_cap)

attack("res_output_flood_unguarded", "resources",
       "host caps output even with the in-kernel guard removed", r"""
    import os, sys
    for stream in (sys.stdout, sys.stderr):
        hooks = getattr(stream, "_hooks", None)
        if hooks is not None:
            hooks.clear()                          # the REPL's own cap is gone
    for _ in range(10):
        sys.stdout.write("y" * 1_000_000)
        sys.stdout.flush()
    os.write(1, b"z" * 4_000_000)                  # straight to the container's stdout (Docker's capped log)
""", _verify_output_cap)

attack("res_display_flood", "resources", "rich display output capped like text", r"""
    from IPython.display import display
    for _ in range(4):
        display({"text/plain": "d" * 3_000_000}, raw=True)
""", _verify_output_cap)


def _verify_interrupted(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    if not execution.timed_out:
        return False, "the cell did not time out: " + _short(execution.output, 80)
    if execution.restarted:
        return True, f"timed out; the host restarted the {execution.restarted}"
    kept = ctx.run("print(kept_before_the_attack)")
    ok = kept.stdout.strip() == "41"
    return ok, ("timed out, interrupted; variables kept" if ok else "interrupted but state lost: "
                + _short(kept.output, 60))


attack("res_infinite_loop", "resources", "timeout -> interrupt; variables kept", r"""
    kept_before_the_attack = 41
    while True:
        pass
""", _verify_interrupted, timeout=1)

attack("res_long_sleep", "resources", "timeout -> interrupt", r"""
    import time
    kept_before_the_attack = 41
    time.sleep(3600)
""", _verify_interrupted, timeout=1)

attack("res_catastrophic_regex", "resources", "timeout -> interrupt, or kernel restart if it holds the GIL", r"""
    import re
    kept_before_the_attack = 41
    re.match(r"(a+)+$", "a" * 64 + "b")
""", _verify_interrupted, timeout=1)


def _verify_restarted(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    ok = execution.timed_out and execution.restarted is not None
    return ok, (f"ignored the interrupt; the host restarted the {execution.restarted}" if ok else
                f"timed_out={execution.timed_out} restarted={execution.restarted}")


attack("res_gil_hog", "resources", "a C loop holding the GIL ignores interrupts: kernel restarted", r"""
    import collections, itertools
    collections.deque(itertools.repeat(None), maxlen=0)   # never checks for signals
""", _verify_restarted, timeout=1, fast=False)


def _verify_threads(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    limit = ctx.probe["pids_limit"]
    ok = data["stopped"] is not None and data["threads"] <= limit and not execution.restarted
    return ok, f"{data['threads']} threads, then {data['stopped']} (pids limit {limit}); kernel kept"


attack("res_thread_bomb", "resources",
       "thread creation stops at the pids limit (gVisor: RLIMIT_NPROC); kernel keeps answering", r"""
    import threading
    gate = threading.Event()
    threads, stopped = [], None
    try:
        for _ in range(5000):
            t = threading.Thread(target=gate.wait, daemon=True)
            t.start()
            threads.append(t)
    except RuntimeError as exc:
        stopped = str(exc)
    gate.set()
    for t in threads:
        t.join()
    report(threads=len(threads), stopped=stopped)
""", _verify_threads)


def _verify_fds(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ok = data["stopped"] == "EMFILE" and data["opened"] <= ctx.probe["nofile"]
    return ok, f"{data['opened']} files, then {data['stopped']} (nofile {ctx.probe['nofile']}); kernel kept"


attack("res_fd_exhaustion", "resources", "open files stop at RLIMIT_NOFILE (EMFILE); kernel keeps answering", r"""
    import errno
    held, stopped = [], None
    try:
        for _ in range(100000):
            held.append(open("/dev/null", "rb"))
    except OSError as exc:
        stopped = errno.errorcode.get(exc.errno)
    n = len(held)
    for f in held:
        f.close()
    report(opened=n, stopped=stopped)
""", _verify_fds)


def _verify_cpu(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    used = data["work"] / (data["rate"] * data["wall"])   # CPUs' worth of work done by all spinners
    quota = ctx.probe["cpus"]
    limit = data["quota"] / data["period"] if data["quota"] and data["period"] else None
    where = "cgroup"
    if limit is None and ctx.probe.get("gvisor"):   # gVisor shows no cgroup files inside: read the host's
        limit, where = cpu_limit(ctx.session.container_id or ""), "host cgroup of gVisor's kernel:"
    # The kernel enforces the cgroup limit; the spinners' measured share is shown, not judged (too noisy
    # on shared machines to be a reliable test on its own).
    ok = limit is not None and abs(limit - quota) < 0.01
    return ok, (f"{where} CPU limit {limit if limit is None else round(limit, 2)} CPU (setting {quota}); "
                f"{data['workers']} spinners did ~{used:.1f} CPUs' worth of work")


attack("res_cpu_quota", "resources", "spinning processes share the CPU quota", r"""
    import os, struct, time
    def spin(seconds):
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            n += 1
        return n
    rate = spin(0.3) / 0.3                  # one process alone: iterations per CPU-second
    workers, wall = 4, 0.6
    r, w = os.pipe()
    kids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                os.write(w, struct.pack("<Q", spin(wall)))
            finally:
                os._exit(0)
        kids.append(pid)
    for pid in kids:
        os.waitpid(pid, 0)
    os.close(w)
    data = b""
    while len(data) < 8 * workers:
        chunk = os.read(r, 64)
        if not chunk:
            break
        data += chunk
    os.close(r)
    work = sum(struct.unpack("<%dQ" % (len(data) // 8), data))
    quota = period = None
    try:                                    # cgroup v2, then v1
        q, p = open("/sys/fs/cgroup/cpu.max").read().split()
        quota, period = (None if q == "max" else int(q)), int(p)
    except (OSError, ValueError):
        try:
            quota = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
            period = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
            quota = None if quota < 0 else quota
        except (OSError, ValueError):
            pass
    report(workers=workers, rate=rate, wall=wall, work=work, quota=quota, period=period)
""", _verify_cpu)


def _verify_iopub_flood(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    answered, printed, tries = 0, 0, 0
    for _ in range(3):     # the flood goes on: the host idles (as while a model thinks), then runs a cell
        time.sleep(3)
        tries += 1
        after = ctx.run("x_after_flood = 1 + 1\nprint(x_after_flood)", timeout=10)
        # The cell's own output may wait behind the flood in the kernel's queue and be dropped there: it
        # answers when its reply comes back (within the timeout, no restart), saying what was dropped.
        if after.error is None and not after.timed_out and not after.restarted:
            answered += 1
            printed += after.stdout.strip() == "2"
    sizes = data["sizes"]
    what = f"{len(sizes)} x {sizes[0]} MiB frames" if len(set(sizes)) == 1 else f"{sizes} MiB frames"
    return answered == tries, (f"a kernel thread keeps publishing messages of {what} after its cell; "
                               f"{answered}/{tries} later cells answered ({printed} with their output)")


attack("res_iopub_flood", "resources",
       "a kernel thread flooding iopub with 48 MiB frames after its cell: host memory bounded, session answers",
       r"""
    import threading, time
    kernel = get_ipython().kernel
    frames = {48: memoryview(bytearray(48 << 20)), 15: memoryview(bytearray(15 << 20))}   # over / under the cap
    _rlm_flood_stop = threading.Event()
    def flood():
        time.sleep(1)                       # after its cell has returned
        while not _rlm_flood_stop.is_set():
            for frame in frames.values():
                kernel.session.send(kernel.iopub_socket, "stream", {"name": "stdout", "text": "."},
                                    buffers=[frame])
            time.sleep(0.01)
    threading.Thread(target=flood, daemon=True).start()
    report(sizes=sorted(frames))
""", _verify_iopub_flood, timeout=30, fresh=True, cleanup="_rlm_flood_stop.set()",
       host_budget=HostBudget(rss_mb=300, seconds=60))


def _verify_stdout_flood(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    ok = not execution.timed_out and "z" * 100 not in execution.output
    return ok, (f"{data['mb']} MB written to fd 1 and 2 in {data['seconds']} s; none reached the host's output"
                if ok else f"timed_out {execution.timed_out}; output {_short(execution.output, 60)}")


attack("res_stdout_flood_engine", "resources",
       "an os.write(1/2) flood for 10 s reaches no log: dockerd + containerd stay within their CPU budget", r"""
    import os, time
    chunk, written, end = b"z" * 65536, 0, time.monotonic() + 10
    while time.monotonic() < end:
        for fd in (1, 2):
            try:
                written += os.write(fd, chunk)
            except OSError:
                pass
    report(mb=written >> 20, seconds=10)
""", _verify_stdout_flood, timeout=30, fast=False, host_budget=HostBudget(engine_cpu_s=1.5, rss_mb=100))


attack("res_iopub_multipart_flood", "resources",
       "a kernel thread publishing iopub messages of many 15 MiB frames: host memory bounded", r"""
    import threading, time
    kernel = get_ipython().kernel
    frame = memoryview(bytearray(15 << 20))       # under the per-frame cap; 24 of them in one message
    _rlm_flood_stop = threading.Event()
    def flood():
        time.sleep(1)
        while not _rlm_flood_stop.is_set():
            kernel.session.send(kernel.iopub_socket, "stream", {"name": "stdout", "text": "."},
                                buffers=[frame] * 24)
            time.sleep(0.01)
    threading.Thread(target=flood, daemon=True).start()
    report(sizes=[15] * 24)
""", _verify_iopub_flood, timeout=30, fresh=True, fast=False, cleanup="_rlm_flood_stop.set()",
       host_budget=HostBudget(rss_mb=300, seconds=60))
