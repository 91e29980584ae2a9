"""Where a request's context comes from, checked before anything starts.

A path must lie under the server's context root once every symlink is resolved (a folder's
links included); uploads are stored under the server's data folder with a size cap."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm.serve.errors import APIError

FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
MAX_LISTED_ENTRIES = 100_000  # files of a folder context checked for links leaving the root


def confined(root: Path | None, given: str) -> Path:
    """``given`` (relative to ``root``, or absolute) as a resolved path inside ``root``; 400 if it
    is not, or if it is a folder holding a link to outside."""
    if root is None:
        raise APIError(400, "this server takes no paths: it was started without --context-root", "path_not_allowed",
                       param="rlm.context.path")
    if not isinstance(given, str) or not given or "\x00" in given:
        raise APIError(400, "rlm.context.path must be a non-empty string", "invalid_context", param="rlm.context.path")
    base = root.resolve()
    candidate = Path(given) if os.path.isabs(given) else base / given
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise APIError(400, f"the context path {given!r} does not exist under the context root", "invalid_context",
                       param="rlm.context.path") from None
    if not resolved.is_relative_to(base):
        raise APIError(400, f"the context path {given!r} is outside the context root", "path_outside_root",
                       param="rlm.context.path")
    if resolved.is_dir():
        _check_folder(base, resolved, given)
    return resolved


def _check_folder(base: Path, folder: Path, given: str) -> None:
    seen = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            seen += 1
            if seen > MAX_LISTED_ENTRIES:
                raise APIError(400, f"the folder {given!r} has more than {MAX_LISTED_ENTRIES} entries",
                               "invalid_context", param="rlm.context.path")
            entry = Path(dirpath) / name
            if entry.is_symlink():
                try:
                    target = entry.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise APIError(400, f"the folder {given!r} holds a broken link", "invalid_context",
                                   param="rlm.context.path") from None
                if not target.is_relative_to(base):
                    raise APIError(400, f"the folder {given!r} holds a link to outside the context root",
                                   "path_outside_root", param="rlm.context.path")


@dataclass
class StoredFile:
    id: str
    path: Path
    filename: str
    bytes: int
    created_at: int
    purpose: str

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed"}


class FileStore:
    """Uploaded contexts: ``<root>/<id>/<safe name>`` with a JSON record beside it."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)

    def new(self, filename: str, purpose: str) -> tuple[StoredFile, Path]:
        file_id = "file-" + secrets.token_hex(12)
        folder = self.root / file_id
        folder.mkdir(mode=0o700)
        safe = _safe_name(filename)
        stored = StoredFile(file_id, folder / safe, safe, 0, int(time.time()), purpose)
        return stored, folder / (safe + ".part")

    def commit(self, stored: StoredFile, part: Path, size: int) -> StoredFile:
        stored.bytes = size
        part.rename(stored.path)
        (stored.path.parent / "file.json").write_text(json.dumps(stored.to_openai()), encoding="utf-8")
        return stored

    def discard(self, part: Path) -> None:
        for p in (part, part.parent):
            try:
                p.unlink() if p.is_file() else p.rmdir()
            except OSError:
                pass

    def get(self, file_id: str) -> StoredFile:
        if not isinstance(file_id, str) or not FILE_ID.match(file_id):
            raise APIError(404, f"no file {str(file_id)[:40]!r}", "file_not_found")
        record = self.root / file_id / "file.json"
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise APIError(404, f"no file {file_id!r}", "file_not_found") from None
        return StoredFile(file_id, self.root / file_id / data["filename"], data["filename"], int(data["bytes"]),
                          int(data["created_at"]), str(data.get("purpose", "")))

    def delete(self, file_id: str) -> None:
        stored = self.get(file_id)
        for p in stored.path.parent.iterdir():
            p.unlink()
        stored.path.parent.rmdir()


def _safe_name(filename: str) -> str:
    name = Path(str(filename or "upload.txt")).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:100]
    return name or "upload.txt"
