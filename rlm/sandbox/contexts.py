"""More contexts for an open session: ``context_1``, ``context_2``, ... beside ``context``.

A session started to take its context later (``attachable``) mounts its host context folder
read-only.  A later context is placed in that folder (hard-linked, copied when on another
filesystem) under a folder of its own, listed in a manifest the host writes in the read-only bridge
folder, and loaded in the kernel as the next ``context_N``: no new mount, nothing in the kernel
lost.  A restarted kernel (or a recreated container) reads the manifest and loads every context
again, lazily, under the same names.  The first context of a session stays ``context``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rlm.errors import ContextError, SandboxError, SessionClosed
from rlm.sandbox.context_fit import check_context_path, context_format
from rlm.sandbox.execution import Execution
from rlm.sandbox.protocol import CONTAINER_CONTEXT, CONTEXTS_MANIFEST_NAME
from rlm.sandbox.rundir import RunDirs
from rlm.sandbox.settings import SandboxSettings

__all__ = ["FIRST", "OtherContext", "add_context", "described", "listed", "manifest"]

FIRST = "context"
PREFIX = "context_"
NAME = re.compile(r"context_[1-9][0-9]{0,5}")
SOURCE_CHARS = 200
ERROR_CHARS = 1000


class Session(Protocol):
    """What this module needs of a ``SandboxSession`` (which calls it: no import of it here)."""

    attachable: bool
    opened: bool
    closed: bool
    context_path: Path | None
    settings: SandboxSettings

    def attach_context(self, context: str | os.PathLike[str]) -> None: ...

    def execute(self, code: str, timeout: float | None = None) -> Execution: ...


@dataclass(frozen=True)
class OtherContext:
    """A later context as the model is told it: its variable, what it holds, where it came from."""

    name: str
    kind: str
    total_chars: int
    n_documents: int
    source: str


def manifest(dirs: RunDirs) -> list[dict[str, str]]:
    """The session's later contexts, in order (the host's own file: never written by the sandbox)."""
    return _read(dirs.bridge / CONTEXTS_MANIFEST_NAME)


def listed(run_dir: str | os.PathLike[str] | None) -> list[dict[str, str]]:
    """``manifest`` of the session whose run folder is ``run_dir`` (``SandboxSession.run_dir``)."""
    return [] if run_dir is None else _read(Path(run_dir) / "bridge" / CONTEXTS_MANIFEST_NAME)


def _read(path: Path) -> list[dict[str, str]]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    return [e for e in entries if isinstance(e, dict)]


def _write_manifest(dirs: RunDirs, entries: list[dict[str, str]]) -> None:
    path = dirs.bridge / CONTEXTS_MANIFEST_NAME
    tmp = dirs.bridge / f".{CONTEXTS_MANIFEST_NAME}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(entries, fh)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _checked(session: Session, context: str | os.PathLike[str]) -> Path:
    path = Path(context).resolve()
    check_context_path(path, session.settings)
    return path


def _clean(text: str, limit: int) -> str:
    """Text from the sandbox, made one bounded line without control characters."""
    text = text[: limit * 2]
    out = "".join(ch if ch.isprintable() else " " for ch in text)
    return out[:limit] + ("..." if len(out) > limit else "")


def add_context(session: Session, dirs: RunDirs, context: str | os.PathLike[str],
                source: str | None = None) -> str:
    """Load ``context`` (a file or folder) in ``session``'s kernel; the variable that holds it.

    The first context of a session without one becomes ``context``; later ones ``context_1``,
    ``context_2``, ...  ``source`` is what the model is told it came from (default: the file's name)."""
    if not session.attachable:
        raise SandboxError("this session mounts one fixed context; another cannot be added to it",
                           hint="start the session with attachable=True to add contexts later")
    if not session.opened or session.closed:
        raise SessionClosed("adding a context needs an open session")
    if session.context_path is None:
        session.attach_context(context)
        return FIRST
    path = _checked(session, context)
    entries = manifest(dirs)
    name = f"{PREFIX}{len(entries) + 1}"
    folder = dirs.context / f".{name}-{secrets.token_hex(4)}"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    try:
        placed = _place(folder, path)
        entry = {"name": name, "path": f"{CONTAINER_CONTEXT}/{placed.relative_to(dirs.context)}",
                 "format": context_format(path), "source": source or path.name or str(path)}
        _write_manifest(dirs, [*entries, entry])
        try:
            ex = session.execute(f"_rlm_add_context({name!r})")
        except BaseException:
            _write_manifest(dirs, entries)
            raise
        if ex.error or ex.state_lost:
            _write_manifest(dirs, entries)
            lines = [line for line in (ex.error or ex.notice or "").splitlines() if line.strip()]
            why = _clean(lines[-1] if lines else "the kernel was restarted", ERROR_CHARS)
            raise ContextError(f"the sandbox could not load {path.name or path} as {name}: {why}",
                               hint="check the file; the session and its variables are kept")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return name


def _place(folder: Path, source: Path) -> Path:
    """``source`` in ``folder`` under its own name: files hard-linked (copied across filesystems),
    folders rebuilt from hard links."""
    target = folder / (source.name or "context")
    if source.is_dir():
        shutil.copytree(source, target, copy_function=_link_or_copy, symlinks=False)
    else:
        _link_or_copy(str(source), str(target))
    return target


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=True)
    except OSError:
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)


def described(raw: Any, session: Any) -> tuple[OtherContext, ...]:
    """The later contexts as ``session``'s kernel reported them (``raw``, hostile: checked, bounded),
    with the sources the host recorded in the session's manifest."""
    if not isinstance(raw, list) or not raw:
        return ()
    sources = {str(e.get("name")): str(e.get("source", "")) for e in listed(getattr(session, "run_dir", None))}
    out: list[OtherContext] = []
    for item in raw[:1000]:
        if not isinstance(item, dict):
            continue
        name = item.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name) or name not in sources:
            continue
        total, docs = item.get("total_chars"), item.get("n_documents")
        out.append(OtherContext(
            name=name, kind=_clean(str(item.get("kind", "?")), 40),
            total_chars=total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else 0,
            n_documents=docs if isinstance(docs, int) and not isinstance(docs, bool) and docs >= 0 else 0,
            source=_clean(sources[name], SOURCE_CHARS)))
    return tuple(out)
