"""Whether a context fits the sandbox: its format from its name, the bytes the REPL reads to load
it, and the memory that takes, checked on the host before any container starts."""

from __future__ import annotations

import os
from pathlib import Path

from rlm.errors import ContextError
from rlm.sandbox.protocol import ASCII_DIRECT_MIN, ContextFormat
from rlm.sandbox.settings import SandboxSettings


def context_format(path: Path) -> str:
    if path.is_dir():
        return ContextFormat.DIR
    suffix = path.suffix.lower()
    return {".json": ContextFormat.JSON, ".jsonl": ContextFormat.JSONL,
            ".ndjson": ContextFormat.JSONL}.get(suffix, ContextFormat.TEXT)


KERNEL_HEADROOM_BYTES = 256 * 1024 * 1024  # the kernel's own address space (about 210 MB) and some room
_MIB = 1024 * 1024


def _context_bytes(path: Path) -> int:
    """Bytes the REPL reads to load ``path`` (a folder: its files, no links followed)."""
    if not path.is_dir():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += info.st_size
    return total


def _memory_needed_mb(kernel_bytes: int, settings: SandboxSettings) -> int:
    """The memory_mb that gives the kernel ``kernel_bytes`` of address space."""
    other = settings.memory_mb - settings.address_space_limit_bytes // _MIB  # tmpfs sizes and margin
    return -(-kernel_bytes // _MIB) + other


def check_context_path(path: Path, settings: SandboxSettings, *, hint: str = "check the path") -> None:
    """Refuse a context that is missing, not a file or folder, unreadable, or too large to load."""
    if not path.exists():
        raise ContextError(f"context file not found: {path}", hint=hint)
    if not (path.is_file() or path.is_dir()):
        raise ContextError(f"context is not a regular file or folder: {path}")
    if not os.access(path, os.R_OK):
        raise ContextError(f"context file is not readable: {path}", hint="check its permissions")
    check_context_fits(path, settings)


def check_context_fits(path: Path, settings: SandboxSettings) -> None:
    """Refuse, before anything starts, a context the kernel cannot load as a ``str`` (or list of them).

    Decoding holds the file's bytes and the text at once: about twice the file's size within the
    kernel's address-space limit, besides the kernel itself.  A large pure-ASCII text file is read
    straight into its str (once its size); whether it is pure ASCII is found out in the sandbox,
    which reports a ``ContextError`` with the figures if it is not and does not fit."""
    size = _context_bytes(path)
    once = context_format(path) == ContextFormat.TEXT and size >= ASCII_DIRECT_MIN
    need = (1 if once else 2) * size + KERNEL_HEADROOM_BYTES
    limit = settings.address_space_limit_bytes
    if need <= limit:
        return
    at_least = _memory_needed_mb(need, settings)
    what = "its size" if once else "twice its size"
    raise ContextError(
        f"the context {path.name} ({size / _MIB:.0f} MB) does not fit in the sandbox's memory: loading it "
        f"needs about {need / _MIB:.0f} MB ({what}, plus {KERNEL_HEADROOM_BYTES // _MIB} MB for the "
        f"kernel), and the kernel may use {limit / _MIB:.0f} MB of the sandbox's memory_mb={settings.memory_mb}",
        hint=_raise_memory_hint(at_least))


def _raise_memory_hint(at_least: int) -> str:
    return (f"raise memory_mb to at least {at_least} (RLM_MEMORY_MB={at_least}, or memory_mb: {at_least} "
            "under sandbox: in the config file), or give a smaller context")


def load_failure_hint(path: Path | None, settings: SandboxSettings) -> str:
    """What to change when the sandbox found the context too large to load (a non-ASCII text
    decodes with its bytes and its text at once; parsed JSON takes many times its size)."""
    if path is not None and path.is_file() and context_format(path) == ContextFormat.TEXT:
        return _raise_memory_hint(_memory_needed_mb(2 * path.stat().st_size + KERNEL_HEADROOM_BYTES, settings))
    return ("raise memory_mb (RLM_MEMORY_MB, or memory_mb under sandbox: in the config file): parsed JSON "
            "takes many times its file's size; or give a smaller context")
