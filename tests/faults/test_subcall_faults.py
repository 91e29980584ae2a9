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


LONG_NAMES_CELL = ("```repl\nseen = []\nfor size in [7_000_000] * 10 + [400_000] * 3:\n    try:\n"
                   "        llm_query('hi', model='m' * size)\n    except SubCallError as exc:\n"
                   "        seen.append(len(str(exc)))\nprint('refused', len(seen), 'longest message', max(seen))\n```")


def test_ten_7_mb_model_names_put_nothing_large_on_stderr_or_in_the_trace(tmp_path, run_root, engine):
    trace = tmp_path / "run.jsonl"
    with FakeModelServer(root_model=ROOT, models=[SUB], root=[LONG_NAMES_CELL, "FINAL(names refused)"]) as server:
        done = subprocess.run([sys.executable, "-m", "rlm", "query", "-q", "Which model answers?", "-c", "text",
                               "--base-url", server.url, "--model", ROOT, "--sub-model", SUB, "--trace", str(trace)],
                              cwd=tmp_path, env=_clean_env(tmp_path, run_root), capture_output=True, text=True,
                              timeout=120)
        sent_models = {r.get("model") for r in server.requests}
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert done.stdout.strip() == "names refused"
    assert sent_models == {ROOT}  # no request with any of those names reached the model server
    told = server.requests[-1]["messages"][-1]["content"]
    assert "refused 13 longest message" in told
    longest = int(told.split("longest message")[1].split()[0])
    assert longest < 400
    assert len(done.stderr) < 20_000, len(done.stderr)
    assert trace.stat().st_size < 200_000, trace.stat().st_size
    print(f"13 calls with 7 MB / 400 kB model names: stderr {len(done.stderr)} B, trace {trace.stat().st_size} B")
