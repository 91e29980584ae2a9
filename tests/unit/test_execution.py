"""Output capping and Execution rendering; sandbox settings validation (no Docker)."""

from __future__ import annotations

import pytest

from rlm.errors import ConfigError
from rlm.sandbox import Execution, SandboxSettings
from rlm.sandbox.execution import OutputCap


def test_cap_keeps_everything_under_the_limit():
    cap = OutputCap(100)
    cap.add("hello ")
    cap.add("world")
    assert cap.text() == "hello world" and cap.dropped == 0


def test_cap_keeps_head_and_tail_and_counts_the_drop():
    cap = OutputCap(20)
    for i in range(1000):
        cap.add(f"{i}\n")
    text = cap.text()
    assert text.startswith("0\n1\n2\n")
    assert text.endswith("998\n999\n")
    assert f"[... {cap.dropped} bytes of output dropped ...]" in text
    assert cap.total == sum(len(f"{i}\n") for i in range(1000))


def test_cap_memory_is_bounded_by_the_limit_whatever_arrives():
    cap = OutputCap(1000)
    cap.add("x" * 10_000_000)
    cap.add("y" * 3)
    assert len(cap._head) + len(cap._tail) <= 1000
    assert cap.text().endswith("yyy")


def test_execution_output_orders_streams_error_and_notice():
    ex = Execution(stdout="out", stderr="err", display=["42"], error="Traceback...", notice="restarted")
    assert ex.output == "out\n42\nerr\nTraceback...\n[sandbox] restarted"
    assert not ex.ok
    assert Execution(stdout="x").ok


@pytest.mark.parametrize("field, value", [("pids_limit", 0), ("memory_mb", -1), ("cell_timeout_s", 0),
                                           ("cpus", 0)])
def test_settings_refuse_non_positive_limits(field, value):
    with pytest.raises(ConfigError, match=field):
        SandboxSettings(**{field: value})


def test_settings_refuse_memory_too_small_for_the_tmpfs():
    with pytest.raises(ConfigError, match="memory_mb is too small"):
        SandboxSettings(memory_mb=100, tmpfs_mb=64)


def test_address_space_limit_leaves_room_for_tmpfs():
    s = SandboxSettings(memory_mb=1024, tmpfs_mb=64, home_tmpfs_mb=16, address_space_margin_mb=96)
    assert s.address_space_limit_bytes == (1024 - 64 - 16 - 96) * 1024 * 1024
