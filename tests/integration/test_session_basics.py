"""SandboxSession basics: state, errors as data, display, open time, close, context manager."""

from __future__ import annotations

import pytest

from rlm.errors import SessionClosed
from rlm.sandbox import SandboxSession, SandboxSettings

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def shared(engine):
    with SandboxSession(settings=SandboxSettings(cell_timeout_s=20), engine=engine) as s:
        yield s


def test_state_persists_between_cells_in_one_container_and_kernel(shared):
    container = shared.container_id
    first = shared.execute("import os\ncounter = 41\ndef bump(n):\n    return n + 1\nkernel_pid = os.getpid()")
    assert first.ok, first.output
    second = shared.execute("print(bump(counter), os.getpid() == kernel_pid)")
    assert second.ok, second.output
    assert second.stdout == "42 True\n"
    assert shared.container_id == container  # one container reused for every cell


def test_errors_come_back_as_data_and_the_session_keeps_working(shared):
    shared.execute("kept = 'still here'")
    ex = shared.execute("x = 1\n1 / 0")
    assert ex.error_name == "ZeroDivisionError"
    assert "Traceback" in ex.error and "ZeroDivisionError: division by zero" in ex.error
    assert not ex.timed_out and ex.restarted is None and not ex.state_lost
    assert not ex.ok

    syntax = shared.execute("def broken(:\n    pass")
    assert syntax.error_name == "SyntaxError"

    missing = shared.execute("undefined_name_xyz")
    assert missing.error_name == "NameError" and "undefined_name_xyz" in missing.error

    after = shared.execute("print(kept, x)")
    assert after.ok and after.stdout == "still here 1\n"


def test_display_of_last_expression(shared):
    ex = shared.execute("print('side')\n6 * 7")
    assert ex.stdout == "side\n"
    assert ex.display == ["42"]
    assert shared.execute("value = 6 * 7").display == []
    assert shared.execute("None").display == []
    assert shared.execute("'text'").display == ["'text'"]


def test_open_time_and_duration_are_recorded(shared):
    assert isinstance(shared.open_seconds, float)
    assert 0 < shared.open_seconds < shared.settings.start_timeout_s
    ex = shared.execute("sum(range(1000))")
    assert 0 < ex.duration_s < 20


def test_close_is_idempotent_removes_container_and_run_folder(engine):
    s = SandboxSession(settings=SandboxSettings(), engine=engine).open()
    container, run_dir = s.container_id, s.run_dir
    assert engine.inspect(container) is not None
    assert run_dir is not None and run_dir.is_dir()
    assert s.execute("1 + 1").display == ["2"]

    s.close()
    s.close()  # idempotent
    assert s.closed
    assert engine.inspect(container) is None
    assert not run_dir.exists()


def test_use_after_close_raises_session_closed(engine):
    s = SandboxSession(settings=SandboxSettings(), engine=engine).open()
    s.close()
    with pytest.raises(SessionClosed):
        s.execute("1")
    with pytest.raises(SessionClosed):
        s.open()


def test_context_manager_closes_on_exception(engine):
    seen = {}
    with pytest.raises(RuntimeError, match="boom in the with block"):
        with SandboxSession(settings=SandboxSettings(), engine=engine) as s:
            seen.update(container=s.container_id, run_dir=s.run_dir)
            assert s.execute("1").ok
            raise RuntimeError("boom in the with block")
    assert s.closed
    assert engine.inspect(seen["container"]) is None
    assert not seen["run_dir"].exists()


# --------------------------------------------------------------- infrastructure errors
def test_missing_image_raises_image_missing_with_the_build_hint(engine):
    from rlm.errors import ImageMissing

    before = {c.id for c in engine.list_labelled("rlm.session")}
    s = SandboxSession(settings=SandboxSettings(image="rlm-sandbox:no-such-tag-xyz"), engine=engine)
    with pytest.raises(ImageMissing) as caught:
        s.open()
    assert "rlm sandbox build" in str(caught.value)
    assert s.closed and s.container_id is None
    assert {c.id for c in engine.list_labelled("rlm.session")} == before


def test_run_root_too_long_for_unix_sockets_is_refused(engine, tmp_path):
    from rlm.errors import SandboxError

    long_root = tmp_path / ("r" * 90)
    s = SandboxSession(settings=SandboxSettings(run_root=str(long_root)), engine=engine)
    with pytest.raises(SandboxError, match="too long"):
        s.open()
    assert s.closed and s.container_id is None
    assert not any(p.is_dir() for p in long_root.glob("*"))  # its run folder was removed again


def test_no_engine_answering_raises_engine_unavailable_with_a_hint(tmp_path):
    from rlm.errors import EngineUnavailable
    from rlm.sandbox.engine import Engine

    with pytest.raises(EngineUnavailable) as caught:
        Engine(base_url=f"unix://{tmp_path}/no-docker.sock", timeout=5)
    assert "start Docker" in str(caught.value)
