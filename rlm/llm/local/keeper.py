"""A small parent for the embedded server that records how it ended.

``python -m rlm.llm.local.keeper --status FILE -- llama-server ...`` starts the server as its
child and writes ``{"pid", "started_at"}`` to FILE; it forwards SIGTERM/SIGINT/SIGHUP to the
child, waits, and adds ``"exit_code"``, ``"signal"`` and ``"ended_at"`` (atomically) before
exiting itself.  So any rlm process, not
only the one that started the server, can tell "killed by SIGSEGV" from "exited with status 1".
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main", "read_status"]


def read_status(path: Path) -> dict | None:
    """The keeper's record: the server's pid, and how it ended once it has (``ended_at``); or None."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a command and record how it ended.")
    parser.add_argument("--status", required=True, type=Path, help="where to write the exit record")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    args.status.unlink(missing_ok=True)
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    started = {"pid": child.pid, "started_at": time.time()}
    _write(args.status, started)

    def forward(signum: int, _frame: object) -> None:
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    code = child.wait()
    _write(args.status, {**started, "exit_code": code if code >= 0 else None,
                         "signal": -code if code < 0 else None, "ended_at": time.time()})
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
