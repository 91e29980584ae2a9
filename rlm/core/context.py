"""Checking what the user gives as context before any container starts."""

from __future__ import annotations

import codecs
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rlm.errors import ContextError

_FULL_CHECK_BYTES = 64 * 1024 * 1024
_SAMPLE = 4 * 1024 * 1024


@dataclass
class ContextSource:
    """A checked context: a path the sandbox mounts read-only, or None for no context."""

    path: Path | None
    size_bytes: int = 0
    temporary: bool = False

    def cleanup(self) -> None:
        if self.temporary and self.path is not None:
            self.path.unlink(missing_ok=True)
            try:
                self.path.parent.rmdir()
            except OSError:
                pass

    def __enter__(self) -> "ContextSource":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


def _check_text(path: Path, size: int) -> None:
    """Refuse binary data: NUL bytes or invalid UTF-8 (whole file when small, samples when huge)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as fh:
        ranges = [(0, size)] if size <= _FULL_CHECK_BYTES else [(0, _SAMPLE), (size - _SAMPLE, _SAMPLE)]
        for start, length in ranges:
            fh.seek(start)
            data = fh.read(length)
            if b"\x00" in data:
                raise ContextError(f"{path} looks like a binary file (it contains NUL bytes)",
                                   hint="give a UTF-8 text, .json or .jsonl file")
            if start:  # a sample from the middle may start inside a character
                decoder = codecs.getincrementaldecoder("utf-8")()
                data = data[4:] if len(data) > 4 else data
                while data and (data[0] & 0xC0) == 0x80:
                    data = data[1:]
            try:
                decoder.decode(data, final=(start + length >= size))
            except UnicodeDecodeError as exc:
                raise ContextError(f"{path} is not UTF-8 text (invalid byte at offset {start + exc.start})",
                                   hint="convert it to UTF-8 (e.g. iconv -t utf-8) or give a text file") from None


def _check_json(path: Path, size: int) -> None:
    """A .json / .jsonl context must parse (checked in full up to 64 MiB)."""
    import json

    suffix = path.suffix.lower()
    if suffix not in (".json", ".jsonl", ".ndjson") or size > _FULL_CHECK_BYTES:
        return
    text = path.read_text(encoding="utf-8")
    lines = [(1, text)] if suffix == ".json" else enumerate(text.splitlines(), 1)
    for number, chunk in lines:
        if not chunk.strip():
            continue
        try:
            json.loads(chunk)
        except json.JSONDecodeError as exc:
            line = exc.lineno if suffix == ".json" else number
            raise ContextError(f"{path} line {line}, column {exc.colno}: invalid JSON ({exc.msg})",
                               hint="fix the JSON, or rename the file to .txt to use it as plain text") from None


def check_file(path: str | os.PathLike, *, max_bytes: int, allow_dir: bool = False) -> ContextSource:
    p = Path(path).expanduser()
    if not p.exists():
        raise ContextError(f"context file not found: {p}", hint="check the path given with -f")
    if p.is_dir():
        if not allow_dir:
            raise ContextError(f"{p} is a folder, not a file", hint="give a file with -f, or a folder with --context-dir")
        total = 0
        for root, _dirs, files in os.walk(p):
            for name in files:
                f = Path(root) / name
                total += f.stat().st_size
                if total > max_bytes:
                    raise ContextError(f"the folder {p} holds more than the maximum context size ({max_bytes} bytes)",
                                       hint="raise max_context_bytes (RLM_MAX_CONTEXT_BYTES) or give less")
                _check_text(f, f.stat().st_size)
        if total == 0:
            raise ContextError(f"the folder {p} holds no text", hint="give a folder with documents in it")
        return ContextSource(p.resolve(), total)
    if not p.is_file():
        raise ContextError(f"{p} is not a regular file")
    if not os.access(p, os.R_OK):
        raise ContextError(f"context file is not readable: {p}", hint="check its permissions")
    size = p.stat().st_size
    if size == 0:
        raise ContextError(f"context file is empty: {p}", hint="give a file with some text in it")
    if size > max_bytes:
        raise ContextError(f"context file is {size} bytes, over the maximum of {max_bytes}",
                           hint="raise max_context_bytes (RLM_MAX_CONTEXT_BYTES) or give a smaller file")
    try:
        _check_text(p, size)
    except PermissionError as exc:
        raise ContextError(f"context file is not readable: {p}", hint="check its permissions") from exc
    if size <= _SAMPLE and not p.read_text(encoding="utf-8").strip():
        raise ContextError(f"context file holds only whitespace: {p}", hint="give a file with some text in it")
    _check_json(p, size)
    return ContextSource(p.resolve(), size)


def inline_text(text: str, *, max_bytes: int) -> ContextSource:
    """Context given on the command line (-c): written to a private temporary file."""
    if not text.strip():
        raise ContextError("the context given with -c is empty", hint="give some text, or a file with -f")
    data = text.encode("utf-8")
    if len(data) > max_bytes:
        raise ContextError(f"the context is {len(data)} bytes, over the maximum of {max_bytes}")
    folder = Path(tempfile.mkdtemp(prefix="rlm-ctx-"))
    os.chmod(folder, 0o755)
    path = folder / "context.txt"
    path.write_bytes(data)
    os.chmod(path, 0o644)
    return ContextSource(path, len(data), temporary=True)
