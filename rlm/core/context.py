"""Checking what the user gives as context before any container starts.

A file (``-f``) is mounted into the sandbox read-only, at its resolved path.  A folder
(``--context-dir``) is mounted as it is, read-only: the sandbox gets no copies, so symbolic links
inside it must resolve inside it.  Links that are absolute or lead outside the folder are refused by
name before any container starts (see ``_check_folder``); the host checks exactly the files the
sandbox will load.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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

    def __enter__(self) -> ContextSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a file or folder"


def _not_regular(path: Path, mode: int, *, in_folder: bool) -> ContextError:
    hint = ("remove it from the folder, or give a folder that holds only text files" if in_folder
            else "give a regular text file (a pipe or device is never read)")
    return ContextError(f"{path} is not a regular file: it is {_kind(mode)}", hint=hint)


def _stat(path: Path, *, in_folder: bool = False) -> os.stat_result:
    """``os.stat`` (symlinks followed) with every failure named: missing, broken or looping
    symlink, unreadable.  Never opens the file."""
    where = "in the context folder" if in_folder else "given with -f"
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ContextError(f"{path} is a broken symbolic link: its target {os.readlink(path)!r} does not exist",
                               hint=f"fix or remove the link {where}") from None
        raise ContextError(f"context file not found: {path}", hint="check the path given with -f") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ContextError(f"{path} is a symbolic link loop (it resolves to itself)",
                               hint=f"fix or remove the link {where}") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ContextError(f"context file is not readable: {path}", hint="check its permissions") from None
        raise ContextError(f"cannot read {path}: {exc.strerror or exc}") from None


@contextmanager
def _open_regular(path: Path, *, in_folder: bool = False) -> Iterator[BinaryIO]:
    """Open ``path`` for reading only if it is a regular file: O_NONBLOCK, so a FIFO put in its
    place after the check cannot block, and fstat'ed after opening."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        raise ContextError(f"context file is not readable: {path}", hint="check its permissions") from None
    except OSError as exc:
        raise ContextError(f"cannot read {path}: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(path, mode, in_folder=in_folder)
    with os.fdopen(fd, "rb") as fh:
        yield fh


def _check_text(path: Path, size: int, *, in_folder: bool = False) -> None:
    """Refuse binary data: NUL bytes or invalid UTF-8 (whole file when small, samples when huge)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with _open_regular(path, in_folder=in_folder) as fh:
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


def _read_text(path: Path) -> str:
    with _open_regular(path) as fh:
        return fh.read().decode("utf-8")


def _check_json(path: Path, size: int) -> None:
    """A .json / .jsonl context must parse (checked in full up to 64 MiB)."""
    import json

    suffix = path.suffix.lower()
    if suffix not in (".json", ".jsonl", ".ndjson") or size > _FULL_CHECK_BYTES:
        return
    text = _read_text(path)
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
        except RecursionError:
            where = "" if suffix == ".json" else f" line {number}"
            raise ContextError(f"{path}{where}: the JSON is nested too deeply to load (arrays or objects more than "
                               f"about {sys.getrecursionlimit()} levels deep)",
                               hint="flatten the JSON, or rename the file to .txt to use it as plain text") from None


_MAX_LINK_HOPS = 40  # as the Linux kernel (ELOOP)


def _link_problem(link: Path, root: Path, why: str) -> ContextError:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    shown = f"{link} (a symbolic link to {target!r})"
    if why == "absolute":
        return ContextError(f"{shown} is absolute: the sandbox sees the folder {root} at another path, "
                            "where the link would not resolve",
                            hint="make the link relative (ln -sr), or put the file itself in the folder")
    if why == "outside":
        return ContextError(f"{shown} leads outside the context folder {root}: the sandbox sees only the folder",
                            hint="copy the file into the folder (cp -L), or give a folder that holds it")
    if why == "loop":
        return ContextError(f"{shown} is a symbolic link loop (it resolves to itself)",
                            hint="fix or remove the link in the context folder")
    return ContextError(f"{link} is a broken symbolic link: its target {target!r} does not exist",
                        hint="fix or remove the link in the context folder")


def _absolute_why(root: Path, target: str) -> str:
    """What is wrong with an absolute link target, as the host sees it."""
    real = Path(os.path.realpath(target))
    if real != root and root not in real.parents:
        return "outside"
    try:
        os.stat(target)
    except OSError as exc:
        return "loop" if exc.errno == errno.ELOOP else "broken"
    return "absolute"


def _resolve_inside(root: Path, parts: list[str], link: Path) -> Path:
    """Resolve ``root/parts`` the way the sandbox's kernel will, where ``root`` is the mount point
    and nothing above it exists: every link on the way must be relative and stay inside ``root``.
    Returns the host path of the final entry (not a link); raises a ``ContextError`` naming ``link``."""
    todo = list(parts)
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                raise _link_problem(link, root, "outside")
            done.pop()
            continue
        candidate = root.joinpath(*done, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            raise _link_problem(link, root, "broken") from None
        except NotADirectoryError:
            raise _link_problem(link, root, "broken") from None
        except OSError as exc:
            raise ContextError(f"cannot read {candidate}: {exc.strerror or exc}") from None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise _link_problem(link, root, "loop")
            target = os.readlink(candidate)
            if os.path.isabs(target):
                raise _link_problem(link, root, _absolute_why(root, target))
            todo = target.split("/") + todo
            continue
        if todo and not stat.S_ISDIR(st.st_mode):
            raise _link_problem(link, root, "broken")
        done.append(part)
    return root.joinpath(*done)


def _check_folder(folder: Path, max_bytes: int) -> int:
    """Total bytes of the documents the sandbox will load from the folder, each checked like -f.

    The sandbox mounts the folder itself, read-only, and loads it with ``os.walk`` (links to folders
    are listed but not entered), so the host checks exactly that: the regular files found by walking
    the folder without entering linked folders, and each symbolic link resolved as the sandbox will
    resolve it.  A link that is absolute, or leads outside the folder (even through other links), is
    refused by name, and so is a broken link or a loop: no link target is ever copied in."""
    total = 0
    root = Path(os.path.realpath(folder))
    _stat(root)
    stack: list[Path] = [root]
    while stack:
        current = stack.pop()
        try:
            names = sorted(os.listdir(current))
        except PermissionError:
            raise ContextError(f"the folder {current} is not readable", hint="check its permissions") from None
        for name in names:
            entry = current / name
            try:
                lst = os.lstat(entry)
            except OSError as exc:
                raise ContextError(f"cannot read {entry}: {exc.strerror or exc}") from None
            if stat.S_ISLNK(lst.st_mode):
                target = _resolve_inside(root, list(entry.relative_to(root).parts), entry)
                st = _stat(target, in_folder=True)
                if stat.S_ISDIR(st.st_mode):
                    continue  # the sandbox lists a linked folder but does not enter it (its files, inside, count once)
            else:
                st = lst
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry)
                continue
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(entry, st.st_mode, in_folder=True)
            total += st.st_size
            if total > max_bytes:
                raise ContextError(f"the folder {folder} holds more than the maximum context size ({max_bytes} bytes)",
                                   hint="raise max_context_bytes (RLM_MAX_CONTEXT_BYTES) or give less")
            _check_text(entry, st.st_size, in_folder=True)
    return total


def folder_paths(folder: str | os.PathLike[str]) -> list[str]:
    """The paths, relative to ``folder`` (``/`` between folders), of the documents the sandbox loads from
    it, in the sandbox's order: ``os.walk`` with folders and files sorted, linked folders not entered
    (the guest's ``helpers.load_folder``)."""
    paths: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        paths.extend(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/") for name in sorted(files))
    return paths


def check_file(path: str | os.PathLike[str], *, max_bytes: int, allow_dir: bool = False) -> ContextSource:
    """Check a context file (``-f``) or folder (``allow_dir``, ``--context-dir``) without ever opening
    anything but regular files; every problem is a ``ContextError`` naming the file."""
    p = Path(path).expanduser()
    st = _stat(p)
    if stat.S_ISDIR(st.st_mode):
        if not allow_dir:
            raise ContextError(f"{p} is a folder, not a file", hint="give a file with -f, or a folder with --context-dir")
        total = _check_folder(p, max_bytes)
        if total == 0:
            raise ContextError(f"the folder {p} holds no text", hint="give a folder with documents in it")
        return ContextSource(p.resolve(), total)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(p, st.st_mode, in_folder=False)
    if not os.access(p, os.R_OK):
        raise ContextError(f"context file is not readable: {p}", hint="check its permissions")
    size = st.st_size
    if size == 0:
        raise ContextError(f"context file is empty: {p}", hint="give a file with some text in it")
    if size > max_bytes:
        raise ContextError(f"context file is {size} bytes, over the maximum of {max_bytes}",
                           hint="raise max_context_bytes (RLM_MAX_CONTEXT_BYTES) or give a smaller file")
    _check_text(p, size)
    if size <= _SAMPLE and not _read_text(p).strip():
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
    return _written(data, "context.txt")


def inline_json(value: object, *, max_bytes: int) -> ContextSource:
    """A JSON-able value (a list of documents, a dict, ...) given in Python: written as ``context.json``,
    so the sandbox's ``context`` is the parsed value."""
    try:
        data = json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ContextError(f"the context is not JSON-able: {exc}",
                           hint="give a str, a list of str, a dict/list of JSON values, or a Path") from exc
    except RecursionError:
        raise ContextError("the context is nested too deeply to write as JSON (lists or dicts more than about "
                           f"{sys.getrecursionlimit()} levels deep)",
                           hint="flatten it, or give a str or a Path") from None
    if len(data) > max_bytes:
        raise ContextError(f"the context is {len(data)} bytes as JSON, over the maximum of {max_bytes}",
                           hint="raise max_context_bytes or give a smaller context")
    return _written(data, "context.json")


def _written(data: bytes, name: str) -> ContextSource:
    """``data`` in a private temporary folder the sandbox may read (removed by ``cleanup``)."""
    folder = Path(tempfile.mkdtemp(prefix="rlm-ctx-"))
    os.chmod(folder, 0o755)
    path = folder / name
    path.write_bytes(data)
    os.chmod(path, 0o644)
    return ContextSource(path, len(data), temporary=True)
