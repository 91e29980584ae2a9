"""Run traces: one JSON object per line, written as the run goes, read back by ``read_trace``.

A trace holds metadata, model replies, cell code and (truncated) output, sub-call sizes
and timings.  It never holds the context itself: callers pass only its metadata (kind,
length, document count, source).

Event kinds written by the orchestrator:

- ``run_start``   {question, context: {kind, total_chars, n_documents, source}, root_model, sub_model, settings}
- ``model_reply`` {iteration, text, usage: {prompt_tokens, completion_tokens}, latency_s, model}
- ``cell``        {iteration, code, output, error, timed_out, duration_s, restarted, truncated_chars}
- ``sub_call``    {model, prompt_chars, reply_chars, latency_s, ok, error}
- ``note``        {iteration, text}
- ``run_end``     {answer, status, iterations, sub_calls, usage, duration_s}

Every line also has ``t`` (seconds since the writer started) and ``ts`` (ISO time, UTC).
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from rlm.core.text import json_line, jsonl_lines, jsonl_objects
from rlm.errors import UsageError

_RESERVED = frozenset({"t", "ts", "kind"})
# a full or failing disk: the run goes on without its trace (the trace says so by ending early)
_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})
_FAILED: OrderedDict[str, str] = OrderedDict()  # trace path -> why it is incomplete (the latest few)
_FAILED_KEPT = 256
_FAILED_LOCK = threading.Lock()


# --------------------------------------------------------------------------- writing


class TraceWriter:
    """Appends events to a JSONL file, each line on its way to disk before ``event`` returns.

    A run that is killed keeps every line written before.  Safe to call from several threads
    (sub-calls of a batch finish concurrently).  Each event is one line of ``json_line``: no
    character of a model's reply or a cell's output can split it or hide the events after it.

    A write that fails because the disk is full (or failing) does not stop the run: the writer
    stops writing, keeps the reason in ``failure`` and ``trace_failure(path)`` returns it, so the
    caller can say the trace is incomplete.  A path that cannot be a file (a folder, under a
    file, no permission) is a ``UsageError`` before anything runs.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.failure: str | None = None
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._closed = False
        self._fd: int | None = None
        with _FAILED_LOCK:
            _FAILED.pop(_key(self.path), None)  # this writer's own failure, if any, counts
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._end_torn_line()
        except OSError as exc:
            if exc.errno not in _DISK_ERRORS:
                self._close_fd()
                raise UsageError(f"cannot write the trace {self.path}: {exc.strerror or exc}",
                                 hint="give a writable file with --trace, or set trace_dir (RLM_TRACE_DIR)") from exc
            self._fail(exc)

    @property
    def closed(self) -> bool:
        return self._closed

    def event(self, kind: str, **data: Any) -> None:
        """Write one event line; values JSON cannot hold are written with ``str``."""
        clash = _RESERVED & data.keys()
        if clash:
            raise ValueError(f"trace event fields {sorted(clash)} are reserved")
        record = {
            "t": round(time.monotonic() - self._start, 3),
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "kind": kind,
            **_jsonable(data),
        }
        line = (json_line(record, default=str) + "\n").encode("utf-8")
        with self._lock:
            if self._closed:
                raise ValueError(f"trace {self.path} is closed")
            if self._fd is None:  # failed before: the trace ends at the last whole line
                return
            try:
                _write_all(self._fd, line)
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        """Close the file; calling it again does nothing."""
        with self._lock:
            self._closed = True
            self._close_fd()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- internals
    def _end_torn_line(self) -> None:
        """A file whose last line was torn (a killed run) gets a newline first, so the next
        event is not glued to it and lost."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if not size:
            return
        try:
            with open(self.path, "rb") as fh:
                fh.seek(size - 1)
                torn = fh.read(1) != b"\n"
        except OSError:  # unreadable (write-only): nothing to check
            return
        if torn:
            _write_all(self._fd, b"\n")

    def _fail(self, exc: OSError) -> None:
        self.failure = exc.strerror.lower() if exc.strerror else str(exc)
        self._close_fd()
        with _FAILED_LOCK:
            _FAILED[_key(self.path)] = self.failure
            while len(_FAILED) > _FAILED_KEPT:
                _FAILED.popitem(last=False)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _key(path: Path | str) -> str:
    return os.path.abspath(os.fspath(path))


def trace_failure(path: Path | str | None) -> str | None:
    """Why the trace at ``path`` is incomplete (a write failed: "no space left on device"), or
    None when every event was written (or no writer of this process wrote it)."""
    if path is None:
        return None
    with _FAILED_LOCK:
        return _FAILED.get(_key(path))


def _jsonable(value: Any) -> Any:
    """``value`` with dict keys made strings and unknown objects made ``str``."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# --------------------------------------------------------------------------- reading


def read_trace(path: Path | str) -> list[dict]:
    """The events of a trace file.

    Lines are split on "\\n" only (a raw U+2028 written by another tool splits nothing).
    Lines that are not JSON objects with a ``kind`` are skipped: a run killed mid-write
    leaves a partial last line.  Raises ``UsageError`` for a missing file or one with no
    events.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a trace file" if path.is_dir() else "does not exist"
        raise UsageError(f"trace {path} {what}",
                         hint="pass the path of a .jsonl trace written by an rlm run")
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read trace {path}: {exc.strerror or exc}") from exc
    events = [e for e in jsonl_objects(jsonl_lines(text)) if isinstance(e.get("kind"), str)]
    if not events:
        raise UsageError(f"trace {path} holds no events",
                         hint="a trace is a JSONL file with one event object per line")
    return events


__all__ = ["TraceWriter", "read_trace", "trace_failure"]
