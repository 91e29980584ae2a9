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

import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from rlm.errors import UsageError

_RESERVED = frozenset({"t", "ts", "kind"})


# --------------------------------------------------------------------------- writing


class TraceWriter:
    """Appends events to a JSONL file, flushing after every line.

    A run that is killed keeps every line written before.  Safe to call from several
    threads (sub-calls of a batch finish concurrently).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write the trace {self.path}: {exc.strerror or exc}",
                             hint="give a writable file with --trace, or set trace_dir (RLM_TRACE_DIR)") from exc
        self._start = time.monotonic()
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._file.closed

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
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            if self._file.closed:
                raise ValueError(f"trace {self.path} is closed")
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        """Close the file; calling it again does nothing."""
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


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
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read trace {path}: {exc.strerror or exc}") from exc
    events = [e for e in map(_parse_line, text.splitlines()) if e is not None]
    if not events:
        raise UsageError(f"trace {path} holds no events",
                         hint="a trace is a JSONL file with one event object per line")
    return events


def _parse_line(line: str) -> dict | None:
    if not line.strip():
        return None
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) and isinstance(event.get("kind"), str) else None


__all__ = ["TraceWriter", "read_trace"]
