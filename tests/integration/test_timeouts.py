"""Every timeout and kernel-death path ends in a usable session, and the Execution says what happened."""

from __future__ import annotations

import os
import signal

import docker
import pytest

from rlm.sandbox import SandboxSession, SandboxSettings

pytestmark = pytest.mark.docker

# a loop in C that holds the GIL and never checks for signals (unlike `re`, which does on 3.11+)
GIL_HOG = "import collections, itertools\ncollections.deque(itertools.count(), maxlen=0)"


CONTEXT = "survives restarts ✓\n" * 100


@pytest.fixture(scope="module")
def sess(engine, tmp_path_factory):
    path = tmp_path_factory.mktemp("timeouts") / "ctx.txt"
    path.write_text(CONTEXT, encoding="utf-8")
    with SandboxSession(context=path, settings=SandboxSettings(cell_timeout_s=20), engine=engine) as s:
        yield s


def _works(session: SandboxSession) -> None:
    """A fresh cell runs, and `context` (when the session has one) is there again after any restart."""
    ex = session.execute("print(sum(range(10)), len(context) if 'context' in globals() else -1)", timeout=20)
    assert ex.ok, ex.output
    assert ex.stdout == f"45 {len(CONTEXT) if session.context_path else -1}\n"


def _defined(session: SandboxSession, name: str) -> bool:
    ex = session.execute(f"print({name!r} in globals())")
    assert ex.ok, ex.output
    return ex.stdout == "True\n"


def test_pure_python_infinite_loop_is_interrupted_with_state_kept(sess):
    sess.execute("kept_loop = 123")
    ex = sess.execute("while True:\n    pass", timeout=1)
    assert ex.timed_out and not ex.ok
    assert ex.restarted is None and not ex.state_lost
    assert ex.error_name == "KeyboardInterrupt"
    assert ex.notice and "kept" in ex.notice
    assert 1 <= ex.duration_s < 1 + sess.settings.interrupt_grace_s + 1
    assert sess.execute("print(kept_loop)").stdout == "123\n"


def test_long_sleep_is_interrupted_with_state_kept(sess):
    sess.execute("kept_sleep = 'yes'")
    ex = sess.execute("import time\ntime.sleep(100)", timeout=1)
    assert ex.timed_out and ex.restarted is None and not ex.state_lost
    assert ex.duration_s < 5
    assert sess.execute("print(kept_sleep)").stdout == "yes\n"


def test_catastrophic_regex_times_out_and_the_session_is_usable(sess):
    sess.execute("kept_re = 1")
    ex = sess.execute("import re\nre.match(r'(a+)+$', 'a' * 40 + 'b')", timeout=1)
    assert ex.timed_out
    # CPython >= 3.11 lets `re` see SIGINT: the interrupt is enough, otherwise the kernel is restarted
    assert ex.restarted in (None, "kernel")
    assert ex.state_lost == (ex.restarted is not None)
    assert _defined(sess, "kept_re") == (not ex.state_lost)
    _works(sess)


def test_cell_that_swallows_the_interrupt_restarts_the_kernel(sess):
    sess.execute("lost_swallow = 1")
    code = "while True:\n    try:\n        while True:\n            pass\n    except KeyboardInterrupt:\n        pass"
    ex = sess.execute(code, timeout=1)
    assert ex.timed_out and ex.restarted == "kernel" and ex.state_lost
    assert not _defined(sess, "lost_swallow")
    _works(sess)


def test_cell_holding_the_gil_in_c_restarts_the_kernel(sess):
    sess.execute("lost_gil = 1")
    container = sess.container_id
    ex = sess.execute(GIL_HOG, timeout=1)
    assert ex.timed_out
    assert ex.restarted == "kernel" and ex.state_lost
    assert "restarted" in ex.notice
    assert sess.container_id == container  # a kernel restart, not a new container
    assert not _defined(sess, "lost_gil")
    _works(sess)


def test_os_exit_restarts_the_kernel(sess):
    sess.execute("lost_exit = 1")
    ex = sess.execute("import os\nos._exit(1)", timeout=20)
    assert not ex.timed_out
    assert ex.restarted == "kernel" and ex.state_lost
    assert "exit code 1" in ex.notice
    assert not _defined(sess, "lost_exit")
    _works(sess)


def test_segfault_restarts_the_kernel(sess):
    sess.execute("lost_segv = 1")
    ex = sess.execute("import ctypes\nctypes.string_at(0)", timeout=20)
    assert not ex.timed_out
    assert ex.restarted == "kernel" and ex.state_lost
    assert "SIGSEGV" in ex.notice
    assert not _defined(sess, "lost_segv")
    _works(sess)


def test_killing_every_process_from_inside_cannot_touch_the_supervisor(engine, sess):
    """The supervisor is pid 1 and the kernel is spared by its own kill(-1): nothing dies, state is kept."""
    old = sess.container_id
    sess.execute("survivor = 'still here'")
    ex = sess.execute("import os\nos.kill(-1, 9)", timeout=20)
    assert ex.restarted is None and not ex.state_lost
    after = sess.execute("print(survivor)", timeout=20)
    assert after.stdout == "still here\n" and after.restarted is None
    assert sess.container_id == old
    _works(sess)
    labels = [c.labels for c in engine.list_labelled(f"rlm.session={sess.id}")]
    assert len(labels) == 1  # exactly one live container for the session


def _supervisor_host_pid(engine, session) -> int:
    return docker.from_env().api.inspect_container(session.container_id)["State"]["Pid"]


def _kill_container_from_host(session) -> None:
    client = docker.from_env()
    try:
        client.api.kill(session.container_id)
    finally:
        client.close()


def test_container_killed_from_outside_between_cells(engine, sess):
    """Like an OOM kill of the whole container: the next cell recovers and says state was lost."""
    sess.execute("lost_outside = 1")
    old = sess.container_id
    client = docker.from_env()
    try:
        client.api.kill(old)
    finally:
        client.close()
    ex = sess.execute("print('lost_outside' in globals())", timeout=30)
    assert ex.state_lost and ex.notice
    assert ex.stdout == "False\n"
    assert sess.container_id != old
    _works(sess)


def test_stuck_supervisor_falls_back_to_recreating_the_container(engine):
    """Kernel restart fails (supervisor frozen) -> the container is recreated."""
    settings = SandboxSettings(cell_timeout_s=20, interrupt_grace_s=1, start_timeout_s=4)
    with SandboxSession(settings=settings, engine=engine) as s:
        s.execute("lost_stuck = 1")
        old = s.container_id
        os.kill(_supervisor_host_pid(engine, s), signal.SIGSTOP)  # from inside, pid 1 ignores SIGSTOP
        ex = s.execute(GIL_HOG, timeout=1)
        assert ex.timed_out
        assert ex.restarted == "container" and ex.state_lost
        assert s.container_id != old and engine.inspect(old) is None
        assert not _defined(s, "lost_stuck")
        _works(s)


def test_session_recovers_after_a_failed_container_recreation(engine):
    """A container that cannot be recreated is a clear SandboxError; once the engine can start it, the session
    recovers (regression: it used to fail on a bare AssertionError forever)."""
    import uuid

    from rlm.errors import SandboxError

    tag = f"rlm-sandbox:test-{uuid.uuid4().hex[:10]}"  # a private tag we can take away and give back
    engine.tag_image("rlm-sandbox:latest", tag)
    client = docker.from_env()
    try:
        with SandboxSession(settings=SandboxSettings(image=tag, cell_timeout_s=20), engine=engine) as s:
            assert s.execute("x = 1").ok
            client.images.remove(tag, noprune=True)  # the next container cannot be created
            with pytest.raises(SandboxError):
                _kill_container_from_host(s)
                s.execute("1", timeout=20)
                s.execute("1", timeout=20)  # in case the death was only noticed after the cell
            with pytest.raises(SandboxError):  # still broken: a clear infrastructure error, not an assert
                s.execute("1", timeout=20)
            engine.tag_image("rlm-sandbox:latest", tag)
            ex = s.execute("print(1 + 1)", timeout=20)  # the engine works again: the session recovers
            assert ex.ok and ex.stdout == "2\n" and ex.state_lost
    finally:
        try:
            client.images.remove(tag, noprune=True)
        except docker.errors.ImageNotFound:
            pass
        client.close()


def test_missing_image_when_recreating_is_image_missing_without_a_pull(engine):
    """Regression: Engine.run once used containers.run(), which tries a registry pull for a missing image."""
    import uuid

    from rlm.errors import ImageMissing

    tag = f"rlm-sandbox:test-{uuid.uuid4().hex[:10]}"
    engine.tag_image("rlm-sandbox:latest", tag)
    client = docker.from_env()
    try:
        with SandboxSession(settings=SandboxSettings(image=tag, cell_timeout_s=20), engine=engine) as s:
            client.images.remove(tag, noprune=True)
            with pytest.raises(ImageMissing) as caught:
                _kill_container_from_host(s)
                s.execute("1", timeout=20)
                s.execute("1", timeout=20)
            assert "rlm sandbox build" in str(caught.value)
            assert "registry" not in str(caught.value)
    finally:
        try:
            client.images.remove(tag, noprune=True)
        except docker.errors.ImageNotFound:
            pass
        client.close()
