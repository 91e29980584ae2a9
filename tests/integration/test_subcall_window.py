"""Sub-calls past the sub-model's window and repeated sub-calls, end to end: the real sandbox (container,
kernel, bridge), the real openai client, and a scripted llama.cpp-like server over HTTP that reports a
32,768-token window (the embedded model's) on /props, counts tokens on /tokenize and answers HTTP 400
to any request with more tokens than that.  Marker ``docker``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlm.config import settings_from_mapping
from rlm.core.orchestrator import Orchestrator
from rlm.core.result import RunResult
from rlm.llm.fake_server import FakeModelServer, repl
from rlm.llm.openai_client import OpenAICompatibleClient
from rlm.sandbox import SandboxSession

pytestmark = pytest.mark.docker

ROOT, SUB = "root-model", "sub-model"
N_CTX = 32_768
BIG = 140_000  # characters: 35,000 tokens for the server, past its window


def run(engine, tmp_path: Path, root: list, **overrides) -> tuple[RunResult, FakeModelServer, list[dict], str]:
    server = FakeModelServer(root_model=ROOT, models=[SUB], root=root, n_ctx=N_CTX,
                             sub=lambda prompt: f"ok:{len(prompt)}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    context = tmp_path / "doc.txt"
    context.write_text("a small context\n")
    settings = settings_from_mapping({"base_url": server.url, "root_model": ROOT, "sub_model": SUB,
                                      "trace_dir": str(tmp_path / "traces"), "max_retries": 0,
                                      "cell_timeout_s": 60, "policy": "legacy", **overrides})
    trace = tmp_path / "run.jsonl"
    try:
        with OpenAICompatibleClient(settings.model, backoff_base_s=0.01) as client:
            orch = Orchestrator(settings, client, session_factory=lambda path: SandboxSession(
                context=path, settings=settings.sandbox, engine=engine))
            result = orch.run("q", context, trace_path=trace)
    finally:
        server.close()
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    output = "\n".join(str(e.get("output", "")) for e in events if e.get("kind") == "cell")
    return result, server, events, output


def sub_prompts(server: FakeModelServer) -> list[str]:
    return [r["messages"][-1]["content"] for r in server.requests if r["model"] == SUB]


def test_a_sub_call_past_the_window_is_never_sent_and_map_chunks_fits_it(engine, tmp_path):
    root = [
        repl(f"big = 'w' * {BIG}\n"
             "try:\n"
             "    llm_query('Summarise: ' + big)\n"
             "except SubCallError as e:\n"
             "    print('REFUSED:', e)\n"
             "out = llm_query_batched(['short one', 'Summarise: ' + big])\n"
             "print('BATCH0:', out[0])\n"
             "print('BATCH1:', out[1][:60])"),
        repl("parts = map_chunks('Say ok.', 'lorem ipsum ' * 10000)\n"
             "print('PARTS:', len(parts), [p.split(':')[0] for p in parts])"),
        "FINAL(done)",
    ]
    result, server, events, output = run(engine, tmp_path, root)
    assert result.status == "ok", (result.error, output)
    # the 35,000-token prompt reached the server neither alone nor in the batch
    assert server.oversized == 0
    assert all(FakeModelServer.tokens(p) <= N_CTX for p in sub_prompts(server))
    assert not any(len(p) >= BIG for p in sub_prompts(server))
    assert "REFUSED: the prompt does not fit the sub-model's context window" in output
    assert f"{BIG + len('Summarise: '):,} characters" in output and "32,768 tokens" in output
    assert "map_chunks" in output
    assert "BATCH0: ok:9" in output and "BATCH1: Error: the prompt does not fit" in output
    # map_chunks cut 120,000 characters into pieces that fit the window: 3, not 30 of the old 4,000
    pieces = [p for p in sub_prompts(server) if p.startswith("Say ok.")]
    assert "PARTS: 3 ['ok', 'ok', 'ok']" in output and len(pieces) == 3
    assert max(len(p) for p in pieces) < (N_CTX - 1024 - 64) * 3
    assert server.probes.count("/props") == 1  # once per run
    refused = [e for e in events if e.get("kind") == "sub_call" and e.get("refused") == "window"]
    assert len(refused) == 2
    assert result.sub_calls == 1 + 3  # 'short one' and the pieces; the refused ones cost nothing


def test_a_repeated_sub_call_is_memoised_unless_memo_is_off(engine, tmp_path):
    root = [repl("a = llm_query('same question')\nb = llm_query('same question')\n"
                 "c = llm_query_batched(['same question', 'other'])\nprint('SAME:', a == b == c[0])"),
            "FINAL(done)"]
    result, server, events, output = run(engine, tmp_path / "on", root)
    assert "SAME: True" in output
    assert sorted(sub_prompts(server)) == ["other", "same question"]
    assert result.sub_calls == 2
    assert result.usage[SUB].calls == 2 and result.usage[SUB].memoised == 2
    assert json.loads(json.dumps(result.to_dict()))["usage"][SUB]["memoised"] == 2
    memoised = [e for e in events if e.get("kind") == "sub_call" and e.get("memoised")]
    assert len(memoised) == 2
    end = [e for e in events if e.get("kind") == "run_end"][0]
    assert end["usage"][SUB]["memoised"] == 2

    result, server, _, output = run(engine, tmp_path / "off", root, memo=False)
    assert "SAME: True" in output
    assert sorted(sub_prompts(server)) == ["other"] + ["same question"] * 3
    assert result.sub_calls == 4 and result.usage[SUB].memoised == 0
