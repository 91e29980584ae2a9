"""A context the sandbox cannot load is refused before anything starts (issue 19 A), and the
bridge's clock of model time (issue 19 I).  No Docker: the check runs before the engine is used."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rlm.errors import ContextError
from rlm.sandbox import SandboxSession, SandboxSettings
from rlm.sandbox.bridge import _WaitClock
from rlm.sandbox.context_fit import KERNEL_HEADROOM_BYTES, check_context_fits
from rlm.sandbox.protocol import ASCII_DIRECT_MIN

MIB = 1024 * 1024


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)  # no disk used: only the size matters to the check
    return path


def test_a_file_too_large_for_the_sandbox_memory_is_refused_with_the_figures(tmp_path):
    settings = SandboxSettings(memory_mb=512)  # the kernel may use 512 - 64 - 16 - 96 = 336 MB
    path = _sparse(tmp_path / "big.txt", 300 * MIB)

    class NoEngine:
        def __getattr__(self, name):
            raise AssertionError("the check must come before any use of Docker")

    session = SandboxSession(context=path, settings=settings, engine=NoEngine())  # type: ignore[arg-type]
    with pytest.raises(ContextError) as caught:
        session.open()
    message, hint = caught.value.message, caught.value.hint or ""
    assert "big.txt (300 MB) does not fit in the sandbox's memory" in message
    assert "needs about 556 MB (its size, plus 256 MB" in message  # a large text may be pure ASCII: read once
    assert "336 MB" in message and "memory_mb=512" in message
    assert "memory_mb to at least 732" in hint and "RLM_MEMORY_MB=732" in hint
    check_context_fits(path, SandboxSettings(memory_mb=732))  # and that figure is enough
    with pytest.raises(ContextError):
        check_context_fits(path, SandboxSettings(memory_mb=731))


def test_json_counts_twice_its_size(tmp_path):
    path = _sparse(tmp_path / "big.json", 300 * MIB)
    with pytest.raises(ContextError, match=r"needs about 856 MB \(twice its size"):
        check_context_fits(path, SandboxSettings(memory_mb=732))


def test_a_folder_counts_all_its_files(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        _sparse(folder / f"{i}.txt", 100 * MIB)
    with pytest.raises(ContextError, match=r"docs \(300 MB\)"):
        check_context_fits(folder, SandboxSettings(memory_mb=512))


@pytest.mark.parametrize("suffix, factor", [(".txt", 1), (".json", 2), (".jsonl", 2)])
def test_what_fits_passes(tmp_path, suffix, factor):
    settings = SandboxSettings()  # 2048 MB: the kernel may use 1872 MB
    room = settings.address_space_limit_bytes - KERNEL_HEADROOM_BYTES
    fits = room // factor
    assert fits >= ASCII_DIRECT_MIN
    check_context_fits(_sparse(tmp_path / f"fits{suffix}", fits), settings)
    with pytest.raises(ContextError):
        check_context_fits(_sparse(tmp_path / f"over{suffix}", fits + MIB), settings)


def test_a_small_text_counts_twice(tmp_path):
    settings = SandboxSettings(memory_mb=300)  # the kernel may use 124 MB
    with pytest.raises(ContextError, match=r"twice its size"):
        check_context_fits(_sparse(tmp_path / "small.txt", ASCII_DIRECT_MIN - 1), settings)


def test_wait_clock_counts_overlapping_waits_once():
    clock = _WaitClock()
    assert clock.seconds() == 0.0 and clock.active == 0
    clock.begin()
    clock.begin()  # two requests at once: the cell waits once
    time.sleep(0.05)
    clock.end()
    time.sleep(0.05)
    clock.end()
    waited = clock.seconds()
    assert 0.09 <= waited < 1.0
    time.sleep(0.05)
    assert clock.seconds() == waited  # nothing in flight: the clock stands still


def test_wait_clock_is_thread_safe():
    clock = _WaitClock()

    def work() -> None:
        for _ in range(1000):
            clock.begin()
            clock.end()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.active == 0
