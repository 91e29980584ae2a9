"""The kernel wheels the sandbox image installs, downloaded on the host (the build has no network):
for the base image's Python and the host's architecture, from ``sandbox_image/requirements.txt``,
cached once under ``~/.cache/rlm/wheels/pyX.Y/``."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable

from rlm.errors import ImageBuildError
from rlm.sandbox.base_image import LOCAL_BASE, Progress

REQUIREMENTS = Path("sandbox_image") / "requirements.txt"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rlm"


def _platforms(machine: str | None = None) -> list[str]:
    arch = (machine or platform.machine()).lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    return [f"manylinux2014_{arch}", f"manylinux_2_17_{arch}", f"manylinux_2_28_{arch}"]


def pip_download_command(requirements: Path, pyver: str, dest: Path, packages: Iterable[str] = (),
                         machine: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
           "--only-binary=:all:", "--python-version", pyver, "--implementation", "cp"]
    for plat in _platforms(machine):
        cmd += ["--platform", plat]
    cmd += ["-d", str(dest)]
    if packages:
        cmd += ["--no-deps", *packages]
    else:
        cmd += ["-r", str(requirements)]
    return cmd


def download_wheels(requirements: Path, pyver: str, *, progress: Progress = lambda _l: None) -> Path:
    """The kernel wheels (and a pip wheel) for Python ``pyver``, downloaded once and cached."""
    if not requirements.is_file():
        raise ImageBuildError(f"{requirements} is missing", hint="restore it from the repository")
    key = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    arch = platform.machine().lower()
    parent = cache_root() / "wheels" / f"py{pyver}"
    final = parent / f"{arch}-{key}"
    if (final / ".complete").is_file():
        progress(f"kernel wheels for Python {pyver}: cached in {final}")
        return final
    parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{arch}-{key}-", dir=parent))
    try:
        progress(f"downloading kernel wheels for Python {pyver} into {final} ...")
        _run_pip(pip_download_command(requirements, pyver, partial), pyver, requirements, progress)
        _run_pip(pip_download_command(requirements, pyver, partial, packages=["pip"]), pyver,
                 requirements, progress)
        count = len(list(partial.glob("*.whl")))
        (partial / ".complete").write_text(f"{count} wheels for Python {pyver}\n")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    progress(f"downloaded {count} wheels")
    return final


def _run_pip(cmd: list[str], pyver: str, requirements: Path, progress: Progress) -> None:
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              stdin=subprocess.DEVNULL, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageBuildError(f"pip download did not run: {exc}",
                              hint="check that the venv has pip: .venv/bin/python -m pip --version") from exc
    if proc.returncode == 0:
        return
    out = proc.stdout or ""
    tail = "\n".join(out.strip().splitlines()[-6:])
    lowered = out.lower()
    network = ("connection" in lowered and ("error" in lowered or "refused" in lowered)) or \
        "network is unreachable" in lowered or "name or service not known" in lowered or \
        "temporary failure in name resolution" in lowered or "max retries exceeded" in lowered
    if network:
        raise ImageBuildError(
            f"could not download the kernel wheels: no package index answers\n{tail}",
            hint="check the pip index (pip config list; PIP_INDEX_URL) or copy the wheels into "
                 f"{cache_root() / 'wheels' / ('py' + pyver)}")
    if "from versions: none" in lowered and "require a different python version" not in lowered:
        raise ImageBuildError(
            f"could not download the kernel wheels: the package index offers none of a pinned "
            f"package (is an index reachable?)\n{tail}",
            hint="check the pip index (pip config list; PIP_INDEX_URL); if it is reachable, the pins in "
                 f"{REQUIREMENTS} have no wheels for Python {pyver} on {platform.machine()}")
    if "no matching distribution" in lowered or "could not find a version" in lowered:
        raise ImageBuildError(
            f"the pinned kernel packages in {requirements} have no wheels for Python {pyver} "
            f"on {platform.machine()}\n{tail}",
            hint="use a base image with Python 3.11 (e.g. --base-image python:3.11-slim or "
                 f"{LOCAL_BASE}), or re-pin {REQUIREMENTS} for Python {pyver}")
    raise ImageBuildError(f"pip download failed (exit {proc.returncode})\n{tail}",
                          hint="run the command by hand to see the whole output: " + " ".join(cmd))
