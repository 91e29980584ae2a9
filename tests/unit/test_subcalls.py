"""SubCallHandler: what llm_query / llm_query_batched / rlm_query do on the host, within budgets."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rlm.core.subcalls import SubCallHandler
from rlm.errors import ModelUnreachable, RLMError
from rlm.llm.base import Completion, ModelClient, Usage
from rlm.llm.scripted import ScriptedClient
from rlm.sandbox.bridge import BridgeRefusal


def handler(client: ModelClient | None = None, **kw) -> tuple[SubCallHandler, list[dict]]:
    events: list[dict] = []
    opts = dict(sub_model="sub", temperature=0.0, enabled=True, max_calls=100, max_chars=1000, concurrency=4,
                on_call=events.append)
    opts.update(kw)
    return SubCallHandler(client or ScriptedClient(lambda msgs, model: f"echo:{msgs[-1]['content']}"), **opts), events


class SlowAsyncClient(ModelClient):
    """Async replies that finish in reverse order; tracks how many run at once; 'FAIL' prompts fail."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def complete(self, messages, *, model, temperature=None, max_tokens=None):
        raise AssertionError("batches must use the async path")

    async def acomplete(self, messages, *, model, temperature=None, max_tokens=None):
        prompt = messages[-1]["content"]
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            n = int(prompt.split()[-1])
            await asyncio.sleep(0.002 * (20 - n))  # later prompts finish first
            if "FAIL" in prompt:
                raise ModelUnreachable("cannot reach the model server at http://x/v1")
            return Completion(text=f"answer {n}", model=model, usage=Usage(3, 2, 1))
        finally:
            with self.lock:
                self.in_flight -= 1

    def list_models(self):
        return ["sub"]


# ------------------------------------------------------------------------------ llm_query
def test_llm_query_returns_the_sub_model_text_and_records_usage():
    client = ScriptedClient(lambda msgs, model: "forty-two", models=["sub"])
    h, events = handler(client)
    assert h({"op": "llm_query", "prompt": "what?"}) == {"text": "forty-two"}
    assert h.calls == 1
    assert client.calls[0][0] == "sub"
    assert client.calls[0][1] == [{"role": "user", "content": "what?"}]
    assert h.usage["sub"].calls == 1
    assert events == [dict(events[0], model="sub", prompt_chars=5, reply_chars=9, ok=True, error=None)]


def test_llm_query_model_argument_overrides_the_sub_model():
    client = ScriptedClient(lambda msgs, model: model, models=["sub", "other"])
    h, _ = handler(client)
    assert h({"op": "llm_query", "prompt": "x", "model": "other"}) == {"text": "other"}
    assert h({"op": "llm_query", "prompt": "x", "model": None}) == {"text": "sub"}
    assert set(h.usage) == {"sub", "other"}


def test_disabled_sub_calls_are_refused_with_a_clear_message():
    client = ScriptedClient(lambda msgs, model: "never")
    h, _ = handler(client, enabled=False)
    for request in ({"op": "llm_query", "prompt": "x"}, {"op": "llm_query_batched", "prompts": ["a"]}):
        with pytest.raises(BridgeRefusal, match=r"disabled.*ENABLE_SUB_CALLS=false"):
            h(request)
    assert client.calls == [] and h.calls == 0


def test_call_budget_exceeded_is_refused_with_counts():
    h, _ = handler(max_calls=2)
    h({"op": "llm_query", "prompt": "1"})
    h({"op": "llm_query", "prompt": "2"})
    with pytest.raises(BridgeRefusal) as info:
        h({"op": "llm_query", "prompt": "3"})
    assert "sub-call budget exceeded" in str(info.value)
    assert "MAX_SUB_CALLS=2" in str(info.value)
    assert "0 of" in str(info.value)
    assert h.calls == 2


def test_a_batch_larger_than_the_budget_left_is_refused_whole():
    client = ScriptedClient(lambda msgs, model: "x")
    h, _ = handler(client, max_calls=3)
    h({"op": "llm_query", "prompt": "1"})
    with pytest.raises(BridgeRefusal, match=r"3 call\(s\) asked, 2 of MAX_SUB_CALLS=3 left"):
        h({"op": "llm_query_batched", "prompts": ["a", "b", "c"]})
    assert h.calls == 1 and len(client.calls) == 1


def test_too_long_prompt_is_refused_and_costs_no_budget():
    client = ScriptedClient(lambda msgs, model: "x")
    h, _ = handler(client, max_chars=10)
    with pytest.raises(BridgeRefusal, match=r"prompt of 11 characters exceeds MAX_SUB_CALL_CHARS=10"):
        h({"op": "llm_query", "prompt": "x" * 11})
    with pytest.raises(BridgeRefusal, match="MAX_SUB_CALL_CHARS=10"):
        h({"op": "llm_query_batched", "prompts": ["ok", "y" * 11]})
    assert h.calls == 0 and client.calls == []
    assert h({"op": "llm_query", "prompt": "x" * 10}) == {"text": "x"}


@pytest.mark.parametrize("request_", [{"op": "llm_query", "prompt": 5},
                                      {"op": "llm_query_batched", "prompts": "not a list"},
                                      {"op": "llm_query_batched", "prompts": ["ok", None]},
                                      {"op": "format_disk"}])
def test_malformed_requests_are_refused(request_):
    h, _ = handler()
    with pytest.raises(BridgeRefusal):
        h(request_)
    assert h.calls == 0


def test_model_errors_become_refusals_the_repl_can_show():
    client = ScriptedClient([ModelUnreachable("cannot reach the model server at http://x/v1")])
    h, events = handler(client)
    with pytest.raises(BridgeRefusal, match="the sub-model failed: cannot reach the model server"):
        h({"op": "llm_query", "prompt": "q"})
    assert events[-1]["ok"] is False and "cannot reach" in events[-1]["error"]
    assert h.calls == 1  # an attempted call counts against the budget


# ------------------------------------------------------------------------------ batches
def test_batched_results_come_back_in_order_with_bounded_concurrency():
    client = SlowAsyncClient()
    h, events = handler(client, concurrency=3)
    prompts = [f"question {i}" for i in range(10)]
    reply = h({"op": "llm_query_batched", "prompts": prompts})
    assert reply == {"texts": [f"answer {i}" for i in range(10)]}
    assert 1 < client.max_in_flight <= 3
    assert h.calls == 10 and len(events) == 10
    assert h.usage["sub"].calls == 10 and h.usage["sub"].prompt_tokens == 30


def test_a_failed_slot_is_an_error_string_and_the_others_succeed():
    client = SlowAsyncClient()
    h, events = handler(client)
    reply = h({"op": "llm_query_batched", "prompts": ["q 0", "FAIL 1", "q 2"]})
    texts = reply["texts"]
    assert texts[0] == "answer 0" and texts[2] == "answer 2"
    assert texts[1].startswith("Error: ") and "cannot reach the model server" in texts[1]
    assert sorted(e["ok"] for e in events) == [False, True, True]
    assert h.calls == 3


def test_empty_batch_is_fine():
    h, _ = handler()
    assert h({"op": "llm_query_batched", "prompts": []}) == {"texts": []}


def test_concurrent_requests_never_overspend_the_budget():
    h, _ = handler(max_calls=25)
    refused = []

    def worker():
        for _ in range(10):
            try:
                h({"op": "llm_query", "prompt": "p"})
            except BridgeRefusal:
                refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert h.calls == 25 and len(refused) == 25


# ------------------------------------------------------------------------------ rlm_query
def test_rlm_query_at_max_depth_is_a_plain_sub_call_with_the_context_appended():
    client = ScriptedClient(lambda msgs, model: msgs[-1]["content"])
    h, _ = handler(client, child=None)
    reply = h({"op": "rlm_query", "prompt": "summarise", "context": "some text"})
    assert reply["text"].startswith("summarise") and "some text" in reply["text"]
    assert h.calls == 1


def test_rlm_query_runs_the_child_and_counts_one_call():
    seen = []
    h, events = handler(child=lambda prompt, context: seen.append((prompt, context)) or ("child says 3", {}))
    assert h({"op": "rlm_query", "prompt": "count", "context": "abc"}) == {"text": "child says 3"}
    assert seen == [("count", "abc")]
    assert h.calls == 1 and events[-1]["model"] == "rlm_query" and events[-1]["ok"]


def test_rlm_query_child_failure_is_a_refusal():
    def child(prompt, context):
        raise RLMError("the child could not start")

    h, _ = handler(child=child)
    with pytest.raises(BridgeRefusal, match="the child RLM failed: the child could not start"):
        h({"op": "rlm_query", "prompt": "p"})


def test_rlm_query_needs_text_context():
    h, _ = handler(child=lambda p, c: ("x", {}))
    with pytest.raises(BridgeRefusal, match="context must be text"):
        h({"op": "rlm_query", "prompt": "p", "context": {"a": 1}})



def test_batches_over_real_http_leave_no_unclosed_connections():
    import gc
    import warnings

    from rlm.llm.base import ModelSettings
    from rlm.llm.fake_server import FakeModelServer
    from rlm.llm.openai_client import OpenAICompatibleClient

    gc.collect()
    with FakeModelServer(models=["sub"]) as server, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        client = OpenAICompatibleClient(ModelSettings(base_url=server.url, root_model="root-model"))
        h, _ = handler(client)
        for _ in range(3):
            assert h({"op": "llm_query_batched", "prompts": ["a", "b"]}) == {"texts": ["sub-answer"] * 2}
        client.close()
        gc.collect()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)
                and "unclosed" in str(w.message)]
    assert unclosed == []


# ------------------------------------------------------------------------------ cancellation
class HangingClient(ModelClient):
    """Async replies that never come until cancelled; counts the cancellations it saw."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.cancelled = 0
        self.lock = threading.Lock()

    def complete(self, messages, *, model, temperature=None, max_tokens=None):
        raise AssertionError("sub-calls must run on the handler's loop")

    async def acomplete(self, messages, *, model, temperature=None, max_tokens=None):
        self.started.release()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            with self.lock:
                self.cancelled += 1
            raise
        raise AssertionError("unreachable")

    def list_models(self):
        return ["sub"]


def _in_thread(h: SubCallHandler, request: dict) -> tuple[threading.Thread, list]:
    out: list = []

    def go() -> None:
        try:
            out.append(h(request))
        except BridgeRefusal as exc:
            out.append(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, out


@pytest.mark.parametrize("request_, n", [({"op": "llm_query", "prompt": "x"}, 1),
                                         ({"op": "llm_query_batched", "prompts": ["a", "b", "c"]}, 3)])
def test_cancel_stops_the_requests_in_flight_and_gives_their_budget_back(request_, n):
    client = HangingClient()
    h, events = handler(client, max_calls=5)
    thread, out = _in_thread(h, request_)
    for _ in range(n):
        assert client.started.acquire(timeout=5)
    assert h.calls == n and h.in_flight == 1
    h.cancel()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert isinstance(out[0], BridgeRefusal) and "cancelled" in str(out[0])
    assert h.calls == 0 and events == [] and h.in_flight == 0  # not counted
    deadline = time.monotonic() + 5
    while client.cancelled < n and time.monotonic() < deadline:  # cancelled on the loop, just after
        time.sleep(0.01)
    assert client.cancelled == n  # the model requests themselves were cancelled
    h.close()


def test_a_call_that_finishes_after_its_cell_was_abandoned_is_not_counted():
    gate = threading.Event()

    class LateClient(ScriptedClient):
        async def acomplete(self, messages, *, model, temperature=None, max_tokens=None):
            await asyncio.get_running_loop().run_in_executor(None, gate.wait, 5)
            return Completion(text="late", model=model, usage=Usage(1, 1, 1))

    h, events = handler(LateClient(lambda msgs, model: "late"))
    thread, out = _in_thread(h, {"op": "llm_query", "prompt": "x"})
    deadline = time.monotonic() + 5
    while h.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    with h._lock:  # the cell is abandoned while the reply is on its way (what cancel() does first)
        h._epoch += 1
    gate.set()
    thread.join(timeout=5)
    assert isinstance(out[0], BridgeRefusal)
    assert h.calls == 0 and events == [] and not h.usage
    h.close()


def test_close_cancels_what_is_in_flight_and_refuses_new_calls():
    client = HangingClient()
    h, _ = handler(client)
    thread, out = _in_thread(h, {"op": "llm_query", "prompt": "x"})
    assert client.started.acquire(timeout=5)
    started = time.monotonic()
    h.close()
    thread.join(timeout=5)
    assert time.monotonic() - started < 5
    assert isinstance(out[0], BridgeRefusal) and h.calls == 0 and client.cancelled == 1
    with pytest.raises(BridgeRefusal, match="run is over"):
        h({"op": "llm_query", "prompt": "y"})
