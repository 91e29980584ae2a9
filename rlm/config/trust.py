"""Which settings files found in a working folder the user has trusted (as direnv and mise do).

A ``.env`` or ``configs/default.yaml`` that rlm finds in the current folder is read only when its
absolute path and sha256 are in the user's trust list; a changed file needs trusting again
(``rlm config trust FILE``).  The list lives in ``$RLM_CONFIG_HOME/trusted.json`` (default:
``$XDG_CONFIG_HOME/rlm`` or ``~/.config/rlm``), written atomically with mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rlm.errors import ConfigError

CONFIG_HOME_VAR = "RLM_CONFIG_HOME"
TRUST_FILE = "trusted.json"
_VERSION = 1

__all__ = ["CONFIG_HOME_VAR", "TrustStore", "config_home", "digest", "trust_command"]


def config_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$RLM_CONFIG_HOME``, else ``$XDG_CONFIG_HOME/rlm``, else ``~/.config/rlm``."""
    environ = os.environ if environ is None else environ
    if environ.get(CONFIG_HOME_VAR):
        return Path(environ[CONFIG_HOME_VAR]).expanduser()
    if environ.get("XDG_CONFIG_HOME"):
        return Path(environ["XDG_CONFIG_HOME"]).expanduser() / "rlm"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".config" / "rlm"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def trust_command(path: Path) -> str:
    return f"rlm config trust {path}"


def key_of(path: Path) -> str:
    """The absolute path (symlinks resolved) a file is trusted under."""
    return str(path.expanduser().resolve())


@dataclass
class TrustStore:
    """The trust list: absolute path -> sha256 (and when it was trusted)."""

    folder: Path

    @classmethod
    def for_environ(cls, environ: Mapping[str, str] | None = None) -> "TrustStore":
        return cls(config_home(environ))

    @property
    def path(self) -> Path:
        return self.folder / TRUST_FILE

    def entries(self) -> dict[str, dict[str, str]]:
        """Every trusted file; a missing list is empty, an unreadable one is a ``ConfigError``."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(problems=[f"cannot read the trust list {self.path}: {exc.strerror or exc}"]) from exc
        try:
            data = json.loads(raw.decode("utf-8"))
            files = data["files"]
            if not isinstance(files, dict) or not all(
                    isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values()):
                raise ValueError("bad entries")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ConfigError(problems=[f"the trust list {self.path} is damaged ({exc.__class__.__name__})"],
                              hint=f"delete it and trust your files again ({trust_command(Path('FILE'))})") from None
        return files

    def status(self, path: Path, data: bytes) -> str:
        """``"trusted"``, ``"changed"`` (trusted with other contents) or ``"untrusted"``."""
        entry = self.entries().get(key_of(path))
        if entry is None:
            return "untrusted"
        return "trusted" if entry.get("sha256") == digest(data) else "changed"

    def trust(self, path: Path, data: bytes) -> str:
        """Record ``path`` with the sha256 of ``data``; returns the key."""
        files = self.entries()
        key = key_of(path)
        files[key] = {"sha256": digest(data), "trusted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._write(files)
        return key

    def untrust(self, path: Path) -> bool:
        """Forget ``path`` (as given, or as it resolves); whether it was there."""
        files = self.entries()
        found = False
        for key in {str(Path(path).expanduser().absolute()), key_of(path)}:
            found = files.pop(key, None) is not None or found
        if found:
            self._write(files)
        return found

    def _write(self, files: dict[str, dict[str, str]]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_name(f".{TRUST_FILE}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"version": _VERSION, "files": files}, handle, indent=2, sort_keys=True)
                handle.write("\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise ConfigError(problems=[f"cannot write the trust list {self.path}: {exc.strerror or exc}"],
                              hint=f"check the folder, or set {CONFIG_HOME_VAR} to another one") from exc
