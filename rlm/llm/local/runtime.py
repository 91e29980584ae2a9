"""The embedded model's runtime: llama.cpp's own ``llama-server``, built from pinned source.

The source is the ``vendor/llama.cpp`` tree of the ``llama-cpp-python`` source distribution on
PyPI (pinned by version and sha256).  The build is portable: ``GGML_NATIVE=OFF`` with
``GGML_BACKEND_DL`` and ``GGML_CPU_ALL_VARIANTS``, so the CPU code is one loadable library per
instruction-set level and ggml picks the best one the running CPU supports when the server
starts.  Nothing is tuned to the machine that built it, so the build may be cached and copied
anywhere of the same architecture and C library.

Only the levels that matter are built (``CPU_VARIANTS``; ggml's list has 14 on x86-64, each a
full compile of its CPU code): on x86-64 the baseline (``x64``, ``sse42``), AVX2 (``haswell``),
AVX-512 (``skylakex``), AVX-512 VNNI (``cascadelake``: any AVX-512 CPU with VNNI, Ice Lake and
Zen 4 included; the VBMI and BF16 levels add nothing to quantized models) and AVX-VNNI
(``alderlake``); on arm64 the baseline (``armv8.0_1``), dot product and fp16 (``armv8.2_2``) and
SVE with int8 matrix multiply (``armv8.6_1``).  ggml's CMakeLists is edited before configuring,
so the others are not even configured (``ggml`` depends on every variant it declares).  Other
architectures build ggml's whole list.

Never built, on purpose (``EXCLUDED_VARIANTS``): the matrix-tile levels, ``sapphirerapids`` (AMX)
and ``armv9.2_*`` (SME).  Virtual CPUs have been seen announcing ``amx_tile`` and then faulting
on the first ``ldtilecfg``, and ggml's run-time check trusts the announcement; without it a
Sapphire Rapids CPU runs the AVX-512 VNNI variant.

Layout: ``<cache>/llama.cpp/<tag>/`` holds ``llama-server``, its shared libraries and
``build.json`` (source, flags, variants, build time).  ``<tag>`` names the version, the
machine architecture and a hash of the flags and the variants: never a CPU model.  An earlier
portable build of the same source (another tag: all of ggml's variants) is still used when it
is the only one (``installed_runtime``), so an existing install keeps working; a build of the
current recipe is preferred as soon as it exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm.errors import LLMError
from rlm.llm.local.weights import cache_dir

__all__ = [
    "BUILD_FLAGS",
    "CPU_VARIANTS",
    "EXCLUDED_VARIANTS",
    "RuntimeBuildError",
    "RuntimeInfo",
    "build_runtime",
    "cpu_variants",
    "installed_runtime",
    "runtime_dir",
    "select_variants",
    "wanted_variants",
]

SOURCE_REQUIREMENT = "llama-cpp-python==0.3.36"
SOURCE_FILE = "llama_cpp_python-0.3.36.tar.gz"
SOURCE_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SOURCE_SUBDIR = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
SERVER_BINARY = "llama-server"
BUILD_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_NATIVE=OFF",             # never -march=native: the build must run on other CPUs
    "-DGGML_BACKEND_DL=ON",          # CPU code as loadable libraries ...
    "-DGGML_CPU_ALL_VARIANTS=ON",    # ... one per instruction-set level, chosen at run time
    "-DGGML_OPENMP=OFF",             # ggml's own thread pool: no libgomp needed at run time
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",   # it would download a web UI: none is needed
    "-DLLAMA_OPENSSL=OFF",
    "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
    "-DCMAKE_INSTALL_RPATH=$ORIGIN",  # the server finds its libraries beside itself, wherever copied
)
# The CPU variants built, by machine (ggml's names); ggml loads the best one the CPU supports.
CPU_VARIANTS: dict[str, tuple[str, ...]] = {
    "x86_64": ("x64", "sse42", "haswell", "skylakex", "cascadelake", "alderlake"),
    "aarch64": ("armv8.0_1", "armv8.2_2", "armv8.6_1"),
}
EXCLUDED_VARIANTS: tuple[str, ...] = ("sapphirerapids", "armv9.2_1", "armv9.2_2")
VARIANTS_FILE = "ggml/src/CMakeLists.txt"      # where ggml declares its variants, one call a line
_VARIANT_CALL = re.compile(r"^(?P<indent>\s*)ggml_add_cpu_backend_variant\((?P<name>[A-Za-z0-9_.]+)\b")
CPU_LIB = re.compile(r"^libggml-cpu-(?P<variant>[A-Za-z0-9_.]+)\.so$")
BUILD_INFO = "build.json"


class RuntimeBuildError(LLMError):
    """The embedded model's runtime (llama-server) could not be fetched or built."""


@dataclass(frozen=True)
class RuntimeInfo:
    path: Path                      # the folder holding llama-server and its libraries
    version: str
    machine: str
    variants: tuple[str, ...]       # CPU backend variants present
    build_seconds: float | None
    already: bool = False           # found installed, nothing built
    current: bool = True            # built with today's recipe (False: an earlier portable build, still valid)

    @property
    def server(self) -> Path:
        return self.path / SERVER_BINARY

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "version": self.version, "machine": self.machine,
                "variants": list(self.variants), "build_seconds": self.build_seconds, "current": self.current}


def _machine() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def wanted_variants(machine: str | None = None) -> tuple[str, ...] | None:
    """The CPU variants built for ``machine`` (this one by default); None: all of ggml's list
    (other architectures, and systems other than Linux, whose lists differ: macOS, Android)."""
    if not sys.platform.startswith("linux"):
        return None
    return CPU_VARIANTS.get(machine or _machine())


def _tag(machine: str | None = None) -> str:
    machine = machine or _machine()
    wanted = wanted_variants(machine)
    recipe = (SOURCE_SHA256, *BUILD_FLAGS, "excluded:", *EXCLUDED_VARIANTS)
    if wanted is not None:
        recipe += ("variants:", *wanted)
    digest = hashlib.sha256("\n".join(recipe).encode()).hexdigest()
    version = SOURCE_REQUIREMENT.split("==")[1]
    return f"{version}-{machine}-{digest[:10]}"


def runtime_dir(cache: Path | None = None) -> Path:
    """Where a build of today's recipe for this machine goes."""
    return (cache or cache_dir()) / "llama.cpp" / _tag()


def select_variants(source: Path, wanted: Sequence[str]) -> tuple[str, ...]:
    """Comment out, in ggml's CMakeLists under ``source``, every CPU variant not in ``wanted``.

    Returns the variants left out.  Each wanted variant must be declared exactly once: a source
    that declares them otherwise is not the pinned one, and building it would be a guess.
    """
    path = source / VARIANTS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except OSError as exc:
        raise RuntimeBuildError(f"cannot read {VARIANTS_FILE} in the llama.cpp source: {exc}") from exc
    found: dict[str, int] = {}
    dropped: list[str] = []
    for i, line in enumerate(lines):
        match = _VARIANT_CALL.match(line)
        if match is None:
            continue
        name = match.group("name")
        if name in wanted:
            found[name] = found.get(name, 0) + 1
        else:
            lines[i] = f"{match.group('indent')}# (not built by rlm) {line.lstrip()}"
            dropped.append(name)
    wrong = [name for name in wanted if found.get(name) != 1]
    if wrong:
        raise RuntimeBuildError(f"the llama.cpp source does not declare the CPU variant(s) {', '.join(wrong)} "
                                f"exactly once in {VARIANTS_FILE}",
                                hint="the pinned source and rlm's variant list disagree; this is a bug in rlm")
    path.write_text("".join(lines), encoding="utf-8")
    return tuple(dropped)


def cpu_variants(folder: Path) -> tuple[str, ...]:
    """The CPU backend variants in ``folder`` (from the libraries' names), sorted."""
    found = (CPU_LIB.match(p.name) for p in folder.glob("libggml-cpu-*.so"))
    return tuple(sorted(m.group("variant") for m in found if m))


def _read_build(folder: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((folder / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not os.access(folder / SERVER_BINARY, os.X_OK):
        return None
    return info


def _still_valid(info: dict[str, Any], variants: tuple[str, ...]) -> bool:
    """An earlier build of the same pinned source for this machine that is portable and has no
    excluded variant (so never the AMX one) and a baseline: safe to go on using."""
    flags = info.get("flags") or []
    baseline = {"x86_64": "x64", "aarch64": "armv8.0_1"}.get(_machine())
    return (info.get("sha256") == SOURCE_SHA256 and info.get("machine") == _machine()
            and "-DGGML_NATIVE=OFF" in flags and "-DGGML_BACKEND_DL=ON" in flags
            and bool(variants) and not set(variants) & set(EXCLUDED_VARIANTS)
            and (baseline is None or baseline in variants))


def installed_runtime(cache: Path | None = None) -> RuntimeInfo | None:
    """The built runtime for this machine's architecture, or None.

    A build of today's recipe (``runtime_dir``) first; else the newest earlier portable build of
    the same source that is still valid (``current=False``), so that a change of recipe does not
    take an installed model away.  ``rlm model build`` makes a current one beside it.
    """
    folder = runtime_dir(cache)
    info = _read_build(folder)
    current = info is not None
    if info is None:
        earlier = []
        version = SOURCE_REQUIREMENT.split("==")[1]
        for other in folder.parent.glob(f"{version}-{_machine()}-*"):
            found = _read_build(other) if other.is_dir() else None
            if found is not None and _still_valid(found, cpu_variants(other)):
                earlier.append((float(found.get("built_at") or 0), other.name, other, found))
        if not earlier:
            return None
        _, _, folder, info = max(earlier)
    return RuntimeInfo(path=folder, version=str(info.get("version", "?")), machine=str(info.get("machine", "?")),
                       variants=cpu_variants(folder), build_seconds=info.get("build_seconds"), already=True,
                       current=current)


def missing_tools() -> list[str]:
    """Build tools that are not on PATH (cmake, a C and a C++ compiler)."""
    missing = [tool for tool in ("cmake",) if shutil.which(tool) is None]
    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        missing.append("a C compiler (gcc)")
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        missing.append("a C++ compiler (g++)")
    return missing


Progress = Callable[[str], None]


def _run(cmd: Sequence[str], *, log: Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         progress: Progress | None = None) -> None:
    """Run ``cmd`` with its output appended to ``log``; progress lines ([ 42%] ...) go to ``progress``."""
    with log.open("a", encoding="utf-8", errors="replace") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace")
        assert proc.stdout is not None
        last = ""
        for line in proc.stdout:
            out.write(line)
            match = re.match(r"^\[\s*(\d+)%\]", line)
            if progress and match and match.group(1) != last:
                last = match.group(1)
                progress(f"{last}%")
        code = proc.wait()
    if code != 0:
        raise RuntimeBuildError(f"`{' '.join(cmd[:3])} ...` failed (exit {code}):\n{_tail(log)}",
                                hint=f"full log: {log}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _fetch_source(staging: Path, log: Path) -> Path:
    """Download the pinned source distribution with pip (no cache) and check its sha256."""
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-cache-dir",
          "--disable-pip-version-check", "-q", "-d", str(staging), SOURCE_REQUIREMENT], log=log)
    archive = staging / SOURCE_FILE
    if not archive.is_file():
        raise RuntimeBuildError(f"pip did not deliver {SOURCE_FILE}", hint=f"see {log}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        raise RuntimeBuildError(f"{SOURCE_FILE} has sha256 {digest}, expected {SOURCE_SHA256}",
                                hint="the package index served another file; check your index (pip config list)")
    return archive


def _extract(archive: Path, into: Path) -> Path:
    """Only ``vendor/llama.cpp`` of the archive, with tarfile's data filter (no links out, no devices)."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(SOURCE_SUBDIR)]
        if not members:
            raise RuntimeBuildError(f"{archive.name} holds no {SOURCE_SUBDIR}")
        tar.extractall(into, members=members, filter="data")
    return into / SOURCE_SUBDIR


def _load_average() -> list[float] | None:
    """The 1/5/15-minute load averages at the end of a build (other work shares the CPU)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def build_runtime(cache: Path | None = None, *, force: bool = False, jobs: int | None = None,
                  progress: Progress | None = None) -> RuntimeInfo:
    """Fetch, build and install ``llama-server`` for this architecture.

    Nothing is done when a build of today's recipe is installed (unless ``force``); an earlier
    build that is still valid is left in place beside the new one.
    """
    found = installed_runtime(cache)
    if found is not None and found.current and not force:
        return found
    missing = missing_tools()
    if missing:
        raise RuntimeBuildError(f"building the embedded model's runtime needs {', '.join(missing)}",
                                hint="install them (Debian/Ubuntu: apt-get install cmake g++) and run this again")
    target = runtime_dir(cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    log = target.parent / f"build-{target.name}.log"
    log.write_text(f"building {SOURCE_REQUIREMENT} llama-server, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    started = time.monotonic()
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        phases[name] = round(time.monotonic() - started - sum(phases.values()), 1)

    say = progress or (lambda _line: None)
    with tempfile.TemporaryDirectory(prefix="rlm-llama-", dir=target.parent) as tmp:
        work = Path(tmp)
        say("fetching the pinned llama.cpp source from PyPI ...")
        source = _extract(_fetch_source(work, log), work / "src")
        lap("fetch_seconds")
        wanted = wanted_variants()
        if wanted is not None:
            dropped = select_variants(source, wanted)
            with log.open("a", encoding="utf-8") as out:
                out.write(f"CPU variants built: {', '.join(wanted)}; left out: {', '.join(dropped)}\n")
        build = work / "build"
        say("configuring (portable: CPU variants chosen at run time) ...")
        _run(["cmake", "-S", str(source), "-B", str(build), *BUILD_FLAGS], log=log)
        lap("configure_seconds")
        env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs or os.cpu_count() or 1)}
        say("compiling ...")
        _run(["cmake", "--build", str(build), "--target", SERVER_BINARY], log=log, env=env, progress=progress)
        lap("compile_seconds")
        staged = work / "out"
        staged.mkdir()
        bin_dir = build / "bin"
        for path in bin_dir.iterdir():
            if path.name == SERVER_BINARY or ".so" in path.name:
                shutil.copy2(path, staged / path.name, follow_symlinks=True)
        for variant in EXCLUDED_VARIANTS:
            (staged / f"libggml-cpu-{variant}.so").unlink(missing_ok=True)
        variants = cpu_variants(staged)
        if not variants:
            raise RuntimeBuildError("the build produced no CPU backend library", hint=f"see {log}")
        missing_variants = sorted(set(wanted or ()) - set(variants))
        if missing_variants:
            raise RuntimeBuildError(f"the build produced no CPU backend for {', '.join(missing_variants)}",
                                    hint=f"see {log}")
        seconds = round(time.monotonic() - started, 1)
        (staged / BUILD_INFO).write_text(json.dumps({
            "source": SOURCE_REQUIREMENT, "sha256": SOURCE_SHA256, "version": SOURCE_REQUIREMENT.split("==")[1],
            "machine": _machine(), "flags": list(BUILD_FLAGS), "excluded_variants": list(EXCLUDED_VARIANTS),
            "variants": list(variants), "build_seconds": seconds, **phases,
            "jobs": int(env["CMAKE_BUILD_PARALLEL_LEVEL"]), "load_average": _load_average(),
            "built_at": time.time()}, indent=1))
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    return RuntimeInfo(path=target, version=SOURCE_REQUIREMENT.split("==")[1], machine=_machine(),
                       variants=variants, build_seconds=seconds)
