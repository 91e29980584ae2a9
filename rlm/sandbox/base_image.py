"""The local Debian base image, for machines with no registry: ``debootstrap`` + ``docker import``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rlm.errors import ImageBuildError

if TYPE_CHECKING:  # pragma: no cover - typing only; engine.py is the one docker importer
    from rlm.sandbox.engine import Engine

Progress = Callable[[str], None]  # one line of progress for the user (image, base, wheels)
DEFAULT_BASE = "python:3.11-slim"
LOCAL_BASE = "rlm-base:bookworm"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("RLM_DEBIAN_MIRROR", "http://deb.debian.org/debian")


_TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
         "usr/share/info", "usr/share/locale")


def make_local_base(engine: "Engine", *, name: str = LOCAL_BASE, suite: str = DEBIAN_SUITE,
                    mirror: str = DEBIAN_MIRROR, progress: Progress = lambda _l: None) -> None:
    """``debootstrap --variant=minbase --include=python3`` + ``docker import`` as ``name``."""
    if os.name != "posix" or os.geteuid() != 0:
        raise ImageBuildError(
            f"the local base image {name} is missing and making it needs root (debootstrap)",
            hint=f"run the set-up as root (./scripts/setup), or pass --base-image with an image "
                 f"that has python3 (e.g. {DEFAULT_BASE})")
    debootstrap = shutil.which("debootstrap") or next(
        (p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if os.path.exists(p)), None)
    if not debootstrap:
        raise ImageBuildError(
            f"the local base image {name} is missing and debootstrap is not installed",
            hint="install it (apt-get install -y debootstrap, or run ./scripts/setup), or pass "
                 f"--base-image with an image that has python3 (e.g. {DEFAULT_BASE})")
    tar = shutil.which("tar")
    if not tar:
        raise ImageBuildError("tar is not installed", hint="apt-get install -y tar")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rlm-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"making the local base image {name}: debootstrap {suite} from {mirror} (about a minute) ...")
        cmd = [debootstrap, "--variant=minbase", "--include=python3", suite, str(rootfs), mirror]
        _stream(cmd, progress, "debootstrap")
        for rel in _TRIM:
            target = rootfs / rel
            if target.is_dir():
                for child in target.iterdir():
                    if child.name in ("partial", "lock", "auxfiles"):
                        continue  # apt's own bookkeeping stays
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
        tarball = Path(tmp) / "rootfs.tar"
        progress("packing the root filesystem ...")
        _stream([tar, "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], progress, "tar")
        progress(f"docker import as {name} ...")
        repository, _, tag = name.rpartition(":")
        engine.import_image(str(tarball), repository or name, tag or "latest")
    progress(f"made {name} in {time.monotonic() - started:.0f} s")


def _stream(cmd: list[str], progress: Progress, what: str) -> None:
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise ImageBuildError(f"{what} could not start: {exc}") from exc
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            tail = (tail + [line])[-8:]
            progress(f"  {what}: {line}")
    if proc.wait() != 0:
        joined = "\n".join(tail)
        raise ImageBuildError(f"{what} failed (exit {proc.returncode})\n{joined}",
                              hint="check the network to the Debian mirror (RLM_DEBIAN_MIRROR), "
                                   "or pass --base-image with an image that has python3")
