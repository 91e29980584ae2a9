"""The append-only JSONL results file of a batch run.

One line per finished query, appended, flushed and fsynced as soon as the query ends, so a
run killed at any moment loses nothing already written.  When reading, the last line for
an id wins (a retried query appends a new line); a torn last line (a kill in the middle of
a write) is skipped, and the next writer starts on a fresh line.

One process at a time writes a results file: ``ResultsLock`` holds an exclusive ``flock`` on a
sidecar ``<file>.lock`` (which records the holder's pid) from before the file is read until the
run ends; a second writer fails at once with a ``UsageError`` (exit 2) naming that pid.  The
kernel drops the lock when its holder dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from rlm.core.text import json_line
from rlm.errors import UsageError

log = logging.getLogger(__name__)

FIELDS = ("id", "question", "answer", "status", "iterations", "sub_calls", "usage", "duration_s", "error", "trace")


def read_results(path: str | Path) -> dict[str, dict]:
    """The last record for each id in ``path`` (empty when the file does not exist)."""
    path = Path(path)
    latest: dict[str, dict] = {}
    if not path.exists():
        return latest
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s line %d is not JSON (a run killed while writing?); skipped", path, n)
                continue
            except RecursionError:
                log.warning("%s line %d is JSON nested too deeply to load; skipped", path, n)
                continue
            if isinstance(record, dict) and record.get("id") is not None:
                latest[str(record["id"])] = record
    return latest


class ResultsLock:
    """An exclusive lock on a results file, for one process at a time (``flock`` on ``<file>.lock``).

    ``acquire`` never waits: when another process holds the lock it raises a ``UsageError``
    naming that process's pid.  Usable as a context manager; ``release`` is idempotent.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> ResultsLock:
        if self._fd is not None:
            return self
        for _ in range(50):
            try:
                self.lock_path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                raise UsageError(f"cannot lock the results file {self.path}: {self.lock_path}: "
                                 f"{exc.strerror or exc}",
                                 hint="give an output file in a folder you can write to") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _holder(fd) if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None
                os.close(fd)
                if holder is None and exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UsageError(f"cannot lock the results file {self.path}: {exc.strerror or exc}",
                                     hint="give an output file on a local file system") from None
                raise UsageError(f"the results file {self.path} is being written by another rlm process "
                                 f"({holder or 'pid unknown'})",
                                 hint="wait for that run to end, or give another output file "
                                      "(--output); two runs on one file would run every query twice") from None
            # a releasing holder unlinks the lock file: make sure ours is still the one at the path
            try:
                here, there = os.fstat(fd), os.stat(self.lock_path)
                same = (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
                self._fd = fd
                return self
            os.close(fd)
        raise UsageError(f"cannot lock the results file {self.path}: its lock file keeps changing",
                         hint="another process is starting and ending runs on it; try again")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.lock_path)   # while still holding it: the next taker checks the inode
        except OSError:
            pass
        os.close(fd)

    def __enter__(self) -> ResultsLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> str | None:
    """``pid N`` (and its host when not this one) from a held lock file; the holder writes it just
    after taking the lock, so an empty file is read again for a moment."""
    deadline = time.monotonic() + 1.0
    while True:
        raw = os.pread(fd, 200, 0).decode("ascii", "replace").split()
        if raw and raw[0].isdigit():
            host = raw[1] if len(raw) > 1 else ""
            where = f" on {''.join(c for c in host if c.isalnum() or c in '.-_')[:64]}" \
                if host and host != socket.gethostname() else ""
            return f"pid {int(raw[0])}{where}"
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


class ResultWriter:
    """Appends one JSON line per record; each line is on disk when ``write`` returns.

    It writes under ``lock`` when given one that is held (the caller read the file under it);
    otherwise it takes its own ``ResultsLock`` until ``close``.
    """

    def __init__(self, path: str | Path, *, lock: ResultsLock | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._own_lock = None if lock is not None and lock.held else ResultsLock(self.path).acquire()
        self._lock = threading.Lock()
        try:
            self._fh = self.path.open("a+b")
        except BaseException:
            if self._own_lock is not None:
                self._own_lock.release()
            raise
        self._fh.seek(0, os.SEEK_END)
        if self._fh.tell() > 0:  # a torn last line must not swallow the next record
            self._fh.seek(-1, os.SEEK_END)
            if self._fh.read(1) != b"\n":
                self._fh.write(b"\n")
                self._sync()

    def write(self, record: dict) -> None:
        data = (json_line(record) + "\n").encode("utf-8")   # no character can split a record
        with self._lock:
            self._fh.write(data)
            self._sync()

    def _sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()
            if self._own_lock is not None:
                self._own_lock.release()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
