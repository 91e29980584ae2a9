"""D4: JSON (or YAML) nested 100,000 levels deep, wherever rlm reads it from a user, is a named error
with exit 2 (never RecursionError, never "a bug in rlm"); files rlm reads back skip such a line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlm.core.trace import read_trace
from rlm.errors import ContextError, UsageError
from rlm.jobs import read_results

from .conftest import cli_env, run_cli

DEPTH = 100_000
DEEP_ARRAY = "[" * DEPTH + "]" * DEPTH
DEEP_OBJECT = '{"a":' * DEPTH + "1" + "}" * DEPTH


def _clean_usage_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "RecursionError" not in proc.stderr and "Traceback" not in proc.stderr
    assert "a bug in rlm" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.mark.parametrize("name,text", [("deep.json", DEEP_ARRAY), ("deep_obj.json", DEEP_OBJECT),
                                       ("deep.jsonl", '{"ok": 1}\n' + DEEP_ARRAY + "\n")])
def test_a_deep_json_context_exits_2_with_a_context_error(tmp_path, scripted, name, text):
    server = scripted(["FINAL(never)"])
    (tmp_path / name).write_text(text)
    proc = run_cli("query", "-q", "what?", "-f", name, env=cli_env(server), cwd=tmp_path)
    _clean_usage_error(proc, f"{name}", "nested too deeply")
    assert server.requests == []                     # refused before any model call


def test_a_deep_json_context_in_a_batch_spec_and_a_deep_spec_exit_2(tmp_path, scripted):
    server = scripted(["FINAL(never)"])
    (tmp_path / "deep.json").write_text(DEEP_ARRAY)
    (tmp_path / "ctx.yaml").write_text(f"model: {{base_url: '{server.url}', root_model: root-model}}\n"
                                       "queries:\n  - {id: a, question: Q, context_file: deep.json}\n")
    proc = run_cli("batch", "run", "ctx.yaml", env=cli_env(), cwd=tmp_path)
    _clean_usage_error(proc, "invalid batch spec", "deep.json", "nested too deeply")
    (tmp_path / "deep.yaml").write_text("queries: " + DEEP_ARRAY + "\n")
    proc = run_cli("batch", "run", "deep.yaml", env=cli_env(), cwd=tmp_path)
    _clean_usage_error(proc, "invalid batch spec", "nested")
    assert server.requests == []


def test_a_deep_config_file_exits_2(tmp_path):
    (tmp_path / "deep.yaml").write_text("max_iterations: " + DEEP_ARRAY + "\n")
    proc = run_cli("query", "--config", "deep.yaml", "-q", "x", "-c", "text", env=cli_env(), cwd=tmp_path)
    _clean_usage_error(proc, "deep.yaml", "nested")


def test_a_deep_python_value_as_the_api_context_is_a_context_error():
    from rlm._api import context_source

    value: list = []
    for _ in range(DEPTH):
        value = [value]
    with pytest.raises(ContextError, match="nested too deeply") as info:
        context_source(value, max_bytes=10**9)
    assert isinstance(info.value, UsageError)


def test_results_and_traces_skip_a_deep_line(tmp_path: Path):
    results = tmp_path / "out.jsonl"
    results.write_text(json.dumps({"id": "a", "status": "ok"}) + "\n" + DEEP_ARRAY + "\n"
                       + json.dumps({"id": "b", "status": "error"}) + "\n")
    assert set(read_results(results)) == {"a", "b"}
    trace = tmp_path / "trace.jsonl"
    trace.write_text(json.dumps({"kind": "run_start", "t": 0}) + "\n" + DEEP_OBJECT + "\n")
    assert [e["kind"] for e in read_trace(trace)] == ["run_start"]
