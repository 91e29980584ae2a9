"""The append-only JSONL results file of a batch run.

One line per finished query, appended, flushed and fsynced as soon as the query ends, so a
run killed at any moment loses nothing already written.  When reading, the last line for
an id wins (a retried query appends a new line); a torn last line (a kill in the middle of
a write) is skipped, and the next writer starts on a fresh line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

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


class ResultWriter:
    """Appends one JSON line per record; each line is on disk when ``write`` returns."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = self.path.open("a+b")
        self._fh.seek(0, os.SEEK_END)
        if self._fh.tell() > 0:  # a torn last line must not swallow the next record
            self._fh.seek(-1, os.SEEK_END)
            if self._fh.read(1) != b"\n":
                self._fh.write(b"\n")
                self._sync()

    def write(self, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
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

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
