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
    h, _ = handler(client, allowed_models=["other"])
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
    with pytest.raises(BridgeRefusal, match="the sub-model failed: the model server could not be reached") as info:
        h({"op": "llm_query", "prompt": "q"})
    assert "http://x" not in str(info.value)  # the host's URL is not the model's business (A14)
    assert events[-1]["ok"] is False and "cannot reach" in events[-1]["error"] and "http://x" in events[-1]["error"]
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
    assert texts[1] == "Error: the model server could not be reached"
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


# ------------------------------------------------------------------------------ model names (A10)
@pytest.mark.parametrize("model, why", [("x" * 7_000_000, "too long"), ("gpt-4o\x1b]0;pwned\x07", "not one"),
                                        ("other", "not one"), (["sub"], "must be a string")])
def test_only_the_runs_models_may_be_named_and_the_refusal_quotes_a_short_clean_prefix(model, why):
    client = ScriptedClient(lambda msgs, model: "never")
    h, events = handler(client, root_model="root", allowed_models=["extra"])
    with pytest.raises(BridgeRefusal, match=why) as info:
        h({"op": "llm_query", "prompt": "x", "model": model})
    text = str(info.value)
    assert len(text) < 300 and "\x1b" not in text and "\x07" not in text
    with pytest.raises(BridgeRefusal, match=why):
        h({"op": "llm_query_batched", "prompts": ["a"], "model": model})
    assert client.calls == [] and events == [] and h.calls == 0  # nothing sent, logged or counted


def test_root_sub_and_configured_models_are_allowed():
    client = ScriptedClient(lambda msgs, model: model)
    h, _ = handler(client, root_model="root", allowed_models=["extra"])
    for name in ("root", "sub", "extra"):
        assert h({"op": "llm_query", "prompt": "x", "model": name}) == {"text": name}


def test_a_name_of_exactly_200_characters_is_checked_against_the_list_not_refused_for_length():
    long_name = "m" * 200
    h, _ = handler(ScriptedClient(lambda msgs, model: model), allowed_models=[long_name])
    assert h({"op": "llm_query", "prompt": "x", "model": long_name}) == {"text": long_name}
    with pytest.raises(BridgeRefusal, match="too long"):
        h({"op": "llm_query", "prompt": "x", "model": long_name + "m"})


# ------------------------------------------------------------------------------ redaction (A14)
def test_model_errors_shown_to_the_model_carry_no_host_url_or_model_list():
    from rlm.errors import LLMError, ModelNotFound

    failures = [ModelNotFound("the server at http://10.1.2.3:8000/v1 does not offer model 'sub' (HTTP 404); "
                              "it offers: secret-model-a, secret-model-b"),
                LLMError("the model server at http://10.1.2.3:8000/v1 failed on model 'sub' (HTTP 500): "
                         "upstream 10.9.9.9:5000 is down; available models: a, b")]
    for exc in failures:
        h, events = handler(ScriptedClient([exc]))
        with pytest.raises(BridgeRefusal) as info:
            h({"op": "llm_query", "prompt": "q"})
        shown = str(info.value)
        for leak in ("10.1.2.3", "http://", "secret-model", "10.9.9.9", "a, b"):
            assert leak not in shown, shown
        assert "10.1.2.3" in events[-1]["error"]  # the host's own trace keeps the whole message
        h2, _ = handler(ScriptedClient([exc]))
        texts = h2({"op": "llm_query_batched", "prompts": ["q"]})["texts"]
        assert texts[0].startswith("Error: ") and "10.1.2.3" not in texts[0] and "secret-model" not in texts[0]


# ------------------------------------------------------------------------------ deadlines (D1)
class _HangingHTTPServer:
    """An HTTP server on 127.0.0.1 that reads requests and never answers; records closed connections."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted = 0
        self.closed = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:  # the client closed the connection: the request was cancelled
                    with self.lock:
                        self.closed += 1
                    return

    def close(self) -> None:
        self.sock.close()


def _hanging_client(server: _HangingHTTPServer):
    from rlm.llm.base import ModelSettings
    from rlm.llm.openai_client import OpenAICompatibleClient

    return OpenAICompatibleClient(ModelSettings(base_url=server.url, root_model="root", timeout_s=120,
                                                max_wait_s=600))


def test_a_hung_sub_call_is_cancelled_at_its_deadline_and_its_connection_closed():
    server = _HangingHTTPServer()
    client = _hanging_client(server)
    h, events = handler(client, deadline_s=0.5)
    started = time.monotonic()
    with pytest.raises(BridgeRefusal, match=r"timed out after 0.5 s") as info:
        h({"op": "llm_query", "prompt": "q"})
    took = time.monotonic() - started
    assert took < 5, took  # not the request timeout (120 s), not max_wait_s (600 s)
    assert "127.0.0.1" not in str(info.value)
    assert events[-1]["ok"] is False and "timed out" in events[-1]["error"] and h.calls == 1
    deadline = time.monotonic() + 5
    while server.closed < server.accepted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.accepted >= 1 and server.closed == server.accepted  # the HTTP request was cancelled
    h.close()
    client.close()
    server.close()


def test_each_slot_of_a_batch_gets_the_deadline_and_the_others_answer():
    class HalfHanging(SlowAsyncClient):
        async def acomplete(self, messages, *, model, temperature=None, max_tokens=None):
            if "HANG" in messages[-1]["content"]:
                await asyncio.sleep(3600)
            return await super().acomplete(messages, model=model, temperature=temperature)

    h, events = handler(HalfHanging(), deadline_s=0.3)
    texts = h({"op": "llm_query_batched", "prompts": ["q 1", "HANG 2", "q 3"]})["texts"]
    assert texts[0] == "answer 1" and texts[2] == "answer 3"
    assert texts[1].startswith("Error: the sub-call timed out after 0.3 s")
    h.close()


def test_the_bridge_deadline_of_a_request_follows_the_handlers():
    h, _ = handler(deadline_s=10, concurrency=4)
    assert h.deadline_for({"op": "llm_query", "prompt": "x"}) == pytest.approx(12)
    assert h.deadline_for({"op": "llm_query_batched", "prompts": ["p"] * 9}) == pytest.approx(3 * 10 + 2)
    assert h.deadline_for({"op": "rlm_query", "prompt": "x"}) == pytest.approx(12)  # no child: a plain call
    with_child, _ = handler(deadline_s=10, child=lambda p, c: ("a", {}))
    assert with_child.deadline_for({"op": "rlm_query", "prompt": "x"}) is None  # bounded by its own budgets
    assert handler()[0].deadline_for({"op": "llm_query", "prompt": "x"}) is None  # no deadline set


# ------------------------------------------------------------------------------ children (A6)
def test_at_most_max_children_child_runs_at_once_the_rest_wait_their_turn():
    lock = threading.Lock()
    running, peak, done = [0], [0], []

    def child(prompt, context):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.1)
        with lock:
            running[0] -= 1
            done.append(prompt)
        return f"child {prompt}", {}

    h, _ = handler(child=child, deadline_s=30)
    threads = [_in_thread(h, {"op": "rlm_query", "prompt": f"p{i}"}) for i in range(10)]
    for thread, _out in threads:
        thread.join(timeout=10)
    assert peak[0] == 2 and len(done) == 10
    assert sorted(out[0]["text"] for _t, out in threads) == sorted(f"child p{i}" for i in range(10))
    assert h.calls == 10


def test_a_child_call_that_waits_past_the_deadline_is_refused_clearly():
    started, release = threading.Event(), threading.Event()

    def child(prompt, context):
        started.set()
        release.wait(10)
        return "late", {}

    h, _ = handler(child=child, deadline_s=0.3, max_children=1)
    first, first_out = _in_thread(h, {"op": "rlm_query", "prompt": "a"})
    assert started.wait(5)
    with pytest.raises(BridgeRefusal, match=r"1 child runs are already running \(at most 1 at once\)"):
        h({"op": "rlm_query", "prompt": "b"})
    release.set()
    first.join(timeout=5)
    assert first_out == [{"text": "late"}] and h.calls == 1  # the refused one cost nothing
