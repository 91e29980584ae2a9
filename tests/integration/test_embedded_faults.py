"""`rlm query` with no model server configured, so the embedded server stands in (here the stand-in
llama-server of tests/fake_llama_server.py, run by the real keeper), and that server dies.

The real CLI in a subprocess, the real sandbox.  Marker ``docker``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlm.config import CONFIG_ENV_VAR, FIELDS
from rlm.llm.local import server as e
from rlm.llm.local import weights as w

pytestmark = pytest.mark.docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_embedded_server import install_fake_runtime  # noqa: E402

RLM_ENV = {name for spec in FIELDS for name in spec.env_names} | {CONFIG_ENV_VAR}


@pytest.fixture
def cache(tmp_path):
    cache = tmp_path / "cache"
    install_fake_runtime(cache)
    spec = w.MODELS["0.5b"]
    path = w.model_path(spec, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:           # a sparse file of the pinned size counts as installed
        fh.truncate(spec.total_bytes)
    yield cache
    e.stop_server(cache, grace_s=2)


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RLM_ENV}
    env.update(RLM_CACHE_DIR=str(cache), RLM_MAX_RETRIES="0", PYTHONUNBUFFERED="1", COLUMNS="200",
               OLLAMA_BASE_URL="", **extra)
    return env


def _query(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    doc = tmp_path / "doc.txt"
    doc.write_text("alpha beta gamma\n" * 50)
    trace = tmp_path / "run.jsonl"
    return subprocess.run([sys.executable, "-m", "rlm", "query", "-q", "What is here?", "-f", str(doc),
                           "--trace", str(trace), "--config", str(tmp_path / "none.yaml")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)


def test_sigsegv_mid_query_is_named_with_exit_4_and_the_trace_kept(cache, tmp_path):
    assert w.installed_path(w.MODELS["0.5b"], cache) is not None
    (tmp_path / "none.yaml").write_text("{}\n")
    # completion 1 is the set-up's proof, completion 2 the root model's first turn: it crashes the server
    proc = _query(tmp_path, _env(cache, FAKE_LLAMA_CRASH_ON_CHAT="2"))
    err = proc.stderr
    assert proc.returncode == 4, err
    assert "killed by signal 11 (SIGSEGV) during a request" in err
    assert "fake llama-server: crashing on this completion" in err          # the last lines of its log
    assert "the whole log:" in err and "server-qwen2.5-coder-0.5b.log" in err
    assert "ollama" not in err.lower()
    assert "partial trace is kept at" in err
    events = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines() if line.strip()]
    assert events and events[0]["kind"] == "run_start"
