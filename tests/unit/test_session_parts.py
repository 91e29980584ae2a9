"""The sandbox session's parts without Docker: the manager's typed events, the cell client's notices,
and no signal handler installed by library code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rlm.sandbox.cells import died_notice, late_notice, recovered_notice, restarted_after_timeout_notice
from rlm.sandbox.container import SandboxContainer, signal_name
from rlm.sandbox.manager import KernelDied, KernelManager, Restarted, describe_event
from rlm.sandbox.protocol import Event
from rlm.sandbox.settings import SandboxSettings

PACKAGE = Path(__file__).resolve().parents[2] / "rlm"


def _installs_signal_handler(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "signal" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "signal":
            return True
    return False


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("sandbox/*.py")) + [PACKAGE / "_api.py"],
                         ids=lambda p: p.name)
def test_library_code_installs_no_signal_handler(path):
    assert not _installs_signal_handler(path), f"{path.name} installs a signal handler (the CLI owns signals)"


def test_the_cli_owns_sigterm():
    assert _installs_signal_handler(PACKAGE / "cli" / "app.py")


@pytest.fixture
def manager():
    box = SandboxContainer(SandboxSettings(), "s1", engine=None, context_path=None, attachable=False)
    events: list = []
    mgr = KernelManager(box, on_event=events.append)
    mgr.seen = events  # type: ignore[attr-defined]
    yield mgr
    mgr.close_wake()


def test_a_death_is_taken_as_a_typed_event_naming_the_first_cause(manager):
    manager.on_control({"event": Event.KERNEL_EXIT, "code": -9})
    manager.on_control({"event": Event.CONTROL_CLOSED})
    assert manager.has_death()
    died = manager.take_death()
    assert died == KernelDied("killed by SIGKILL, probably out of memory")
    assert manager.seen == [died]
    assert not manager.has_death() and manager.take_death() is None  # every queued event was consumed
    assert manager.seen == [died]


def test_events_that_are_not_deaths_are_no_death(manager):
    manager.on_control({"event": Event.KERNEL_READY})
    assert not manager.has_death()
    assert manager.take_death() is None and manager.seen == []


def test_a_manager_that_never_started_has_no_kernel(manager):
    from rlm.errors import SessionClosed

    with pytest.raises(SessionClosed):
        manager.live_client.close()
    assert manager.restarts == {"kernel": 0, "container": 0}


@pytest.mark.parametrize("event, words", [
    ({"event": Event.KERNEL_EXIT, "code": 1}, "exit code 1"),
    ({"event": Event.KERNEL_EXIT, "code": 137}, "exit code 137, probably out of memory"),
    ({"event": Event.KERNEL_EXIT, "code": -11}, "killed by SIGSEGV"),
    ({"event": Event.KERNEL_EXIT}, "unknown status"),
    ({"event": Event.CONTROL_CLOSED}, "the container stopped"),
    ({"event": Event.ERROR, "message": "no kernel"}, "no kernel"),
])
def test_supervisor_events_in_words(event, words):
    assert describe_event(event) == words


def test_an_unknown_signal_number_is_still_named():
    assert signal_name(-200) == "killed by signal 200"


def test_notices_say_what_was_restarted_and_that_variables_were_lost():
    died = recovered_notice(Restarted("kernel", "exit code 1"))
    assert "(exit code 1)" in died and "the kernel was restarted" in died and "variables were lost" in died
    failed = recovered_notice(Restarted("container", "an earlier restart failed", after_failure=True))
    assert "had failed and was started again" in failed
    assert "container was restarted" in restarted_after_timeout_notice(2, "container")
    assert died_notice(2, "exit code 1", "kernel", late=True).startswith("The cell ran past its timeout of 2 s")
    assert died_notice(2, "exit code 1", "kernel", late=False).startswith("The kernel died while running")
    assert "(9 s)" in late_notice(2.5, 9.2) and "2.5 s" in late_notice(2.5, 9.2)
