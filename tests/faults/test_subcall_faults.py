"""D1: a hung sub-call is bounded by its deadline (by default the cell's timeout): the request is
cancelled, the model is told, the run ends, nothing is left behind.  A real sandbox, `rlm query`
as a user runs it (a separate process), a scripted model server on 127.0.0.1 whose sub-model
never answers.  Marker ``docker``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rlm.config import CONFIG_ENV_VAR, FIELDS
from rlm.llm.fake_server import FakeModelServer

pytestmark = pytest.mark.docker

ROOT, SUB = "root-model", "sub-model"
HANGING_CELL = ("```repl\ntry:\n    print(llm_query('please answer'))\nexcept SubCallError as exc:\n"
                "    print('sub-call failed:', exc)\n```")


def _env_name(key: str) -> str:
    return next(spec.env_names[0] for spec in FIELDS if spec.key == key)


@pytest.fixture
def run_root():
    """A short folder for run directories (the sockets' paths must stay under ~107 characters)."""
    path = tempfile.mkdtemp(prefix="rlm-d1-", dir="/tmp")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def _clean_env(tmp_path, run_root) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k != CONFIG_ENV_VAR and not any(k in spec.env_names for spec in FIELDS)}
    env.update({_env_name("cell_timeout_s"): "10", _env_name("timeout_s"): "120", _env_name("max_wait_s"): "600",
                _env_name("run_root"): str(run_root), _env_name("trace_dir"): str(tmp_path / "traces"),
                _env_name("runtime"): os.environ.get("RLM_TEST_RUNTIME") or "runc", "COLUMNS": "200"})
    return env


def test_a_hung_sub_call_with_a_10_s_cell_timeout_ends_the_run_within_30_s(tmp_path, run_root, engine):
    with FakeModelServer(root_model=ROOT, models=[SUB], root=[HANGING_CELL, "FINAL(went on without it)"],
                         sub_delay_s=3600) as server:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "rlm", "query", "-q", "What does the sub-model say?",
                               "-c", "some text", "--base-url", server.url, "--model", ROOT, "--sub-model", SUB,
                               "--quiet"], cwd=tmp_path, env=_clean_env(tmp_path, run_root), capture_output=True, text=True,
                              timeout=120)
        took = time.monotonic() - started
        requests = server.requests
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert done.stdout.strip() == "went on without it"
    assert took < 30, f"the run took {took:.1f} s"
    assert "Traceback" not in done.stderr and "bug in rlm" not in done.stderr
    told = requests[-1]["messages"][-1]["content"]  # the root model's last prompt holds the cell's output
    assert "sub-call failed: the sub-call timed out after 10 s" in told
    assert "127.0.0.1" not in told
    assert list(run_root.iterdir()) == [], f"run folders left: {list(run_root.iterdir())}"
    print(f"a hung sub-call, 10 s cell timeout, 120 s request timeout: the run ended in {took:.1f} s")
