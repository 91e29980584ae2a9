"""SIGINT from a background job: a job started with ``&`` by a non-interactive shell ignores SIGINT, and its
children inherit that.  Tests that send SIGINT restore the default in the child (``sigint_default``); rlm
respects an ignored SIGINT (as Python does) and says so under ``--debug``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from .conftest import cli_env, run_cli, sigint_default


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_debug_says_whether_ctrl_c_reaches_rlm(tmp_path):
    reaches = run_cli("config", "show", "--debug", env=cli_env(), cwd=tmp_path)
    assert reaches.returncode == 0, reaches.stderr
    assert "Ctrl-C reaches rlm" in reaches.stderr
    ignored = subprocess.run([sys.executable, "-m", "rlm", "config", "show", "--debug"], env=cli_env(), cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, preexec_fn=_ignore_sigint)
    assert ignored.returncode == 0, ignored.stderr
    assert "Ctrl-C cannot reach rlm: SIGINT is ignored" in ignored.stderr


@pytest.mark.docker
def test_sigint_reaches_a_child_whose_handler_was_restored_even_from_a_background_job(engine, tmp_path, scripted):
    """Run from a background job (SIGINT ignored here) this passes only because the child restores it."""
    server = scripted([{"content": "FINAL(late)", "delay_s": 60}])
    proc = subprocess.Popen([sys.executable, "-m", "rlm", "query", "-q", "Wait", "-c", "some text"],
                            env=cli_env(server), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_default)
    try:
        deadline = time.monotonic() + 60
        while not server.requests:                               # the run waits on its first root call
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the root call never came"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "error: interrupted" in stderr and "Traceback" not in stderr
        assert engine.list_labelled(f"rlm.owner_pid={proc.pid}") == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
