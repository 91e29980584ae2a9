"""The sandbox's supervisor: starts the kernel, reports its life to the host, obeys the host.

Stdlib only.  It connects once to the host's control socket (served by the host in the
read-only bridge folder), says hello, starts the kernel, and then:

* reports ``kernel_ready`` when the kernel's sockets are bound and ``kernel_exit`` (with
  the exit status) when the kernel dies for any reason (os._exit, segfault, OOM kill);
* on ``interrupt``, sends SIGINT to the kernel's own pid only (never its process group:
  forked children of a cell would wake up as copies of the kernel);
* on ``interrupt``, also kills every other process the cell left (forked children, a fork
  bomb) so they cannot hold the pids limit; the kernel itself is kept;
* on ``kill``, kills every process in the container but itself and reports ``killed``; on
  ``start``, starts a fresh kernel.  A restart is the two in turn, so that the host can
  reopen the run folder for the new kernel only once no process of the old one is left
  (the way out of a cell that holds the GIL in C, a fork bomb, ...);
* it is normally pid 1 of the container: the kernel does not deliver signals it has no
  handler for, so a cell cannot kill it; it reaps orphans (its own children only);
* when the host goes away (the control connection closes), kills everything and exits,
  so the container stops.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import subprocess
import sys
import time

import protocol
from protocol import Command, Event

CONTROL_SOCKET = protocol.CONTROL_SOCKET
CONNECTION_FILE = protocol.CONNECTION_FILE
KERNEL_MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel_main.py")


def _state_and_parent(pid: int) -> tuple[str | None, int]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None, -1
    return fields[0].decode(), int(fields[1])


class Supervisor:
    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.reader = protocol.FrameReader(max_size=1 << 20)
        self.kernel: subprocess.Popen | None = None
        self.ready_fd: int | None = None
        self.generation = 0
        self.sig_r, sig_w = os.pipe()
        os.set_blocking(sig_w, False)
        signal.set_wakeup_fd(sig_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self.shutdown(0))

    def send(self, event: str, **fields) -> None:
        try:
            protocol.send_frame(self.ctl, {"event": event, **fields})
        except OSError:
            self.shutdown(0)

    # -- kernel lifecycle ----------------------------------------------------------------
    def start_kernel(self) -> None:
        self.generation += 1
        ready_r, ready_w = os.pipe()
        env = dict(os.environ, MALLOC_ARENA_MAX="2")
        for attempt in range(50):  # fork can fail for a moment while killed processes are reaped
            try:
                self.kernel = subprocess.Popen(
                    [sys.executable, KERNEL_MAIN, "-f", CONNECTION_FILE, "--ready-fd", str(ready_w)],
                    pass_fds=(ready_w,), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, close_fds=True)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ENOMEM) or attempt == 49:
                    os.close(ready_r)
                    os.close(ready_w)
                    self.send(Event.ERROR, message=f"cannot start the kernel: {exc}")
                    self.kernel = None
                    return
                self.kill_all()
                time.sleep(0.05)
        os.close(ready_w)
        self.ready_fd = ready_r

    def kill_all(self) -> None:
        """SIGKILL every process we may signal except ourselves (Linux spares the caller and init)."""
        for _ in range(20):
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                break
            except PermissionError:
                break
            self.reap()
            if not self._others_alive():
                break

    def _others_alive(self) -> bool:
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in (1, me):
                try:
                    with open(f"/proc/{entry}/stat", "rb") as fh:
                        state = fh.read().rsplit(b")", 1)[1].split()[0]
                except OSError:
                    continue
                if state != b"Z":
                    return True
        return False

    def reap(self) -> None:
        """Collect our exited children; report the kernel's exit."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.kernel is not None and pid == self.kernel.pid:
                self.kernel.returncode = os.waitstatus_to_exitcode(status)
                self.send(Event.KERNEL_EXIT, generation=self.generation, code=self.kernel.returncode)
                self.kernel = None
                self._close_ready()

    def _close_ready(self) -> None:
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None

    def kill_kernel(self) -> None:
        self._close_ready()
        self.kernel = None  # its exit is expected: not reported
        self.kill_all()
        self.reap()
        self.send(Event.KILLED, generation=self.generation)

    def kill_others(self, deadline_s: float = 2.0) -> None:
        """Kill every process but ourselves and the kernel (what a cell left running), and wait
        until they are gone: reaped by us, or zombies the kernel itself must collect."""
        kernel = self.kernel.pid if self.kernel else -1
        keep = {1, os.getpid(), kernel}
        deadline = time.monotonic() + deadline_s
        while True:
            left = []
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) in keep:
                    continue
                state, parent = _state_and_parent(int(entry))
                if state is None or (state == "Z" and parent == kernel):
                    continue  # gone, or the kernel's own zombie child
                left.append(int(entry))
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self.reap()
            if not left or time.monotonic() > deadline:
                return
            time.sleep(0.005)

    def shutdown(self, code: int) -> None:
        self.kernel = None
        try:
            self.kill_all()
        finally:
            os._exit(code)

    # -- main loop -----------------------------------------------------------------------
    def handle(self, message) -> None:
        if isinstance(message, protocol.ProtocolError):
            return
        command = message.get("cmd")
        if command == Command.INTERRUPT and self.kernel is not None:
            self.kill_others()  # first, so they are gone before the interrupted kernel answers
            try:
                os.kill(self.kernel.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            self.kill_others()  # and what the kernel forked meanwhile
        elif command == Command.KILL:
            self.kill_kernel()
        elif command == Command.START:
            if self.kernel is None:
                self.start_kernel()
        elif command == Command.STOP:
            self.shutdown(0)

    def run(self) -> None:
        self.send(Event.HELLO, pid=os.getpid())
        self.start_kernel()
        while True:
            fds = [self.ctl, self.sig_r] + ([self.ready_fd] if self.ready_fd is not None else [])
            try:
                readable, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            if self.sig_r in readable:
                os.read(self.sig_r, 4096)
                self.reap()
            if self.ready_fd is not None and self.ready_fd in readable:
                data = os.read(self.ready_fd, 64)
                self._close_ready()
                if data.startswith(b"ready") and self.kernel is not None:
                    self.send(Event.KERNEL_READY, generation=self.generation, pid=self.kernel.pid)
            if self.ctl in readable:
                data = self.ctl.recv(65536)
                if not data:
                    self.shutdown(0)
                try:
                    messages = self.reader.feed(data)
                except protocol.ProtocolError:
                    self.shutdown(1)
                for message in messages:
                    self.handle(message)


def _not_dumpable() -> None:
    """Cells run as the same uid: without this they could ptrace the supervisor and take its
    control connection.  A non-dumpable process can only be traced with CAP_SYS_PTRACE."""
    import ctypes

    PR_SET_DUMPABLE = 4
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def _quiet() -> None:
    """Nothing in the container keeps the container's stdout/stderr open: a cell writing to fd 1 or 2
    (even through /proc/1/fd) reaches /dev/null, never the engine (its logs cost dockerd CPU outside the
    container's quota).  Cell output reaches the host over the kernel's iopub socket."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def main() -> None:
    _not_dumpable()
    _quiet()
    os.umask(0)
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.connect(CONTROL_SOCKET)
    Supervisor(ctl).run()


if __name__ == "__main__":
    main()
