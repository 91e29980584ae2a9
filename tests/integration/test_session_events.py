"""The kernel manager's typed events on a real sandbox: a death and the restart that follows it."""

from __future__ import annotations

import pytest

from rlm.sandbox import SandboxSession
from rlm.sandbox.manager import KernelDied, Restarted

pytestmark = pytest.mark.docker


def test_a_kernel_death_emits_died_then_restarted(engine, sandbox_settings):
    with SandboxSession(settings=sandbox_settings, engine=engine) as s:
        events: list = []
        s._manager.on_event = events.append
        assert s.execute("kept = 1").ok and events == []
        ex = s.execute("import os\nos._exit(3)")
        assert ex.restarted == "kernel" and ex.state_lost
        assert events == [KernelDied("exit code 3"), Restarted("kernel", "exit code 3")]
        assert s.restarts == {"kernel": 1, "container": 0}
        assert s.execute("print(1)").stdout == "1\n" and len(events) == 2
