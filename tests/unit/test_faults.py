"""Faults the test suite injects, end to end through the loop: the real openai client against the
scripted HTTP server (rlm/llm/fake_server.py), a scripted sandbox session (no Docker).

The catalogue (issue 19), and where each is checked:
- malformed model reply (cut JSON, HTML, wrong shape): retried, then an LLMError (exit 4) — here and
  tests/unit/test_openai_client.py; in a sub-call it is that sub-call's error — here;
- a silent model server: reported while it lasts, bounded by max_wait_s — here and test_openai_client.py;
- a FIFO, a broken symlink or a symlink loop in the context: a ContextError naming it (exit 2) —
  tests/unit/test_context.py;
- HTTP 500s, a dead server, timeouts: tests/unit/test_openai_client.py, tests/integration/test_loop.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rlm.config import settings_from_mapping
from rlm.core.orchestrator import Orchestrator
from rlm.errors import LLMError
from rlm.llm.fake_server import FakeModelServer
from rlm.llm.openai_client import OpenAICompatibleClient
from rlm.sandbox import Execution
from rlm.sandbox.bridge import BridgeRefusal

ROOT, SUB = "root-model", "sub-model"
CUT_JSON = '{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "mess'


class Session:
    """A scripted session: publishes context info; a cell with llm_query asks the handler once."""

    context_path = None

    def __init__(self) -> None:
        self.handler = None
        self.executed: list[str] = []

    def open(self) -> Session:
        return self

    def close(self) -> None:
        pass

    def set_handler(self, handler) -> None:
        self.handler = handler

    def execute(self, code: str, timeout: float | None = None) -> Execution:
        if code == "_rlm_context_info()":
            return Execution(meta={"context_info": {"kind": "str", "total_chars": 10, "n_documents": 1,
                                                    "preview": "ten chars."}})
        self.executed.append(code)
        if "llm_query" in code:
            try:
                reply = self.handler({"op": "llm_query", "prompt": "BROKEN please"})
            except BridgeRefusal as exc:
                return Execution(error=f"SubCallError: {exc}", error_name="SubCallError")
            return Execution(stdout=reply["text"])
        return Execution(stdout="ran\n")


def go(tmp_path: Path, server: FakeModelServer, *, events: list | None = None, silence_s: float = 30.0,
       **model_fields):
    settings = settings_from_mapping({"base_url": server.url, "root_model": ROOT, "sub_model": SUB,
                                      "trace_dir": str(tmp_path), "max_retries": 2})
    settings = dataclasses.replace(settings, model=dataclasses.replace(settings.model, **model_fields))
    session = Session()
    progress = (lambda kind, data: events.append((kind, data))) if events is not None else None
    trace = tmp_path / "run.jsonl"
    with OpenAICompatibleClient(settings.model, backoff_base_s=0.001, silence_report_s=silence_s) as client:
        orch = Orchestrator(settings, client, progress=progress, session_factory=lambda path: session)
        return orch.run("q", None, trace_path=trace), session, read(trace)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_malformed_root_reply_is_retried_and_the_run_goes_on(tmp_path):
    with FakeModelServer(root_model=ROOT, models=[SUB], root=[{"raw": CUT_JSON}, "FINAL(fine)"]) as server:
        result, _, _ = go(tmp_path, server)
        assert (result.answer, result.status) == ("fine", "ok")
        assert len(server.requests) == 2


def test_malformed_root_replies_end_the_run_with_a_model_server_error(tmp_path):
    with FakeModelServer(root_model=ROOT, models=[SUB], root=[{"raw": CUT_JSON}] * 5) as server:
        with pytest.raises(LLMError) as err:
            go(tmp_path, server)
        assert type(err.value) is LLMError and "malformed reply" in err.value.message
        assert len(server.requests) == 3
    end = read(tmp_path / "run.jsonl")[-1]
    assert end["kind"] == "run_end" and end["status"] == "error" and "malformed reply" in end["error"]


def test_a_malformed_sub_call_reply_is_that_sub_calls_error(tmp_path):
    root = ["```repl\nr = llm_query('x')\n```", "FINAL(went on)"]
    with FakeModelServer(root_model=ROOT, models=[SUB], root=root, sub_raw_when="BROKEN") as server:
        result, session, events = go(tmp_path, server)
        feedback = [m for m in server.requests[-1]["messages"] if m["role"] == "user"][-1]["content"]
    assert (result.answer, result.status, result.sub_calls) == ("went on", "ok", 1)
    assert "SubCallError" in feedback and "malformed reply" in feedback
    (sub,) = [e for e in events if e["kind"] == "sub_call"]
    assert sub["ok"] is False and "malformed reply" in sub["error"]


def test_a_silent_model_server_is_reported_to_the_progress_sink_and_the_trace(tmp_path):
    progress: list = []
    with FakeModelServer(root_model=ROOT, models=[SUB], root=[{"delay_s": 0.45, "content": "FINAL(late)"}]) as server:
        result, _, events = go(tmp_path, server, events=progress, silence_s=0.1)
    assert result.answer == "late"
    waits = [data for kind, data in progress if kind == "model_wait"]
    assert len(waits) >= 2 and all("has been silent for" in w["message"] for w in waits)
    assert any(e["kind"] == "note" and "has been silent for" in e["text"] for e in events)


def test_the_total_wait_of_a_hanging_server_is_bounded_by_max_wait_s(tmp_path):
    with FakeModelServer(root_model=ROOT, models=[SUB], root=[{"delay_s": 3, "content": "FINAL(x)"}] * 5) as server:
        with pytest.raises(LLMError, match="max_wait_s=0.6 s in total"):
            go(tmp_path, server, timeout_s=0.25, max_retries=5, max_wait_s=0.6)


def test_a_silent_sub_call_is_reported_once_per_round_and_marked(tmp_path):
    progress: list = []
    root = ["```repl\nr = llm_query('x')\n```", "FINAL(done)"]
    with FakeModelServer(root_model=ROOT, models=[SUB], root=root, sub_delay_s=0.45) as server:
        result, _, events = go(tmp_path, server, events=progress, silence_s=0.1)
    assert result.answer == "done"
    waits = [data for kind, data in progress if kind == "model_wait"]
    assert waits and all(w["sub_call"] and w["message"].startswith("sub-call: ") for w in waits)
    assert len(waits) >= 2  # every 0.1 s while the sub-call waits 0.45 s
    assert any(e["kind"] == "note" and e["text"].startswith("sub-call: ") for e in events)


def test_a_batch_of_silent_sub_calls_is_one_report_per_round(tmp_path):
    """Eight concurrent prompts, all silent: each round is said once, not eight times."""
    progress: list = []
    root = ["```repl\nrs = llm_query_batched(['a'] * 8)\n```", "FINAL(done)"]

    class BatchSession(Session):
        def execute(self, code, timeout=None):
            if "llm_query_batched" in code:
                self.executed.append(code)
                return Execution(stdout=repr(self.handler({"op": "llm_query_batched", "prompts": ["p"] * 8})))
            return super().execute(code, timeout)

    with FakeModelServer(root_model=ROOT, models=[SUB], root=root, sub_delay_s=0.55) as server:
        settings = settings_from_mapping({"base_url": server.url, "root_model": ROOT, "sub_model": SUB,
                                          "trace_dir": str(tmp_path)})
        with OpenAICompatibleClient(settings.model, silence_report_s=0.2) as client:
            orch = Orchestrator(settings, client, progress=lambda kind, data: progress.append((kind, data)),
                                session_factory=lambda path: BatchSession())
            assert orch.run("q", None, trace_path=tmp_path / "t.jsonl").answer == "done"
    waits = [data for kind, data in progress if kind == "model_wait"]
    # 8 prompts silent for 0.4 s and more: 16 reports or more, one per prompt and round; at most one
    # per half interval (0.1 s) of wall time when they are merged
    assert 1 <= len(waits) < 8, [w["elapsed_s"] for w in waits]
