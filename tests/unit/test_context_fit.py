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
from rlm.sandbox.session import KERNEL_HEADROOM_BYTES, check_context_fits

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
    assert "needs about 856 MB" in message and "336 MB" in message and "memory_mb=512" in message
    assert "memory_mb to at least 1032" in hint and "RLM_MEMORY_MB=1032" in hint
    # and that figure is enough
    check_context_fits(path, SandboxSettings(memory_mb=1032))


def test_a_folder_counts_all_its_files(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        _sparse(folder / f"{i}.txt", 100 * MIB)
    with pytest.raises(ContextError, match=r"docs \(300 MB\)"):
        check_context_fits(folder, SandboxSettings(memory_mb=512))


def test_what_fits_passes(tmp_path):
    settings = SandboxSettings()  # 2048 MB: the kernel may use 1872 MB
    limit = settings.address_space_limit_bytes
    fits = (limit - KERNEL_HEADROOM_BYTES) // 2
    check_context_fits(_sparse(tmp_path / "fits.txt", fits), settings)
    with pytest.raises(ContextError):
        check_context_fits(_sparse(tmp_path / "over.txt", fits + MIB), settings)


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
