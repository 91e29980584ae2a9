"""Building the sandbox image, and telling whether the one present is current.

The image is built from ``Dockerfile.sandbox`` with no network inside Docker:

1. pick a base image: the one asked for, else ``python:3.11-slim`` when it is present or
   can be pulled, else a local Debian base (``rlm-base:bookworm``) made here with
   ``debootstrap`` + ``docker import`` when it is missing;
2. probe the base image's Python ``X.Y`` and download the pinned kernel wheels
   (``sandbox_image/requirements.txt``) on the host for that version, plus a ``pip``
   wheel used only to install them (cached under ``~/.cache/rlm/wheels/pyX.Y/``);
3. assemble a minimal build context in a temporary directory (never the repository
   root) and build it, tagging ``rlm-sandbox:latest`` and ``rlm-sandbox:<hash12>`` with
   the label ``rlm.image.hash=<hash>``.

The hash covers the Dockerfile, every file under ``sandbox_image/``, the bridge protocol
and the base image's name, so an image built from other sources is seen as stale.
Re-running with nothing changed does nothing.

The sources are read from a *source root* in one of two layouts, which hash the same:

* a checkout: ``Dockerfile.sandbox``, ``sandbox_image/`` and ``rlm/sandbox/protocol.py``;
* the installed package ``rlm.sandbox`` (read with ``importlib.resources``): its
  ``Dockerfile.sandbox``, ``guest/`` and ``protocol.py``.  In the checkout these two are
  symlinks to the top-level sources; a wheel carries copies.  This is the default, so an
  installed wheel builds the same image from any folder.

Docker is reached only through :class:`rlm.sandbox.engine.Engine`.
Run ``python -m rlm.sandbox.image [--base-image IMG] [--force]`` to build from a shell.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rlm.errors import ImageBuildError, SandboxError
from rlm.sandbox.base_image import DEFAULT_BASE, LOCAL_BASE, Progress, make_local_base
from rlm.sandbox.wheels import download_wheels

if TYPE_CHECKING:  # pragma: no cover - typing only; engine.py is the one docker importer
    from rlm.sandbox.engine import Engine

DEFAULT_IMAGE = "rlm-sandbox:latest"

HASH_LABEL = "rlm.image.hash"
BASE_LABEL = "rlm.image.base"

DOCKERFILE = "Dockerfile.sandbox"
IMAGE_DIR = "sandbox_image"
PROTOCOL = Path("rlm") / "sandbox" / "protocol.py"
PACKAGE = "rlm.sandbox"   # the installed layout: Dockerfile.sandbox, guest/ (= sandbox_image/), protocol.py
PACKAGE_GUEST = "guest"

_IGNORED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
_IGNORED_SUFFIXES = (".pyc", ".pyo")


# -- the sources and their hash --------------------------------------------------------------

@dataclass(frozen=True)
class _Layout:
    """Where a source root keeps the three inputs of the image."""

    root: Path
    dockerfile: Path
    protocol: Path
    guest: Path  # the folder copied as sandbox_image/


def _layout(root: Path) -> _Layout:
    root = Path(root)
    if (root / PACKAGE_GUEST).is_dir() and not (root / IMAGE_DIR).is_dir():
        return _Layout(root, root / DOCKERFILE, root / "protocol.py", root / PACKAGE_GUEST)
    return _Layout(root, root / DOCKERFILE, root / PROTOCOL, root / IMAGE_DIR)


def _image_files(repo_root: Path) -> list[tuple[str, Path]]:
    """Every guest file as (name under ``sandbox_image/``, path), sorted, without caches."""
    folder = _layout(repo_root).guest
    files: list[tuple[str, Path]] = []
    if folder.is_dir():
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d not in _IGNORED_DIRS)
            for name in filenames:
                if not name.endswith(_IGNORED_SUFFIXES):
                    path = Path(dirpath) / name
                    files.append((path.relative_to(folder).as_posix(), path))
    return sorted(files)


def image_hash(repo_root: Path, base_image: str) -> str:
    """sha256 over the Dockerfile, ``sandbox_image/``, the protocol and the base name (either layout)."""
    layout = _layout(Path(repo_root))
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(label.encode() + b"\0" + str(len(data)).encode() + b"\0" + data + b"\0")

    for rel, path in ((Path(DOCKERFILE), layout.dockerfile), (PROTOCOL, layout.protocol)):
        if not path.is_file():
            raise ImageBuildError(f"{path} is missing: is {layout.root} the rlm repository or package?")
        add("file:" + rel.as_posix(), path.read_bytes())
    for name, path in _image_files(layout.root):
        add(f"file:{IMAGE_DIR}/{name}", path.read_bytes())
    add("base", base_image.encode())
    return digest.hexdigest()


def hash_tag(image: str, digest: str) -> str:
    """``rlm-sandbox:latest`` + hash -> ``rlm-sandbox:<hash12>``."""
    return f"{_repository(image)}:{digest[:12]}"


def _repository(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return image.rsplit(":", 1)[0] if ":" in last else image


def package_root() -> Path:
    """The installed ``rlm.sandbox`` package folder, read with importlib.resources."""
    root = importlib.resources.files(PACKAGE)
    if not isinstance(root, Path):
        raise ImageBuildError(f"the {PACKAGE} package is not installed as files ({root})",
                              hint="install rlm from a wheel or the repository (pip install .)")
    return root


def repo_root_default() -> Path:
    """The source root to build from: the installed package (a wheel, or an editable install
    whose symlinks lead to the checkout's sources)."""
    root = package_root()
    layout = _layout(root)
    missing = [p for p in (layout.dockerfile, layout.protocol, layout.guest / "requirements.txt")
               if not p.is_file()]
    if missing:
        raise ImageBuildError(f"the installed rlm package lacks the sandbox sources: {missing[0]} is missing",
                              hint="reinstall rlm (pip install .); in a checkout, restore the symlinks "
                                   "rlm/sandbox/guest and rlm/sandbox/Dockerfile.sandbox (git checkout)")
    return root


# -- status --------------------------------------------------------------------------------

@dataclass
class ImageStatus:
    name: str
    present: bool
    current: bool
    hash_expected: str
    hash_found: str | None
    base_image: str | None = None


def image_status(engine: "Engine", repo_root: Path, image: str = DEFAULT_IMAGE,
                 base_image: str | None = None) -> ImageStatus:
    """Is ``image`` present, and was it built from these sources?

    With ``base_image=None`` the base is the one the present image was built from
    (its ``rlm.image.base`` label), so an image built on the local Debian base is
    current; when no image is present, the default base that a build would use now.
    """
    labels = engine.image_labels(image)
    found = (labels or {}).get(HASH_LABEL)
    base = base_image or (labels or {}).get(BASE_LABEL) or _default_base_offline(engine)
    expected = image_hash(Path(repo_root), base)
    return ImageStatus(name=image, present=labels is not None, current=found == expected,
                       hash_expected=expected, hash_found=found, base_image=base)


def _default_base_offline(engine: "Engine") -> str:
    """The default base without pulling: python:3.11-slim if present, else the local one."""
    if engine.image_exists(DEFAULT_BASE):
        return DEFAULT_BASE
    return LOCAL_BASE


# -- build ---------------------------------------------------------------------------------

@dataclass
class BuildResult:
    built: bool
    image: str
    hash_tag: str
    base_image: str
    seconds: float


def build_image(engine: "Engine", repo_root: Path, *, image: str = DEFAULT_IMAGE,
                base_image: str | None = None, force: bool = False,
                progress: Progress = lambda _line: None) -> BuildResult:
    """Build ``image`` unless it is current; see the module docstring for the steps."""
    started = time.monotonic()
    repo_root = Path(repo_root).resolve()

    if not force:
        status = image_status(engine, repo_root, image, base_image)
        if status.current and status.base_image:
            progress(f"{image} is current (hash {status.hash_expected[:12]}, base {status.base_image})")
            return BuildResult(False, image, hash_tag(image, status.hash_expected), status.base_image,
                               time.monotonic() - started)

    base = base_image or _choose_default_base(engine, progress)
    digest = image_hash(repo_root, base)
    tag = hash_tag(image, digest)

    if not force and (engine.image_labels(tag) or {}).get(HASH_LABEL) == digest:
        # Built before from exactly these sources (e.g. after switching branches back).
        engine.tag_image(tag, image)
        progress(f"{tag} already built from these sources; tagged it {image}")
        return BuildResult(False, image, tag, base, time.monotonic() - started)

    if not engine.image_exists(base):
        if base == LOCAL_BASE:
            make_local_base(engine, progress=progress)
        else:
            progress(f"pulling base image {base} ...")
            if not engine.pull_image(base):
                raise ImageBuildError(
                    f"base image {base} is not present and cannot be pulled",
                    hint=f"pull or load it first, or pass --base-image {LOCAL_BASE} "
                         f"(made locally with debootstrap)")

    pyver = engine.image_python_version(base)
    if not pyver:
        raise ImageBuildError(f"base image {base} has no working python3",
                              hint="use a base image that has python3 (e.g. python:3.11-slim)")
    progress(f"base image {base} has Python {pyver}")

    wheels = download_wheels(_layout(repo_root).guest / "requirements.txt", pyver, progress=progress)

    with tempfile.TemporaryDirectory(prefix="rlm-build-") as tmp:
        context = Path(tmp)
        _assemble_context(repo_root, wheels, context)
        progress(f"building {image} (hash {digest[:12]}) with no network ...")
        engine.build_image(
            str(context), DOCKERFILE, tag=image, buildargs={"BASE_IMAGE": base},
            labels={HASH_LABEL: digest, BASE_LABEL: base},
            on_line=lambda line: _build_line(line, progress))
    engine.tag_image(image, tag)
    seconds = time.monotonic() - started
    progress(f"built {image} and {tag} in {seconds:.1f} s")
    return BuildResult(True, image, tag, base, seconds)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NOISE = ("Removing intermediate container", "---> Running in", "---> Using cache")


def _build_line(line: str, progress: Progress) -> None:
    """Forward one line of build output: no colour codes, no per-step bookkeeping."""
    for part in _ANSI.sub("", line).splitlines():
        part = part.rstrip()
        if part.strip() and not part.strip().startswith(_NOISE):
            progress("  " + part)


def _choose_default_base(engine: "Engine", progress: Progress) -> str:
    if engine.image_exists(DEFAULT_BASE):
        return DEFAULT_BASE
    progress(f"trying to pull {DEFAULT_BASE} ...")
    if engine.pull_image(DEFAULT_BASE):
        return DEFAULT_BASE
    progress(f"{DEFAULT_BASE} cannot be pulled (no registry); using the local Debian base {LOCAL_BASE}")
    return LOCAL_BASE


def _assemble_context(repo_root: Path, wheels: Path, context: Path) -> None:
    """Dockerfile, sandbox_image/ (no caches), protocol.py and the wheels: nothing else."""
    layout = _layout(repo_root)
    shutil.copyfile(layout.dockerfile, context / DOCKERFILE)
    image_dir = context / IMAGE_DIR
    image_dir.mkdir()
    for name, path in _image_files(repo_root):
        target = image_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    shutil.copyfile(layout.protocol, context / "protocol.py")
    wheel_dir = context / "wheels"
    wheel_dir.mkdir()
    for whl in sorted(wheels.glob("*.whl")):
        try:
            os.link(whl, wheel_dir / whl.name)
        except OSError:
            shutil.copy2(whl, wheel_dir / whl.name)


# -- command line --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rlm.sandbox.image",
                                     description="Build the rlm sandbox image (no-op when current).")
    parser.add_argument("--base-image", default=None, help=f"base image (default: {DEFAULT_BASE} "
                        f"if present or pullable, else the local Debian base {LOCAL_BASE})")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="image name (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even when current")
    parser.add_argument("--status", action="store_true",
                        help="only report whether the image is present and current (exit 1 if not)")
    args = parser.parse_args(argv)

    from rlm.sandbox.engine import Engine

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        engine = Engine()
        try:
            if args.status:
                st = image_status(engine, repo_root_default(), args.image, args.base_image)
                state = "current" if st.current else ("stale" if st.present else "missing")
                say(f"{st.name}: {state} (expected {st.hash_expected[:12]}, found "
                    f"{(st.hash_found or '-')[:12]}, base {st.base_image})")
                return 0 if st.current else 1
            build_image(engine, repo_root_default(), image=args.image, base_image=args.base_image,
                        force=args.force, progress=say)
        finally:
            engine.close()
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
