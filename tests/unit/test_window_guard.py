"""The window guard and the memo of sub-calls: a scripted llama.cpp-like server over real HTTP
(``/props``, ``/tokenize``, HTTP 400 past its window) and the real openai client."""

from __future__ import annotations

import socket
import threading

import pytest

from rlm.core.subcalls import SubCallHandler
from rlm.llm.base import ModelSettings, Usage
from rlm.llm.fake_server import FakeModelServer
from rlm.llm.openai_client import OpenAICompatibleClient
from rlm.llm.scripted import ScriptedClient
from rlm.llm.window import (
    CHARS_PER_TOKEN,
    COMPLETION_RESERVE_TOKENS,
    DEFAULT_WINDOW_TOKENS,
    TEMPLATE_TOKENS,
    Window,
    WindowGuard,
    estimate_tokens,
)
from rlm.sandbox.bridge import BridgeRefusal
from rlm.sandbox.protocol import Op

ROOT, SUB = "root-model", "sub-model"


@pytest.fixture
def make():
    servers: list[FakeModelServer] = []
    clients: list[OpenAICompatibleClient] = []

    def go(**server_kw) -> tuple[FakeModelServer, OpenAICompatibleClient]:
        server = FakeModelServer(root_model=ROOT, models=[SUB], sub=lambda p: f"answer to {len(p)} chars",
                                 **server_kw)
        client = OpenAICompatibleClient(ModelSettings(base_url=server.url, root_model=ROOT, sub_model=SUB,
                                                      max_retries=0), backoff_base_s=0.01)
        servers.append(server)
        clients.append(client)
        return server, client

    yield go
    for c in clients:
        c.close()
    for s in servers:
        s.close()


def handler(client, **kw) -> tuple[SubCallHandler, list[dict]]:
    events: list[dict] = []
    kw.setdefault("windows", {})
    h = SubCallHandler(client, sub_model=SUB, root_model=ROOT, temperature=0.0, enabled=True, max_calls=50,
                       max_chars=1_000_000, concurrency=4, on_call=events.append, deadline_s=20, **kw)
    return h, events


def sub_prompts(server: FakeModelServer) -> list[str]:
    return [r["messages"][-1]["content"] for r in server.requests if r["model"] == SUB]


# ------------------------------------------------------------------ where a window comes from
def test_the_server_window_is_read_from_props_once_per_run(make):
    server, client = make(n_ctx=4096)
    h, _ = handler(client)
    try:
        for i in range(3):
            h({"op": Op.LLM_QUERY, "prompt": f"question {i}"})
        window = h({"op": Op.WINDOW})
    finally:
        h.close()
    assert window["tokens"] == 4096 and window["source"] == "server"
    assert server.probes.count("/props") == 1  # asked once, however many sub-calls


def test_the_setting_wins_over_the_server_and_the_default_applies_when_nothing_answers(make):
    server, client = make(n_ctx=4096)
    guard = WindowGuard(client, {SUB: 2048})
    assert guard.window(SUB) == Window(2048, "setting model_windows")
    assert server.probes == []  # the setting is the user's word: no probe
    assert guard.window(ROOT) == Window(4096, "server")
    bare, bare_client = make()  # no /props, no /api/show
    assert WindowGuard(bare_client).window(SUB) == Window(DEFAULT_WINDOW_TOKENS, "default")
    assert bare.probes == ["/props", "/api/show"]


def test_a_probe_that_fails_never_fails_the_run() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = OpenAICompatibleClient(ModelSettings(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0))
    try:
        guard = WindowGuard(client)
        assert guard.window("m") == Window(DEFAULT_WINDOW_TOKENS, "default")
        assert client.count_tokens("m", "text") is None
    finally:
        client.close()


def test_ollama_show_gives_num_ctx_before_the_trained_length(make):
    _, client = make(show={"parameters": "stop \"<|im_end|>\"\nnum_ctx 6144",
                           "model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768}})
    assert client.context_window(SUB) == 6144
    _, client2 = make(show={"model_info": {"qwen2.context_length": 32768, "qwen2.embedding_length": 1536}})
    assert client2.context_window(SUB) == 32768
    _, client3 = make(show={"model_info": {"qwen2.context_length": "lots"}})
    assert client3.context_window(SUB) is None


def test_count_tokens_uses_tokenize_and_asks_a_server_without_one_once(make):
    server, client = make(n_ctx=4096)
    assert client.count_tokens(SUB, "x" * 401) == 101
    bare, bare_client = make()
    assert bare_client.count_tokens(SUB, "abc") is None
    assert bare_client.count_tokens(SUB, "abc") is None
    assert bare.probes.count("/tokenize") == 1


def test_estimate_is_conservative_for_ascii_and_counts_other_characters_one_each() -> None:
    assert estimate_tokens("a" * 300) == 100
    assert estimate_tokens("a" * 301) == 101
    assert estimate_tokens("日本語") == 3
    assert estimate_tokens("ab日") == 2


# ------------------------------------------------------------------ a prompt that cannot fit
def test_llm_query_past_the_window_is_refused_and_never_sent(make):
    server, client = make(n_ctx=4096)
    h, events = handler(client)
    big = "z" * 20_000  # 5,000 tokens for this server: it would answer HTTP 400
    try:
        with pytest.raises(BridgeRefusal) as refused:
            h({"op": Op.LLM_QUERY, "prompt": big})
        assert h({"op": Op.LLM_QUERY, "prompt": "small"})["text"] == "answer to 5 chars"
    finally:
        h.close()
    message = str(refused.value)
    for part in ("20,000 characters", "5,000 tokens", "4,096 tokens", "map_chunks", "Split the text",
                 "server's tokenizer"):
        assert part in message
    assert sub_prompts(server) == ["small"]  # the big one never reached the server
    assert server.oversized == 0
    assert h.calls == 1  # a refused prompt costs no sub-call
    refusals = [e for e in events if e.get("refused") == "window"]
    assert len(refusals) == 1 and refusals[0]["prompt_chars"] == 20_000 and not refusals[0]["ok"]


def test_the_tokenizer_decides_when_the_estimate_is_too_high(make):
    # 2048-token window: 2048 - 512 reserved - 64 template = 1472 tokens for a prompt.  5,000 characters
    # are 1,667 tokens by the estimate, 1,250 by this server's tokenizer: sent.
    prompt = "y" * 5_000
    window = Window(2048, "server")
    assert window.for_prompt == 2048 - min(COMPLETION_RESERVE_TOKENS, 512) - TEMPLATE_TOKENS
    assert estimate_tokens(prompt) > window.for_prompt >= FakeModelServer.tokens(prompt)
    server, client = make(n_ctx=2048)
    h, _ = handler(client)
    try:
        assert h({"op": Op.LLM_QUERY, "prompt": prompt})["text"] == "answer to 5000 chars"
    finally:
        h.close()
    assert sub_prompts(server) == [prompt]
    # without a tokenizer the conservative estimate stands: refused, not sent
    server2, client2 = make(n_ctx=2048, tokenize=False)
    h2, _ = handler(client2)
    try:
        with pytest.raises(BridgeRefusal, match=f"estimated at {CHARS_PER_TOKEN:g} characters a token"):
            h2({"op": Op.LLM_QUERY, "prompt": prompt})
    finally:
        h2.close()
    assert sub_prompts(server2) == []


def test_a_batch_slot_past_the_window_holds_an_error_and_the_others_are_answered(make):
    server, client = make(n_ctx=4096)
    h, _ = handler(client)
    try:
        texts = h({"op": Op.LLM_QUERY_BATCHED, "prompts": ["one", "w" * 30_000, "three"]})["texts"]
    finally:
        h.close()
    assert texts[0] == "answer to 3 chars" and texts[2] == "answer to 5 chars"
    assert texts[1].startswith("Error: the prompt does not fit") and "map_chunks" in texts[1]
    assert sorted(sub_prompts(server)) == ["one", "three"]
    assert h.calls == 2 and server.oversized == 0


def test_without_a_guard_the_server_refuses_it(make):
    """What the guard prevents: the same prompt sent unguarded fails at the server."""
    server, client = make(n_ctx=4096)
    h, _ = handler(client, windows=None)
    try:
        with pytest.raises(BridgeRefusal, match="sub-model failed"):
            h({"op": Op.LLM_QUERY, "prompt": "z" * 20_000})
    finally:
        h.close()
    assert server.oversized == 1


def test_the_window_op_gives_chunk_chars_that_fit(make):
    _, client = make(n_ctx=4096)
    h, _ = handler(client)
    try:
        window = h({"op": Op.WINDOW, "model": None})
    finally:
        h.close()
    assert window["model"] == SUB
    instruction = "Summarise this part."
    piece = "p" * (window["chunk_chars"] - len(instruction) - 100)
    assert estimate_tokens(f"{instruction}\n\nText (part 1 of 9):\n{piece}") <= window["prompt_tokens"]
    assert window["chunk_chars"] > 4_000  # bigger than the old fixed size for a 4k window


def test_the_window_op_without_a_guard_is_refused() -> None:
    h = SubCallHandler(ScriptedClient(["x"]), sub_model=SUB, temperature=0.0, enabled=True, max_calls=5,
                       max_chars=100, concurrency=1)
    with pytest.raises(BridgeRefusal, match="window is not known"):
        h({"op": Op.WINDOW})


# ------------------------------------------------------------------ the memo
def test_an_identical_sub_call_is_answered_from_memory_and_counted_memoised(make):
    server, client = make(n_ctx=4096)
    h, events = handler(client, memo=True)
    try:
        first = h({"op": Op.LLM_QUERY, "prompt": "same question"})["text"]
        second = h({"op": Op.LLM_QUERY, "prompt": "same question"})["text"]
        other = h({"op": Op.LLM_QUERY, "prompt": "same question", "model": ROOT})["text"]
    finally:
        h.close()
    assert first == second
    assert other  # another model is another call
    assert [r["model"] for r in server.requests] == [SUB, ROOT]
    assert h.calls == 2 and h.memoised == 1
    assert h.usage[SUB].calls == 1 and h.usage[SUB].memoised == 1 and h.usage[ROOT].memoised == 0
    assert [bool(e.get("memoised")) for e in events] == [False, True, False]
    assert h.usage[SUB].to_dict()["memoised"] == 1


def test_a_batch_sends_a_repeated_prompt_once_and_remembers_it(make):
    server, client = make(n_ctx=4096)
    h, _ = handler(client, memo=True)
    try:
        texts = h({"op": Op.LLM_QUERY_BATCHED, "prompts": ["a", "bb", "a", "a"]})["texts"]
        again = h({"op": Op.LLM_QUERY, "prompt": "bb"})["text"]
    finally:
        h.close()
    assert texts == ["answer to 1 chars", "answer to 2 chars", "answer to 1 chars", "answer to 1 chars"]
    assert again == "answer to 2 chars"
    assert sorted(sub_prompts(server)) == ["a", "bb"]
    assert h.calls == 2 and h.memoised == 3


def test_memo_off_sends_every_call(make):
    server, client = make(n_ctx=4096)
    h, _ = handler(client, memo=False)
    try:
        h({"op": Op.LLM_QUERY, "prompt": "q"})
        h({"op": Op.LLM_QUERY, "prompt": "q"})
        h({"op": Op.LLM_QUERY_BATCHED, "prompts": ["q", "q"]})
    finally:
        h.close()
    assert sub_prompts(server) == ["q"] * 4
    assert h.calls == 4 and h.memoised == 0


def test_a_failed_call_is_not_remembered(make):
    server, client = make(n_ctx=4096, sub_fail_when="flaky")
    h, _ = handler(client, memo=True)
    try:
        for _ in range(2):
            with pytest.raises(BridgeRefusal):
                h({"op": Op.LLM_QUERY, "prompt": "flaky one"})
    finally:
        h.close()
    assert sub_prompts(server) == ["flaky one", "flaky one"]
    assert h.memoised == 0


def test_the_memo_key_holds_the_temperature() -> None:
    client = ScriptedClient(lambda _m, _model: "ok")
    cold = SubCallHandler(client, sub_model=SUB, temperature=0.0, enabled=True, max_calls=5, max_chars=100,
                          concurrency=1, memo=True)
    warm = SubCallHandler(client, sub_model=SUB, temperature=0.7, enabled=True, max_calls=5, max_chars=100,
                          concurrency=1, memo=True)
    assert cold._key(SUB, "p") != warm._key(SUB, "p")
    assert cold._key(SUB, "p") != cold._key(ROOT, "p")
    cold.close()
    warm.close()


def test_one_probe_when_many_threads_ask_at_once(make):
    server, client = make(n_ctx=4096)
    guard = WindowGuard(client)
    seen: list[Window] = []
    threads = [threading.Thread(target=lambda: seen.append(guard.window(SUB))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [Window(4096, "server")] * 8
    assert server.probes.count("/props") == 1


def test_usage_adds_memoised() -> None:
    total = Usage()
    total.add(Usage(prompt_tokens=3, calls=1, memoised=2))
    total.add(Usage(memoised=1))
    assert total.to_dict() == {"prompt_tokens": 3, "completion_tokens": 0, "calls": 1, "memoised": 3}
