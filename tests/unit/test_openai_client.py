"""OpenAICompatibleClient against a real HTTP fake server (the real openai SDK underneath)."""

from __future__ import annotations

import asyncio
import socket
import time

import openai
import pytest

from rlm.errors import EmptyReply, LLMError, ModelAuthError, ModelNotFound, ModelUnreachable
from rlm.llm.base import ModelSettings
from rlm.llm.fake_server import FakeModelServer
from rlm.llm.openai_client import OpenAICompatibleClient, strip_think

ROOT, SUB = "root-model", "sub-model"
MSGS = [{"role": "user", "content": "What is the answer? " * 10}]


def make_client(url: str, **overrides) -> OpenAICompatibleClient:
    fields = {"base_url": url, "root_model": ROOT, "sub_model": SUB, "timeout_s": 5.0, "max_retries": 2}
    fields.update(overrides)
    return OpenAICompatibleClient(ModelSettings(**fields), backoff_base_s=0.001)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_plain_reply_sends_the_request_and_measures_latency():
    with FakeModelServer(root=["hello there"]) as server, make_client(server.url, temperature=0.3) as client:
        out = client.complete(MSGS, model=ROOT)
        assert out.text == "hello there"
        assert out.model == ROOT
        assert out.latency_s > 0
        (body,) = server.requests
        assert body["messages"] == MSGS and body["model"] == ROOT and body["temperature"] == 0.3
        assert "max_tokens" not in body
        client.complete(MSGS, model=ROOT, temperature=0.9, max_tokens=17)
        assert server.requests[1]["temperature"] == 0.9 and server.requests[1]["max_tokens"] == 17


def test_usage_is_recorded():
    with FakeModelServer(root=["x" * 40]) as server, make_client(server.url) as client:
        usage = client.complete(MSGS, model=ROOT).usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.calls) == (len(MSGS[0]["content"]) // 4, 10, 1)


def test_a_cost_the_server_reports_is_recorded_and_summed():
    with FakeModelServer(root=[{"content": "a", "cost": 0.25}, "b", {"content": "c", "cost": 0.5}]) as server, \
            make_client(server.url) as client:
        first, plain, third = (client.complete(MSGS, model=ROOT).usage for _ in range(3))
    assert (first.cost_usd, plain.cost_usd, third.cost_usd) == (0.25, None, 0.5)
    assert "cost_usd" not in plain.to_dict()
    first.add(plain)
    first.add(third)
    assert first.cost_usd == 0.75 and first.to_dict()["cost_usd"] == 0.75


def test_think_block_is_stripped():
    with FakeModelServer(root=[{"think": "let me reason\nat length", "content": "\nthe answer"}]) as server, \
            make_client(server.url) as client:
        assert client.complete(MSGS, model=ROOT).text == "the answer"


@pytest.mark.parametrize("raw, expected", [
    ("<think>a</think>b", "b"),
    ("<THINK>a</THINK> b <think>c</think>d", "b d"),
    ("reasoning without an opening tag</think>\nanswer", "answer"),
    ("  <think>cut off while thinking", ""),
    ("no thinking at all", "no thinking at all"),
])
def test_strip_think(raw, expected):
    assert strip_think(raw) == expected


def test_none_content_is_retried_once():
    with FakeModelServer(root=[{"content": None}, "second try"]) as server, make_client(server.url) as client:
        out = client.complete(MSGS, model=ROOT)
        assert out.text == "second try"
        assert len(server.requests) == 2 and out.usage.calls == 2


def test_none_twice_raises_empty_reply():
    steps = [{"content": None, "finish_reason": "length"}] * 2 + ["never reached"]
    with FakeModelServer(root=steps) as server, make_client(server.url) as client:
        with pytest.raises(EmptyReply) as err:
            client.complete(MSGS, model=ROOT)
        assert ROOT in str(err.value) and "length" in str(err.value) and "max_tokens" in err.value.hint
        assert len(server.requests) == 2


def test_think_only_twice_raises_empty_reply():
    with FakeModelServer(root=[{"think": "hmm", "content": ""}] * 2) as server, make_client(server.url) as client:
        with pytest.raises(EmptyReply, match="only <think> reasoning"):
            client.complete(MSGS, model=ROOT)


def test_server_error_then_success():
    with FakeModelServer(root=[{"status": 500}, "recovered"]) as server, make_client(server.url) as client:
        assert client.complete(MSGS, model=ROOT).text == "recovered"
        assert len(server.requests) == 2


def test_rate_limit_is_retried():
    with FakeModelServer(root=[{"status": 429}, {"status": 429}, "finally"]) as server, \
            make_client(server.url, max_retries=2) as client:
        assert client.complete(MSGS, model=ROOT).text == "finally"
        assert len(server.requests) == 3


@pytest.mark.parametrize("max_retries", [0, 2])
def test_retries_exhausted(max_retries):
    steps = [{"status": 503, "message": "overloaded"}] * 5
    with FakeModelServer(root=steps) as server, make_client(server.url, max_retries=max_retries) as client:
        with pytest.raises(LLMError) as err:
            client.complete(MSGS, model=ROOT)
        assert type(err.value) is LLMError
        assert "HTTP 503" in str(err.value) and "overloaded" in str(err.value)
        assert isinstance(err.value.__cause__, openai.APIStatusError)
        assert len(server.requests) == max_retries + 1


def test_client_error_is_not_retried_and_carries_the_server_message():
    with FakeModelServer(root=[{"status": 400, "message": "context too long"}, "unused"]) as server, \
            make_client(server.url) as client:
        with pytest.raises(LLMError, match="HTTP 400.*context too long"):
            client.complete(MSGS, model=ROOT)
        assert len(server.requests) == 1


def test_timeout_is_an_llm_error():
    with FakeModelServer(root=[{"delay_s": 1.0, "content": "late"}]) as server, \
            make_client(server.url, timeout_s=0.2, max_retries=0) as client:
        with pytest.raises(LLMError, match="did not answer within 0.2 s"):
            client.complete(MSGS, model=ROOT)


def test_unreachable_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with make_client(url, max_retries=1) as client:
        with pytest.raises(ModelUnreachable) as err:
            client.complete(MSGS, model=ROOT)
    assert url in str(err.value) and "2 attempts" in str(err.value)
    assert "ollama serve" in err.value.hint and "--base-url" in err.value.hint
    assert isinstance(err.value.__cause__, openai.APIConnectionError)


def test_closed_server_is_unreachable():
    server = FakeModelServer(root=["one"])
    with make_client(server.url, max_retries=0) as client:
        assert client.complete(MSGS, model=ROOT).text == "one"
        server.close()  # also drops the client's keep-alive connection
        with pytest.raises(ModelUnreachable):
            client.complete(MSGS, model=ROOT)


def test_unknown_model_lists_offered_models():
    with FakeModelServer(models=[SUB, "other"]) as server, make_client(server.url) as client:
        with pytest.raises(ModelNotFound) as err:
            client.complete(MSGS, model="no-such-model")
        msg = str(err.value)
        assert "'no-such-model'" in msg and f"{ROOT}, {SUB}, other" in msg
        assert "ollama pull no-such-model" in err.value.hint
        assert len(server.requests) == 1  # a 404 is not retried


def test_auth_refused_and_accepted():
    with FakeModelServer(root=["welcome"], api_key="s3cret") as server:
        with make_client(server.url) as client:
            with pytest.raises(ModelAuthError) as err:
                client.complete(MSGS, model=ROOT)
            assert "401" in str(err.value) and "OPENAI_API_KEY" in err.value.hint
            assert server.requests == []
        with make_client(server.url, api_key="s3cret") as client:
            assert client.complete(MSGS, model=ROOT).text == "welcome"


def test_placeholder_api_key_is_sent_when_none_is_set():
    with FakeModelServer(root=["ok"], api_key="not-needed") as server, make_client(server.url) as client:
        assert client.complete(MSGS, model=ROOT).text == "ok"


def test_list_models():
    with FakeModelServer(models=[SUB]) as server, make_client(server.url) as client:
        assert client.list_models() == [ROOT, SUB]


def test_async_gather_of_several_calls():
    with FakeModelServer(sub=lambda prompt: f"echo {prompt}", sub_delay_s=0.05) as server, \
            make_client(server.url) as client:
        async def run():
            return await asyncio.gather(*(
                client.acomplete([{"role": "user", "content": f"q{i}"}], model=SUB) for i in range(8)))

        results = asyncio.run(run())
        assert [r.text for r in results] == [f"echo q{i}" for i in range(8)]
        assert all(r.usage.calls == 1 and r.model == SUB for r in results)
        assert len(server.requests) == 8


def test_async_errors_are_translated_and_retried():
    with FakeModelServer(root=[{"status": 502}, "ok"], models=[SUB]) as server, make_client(server.url) as client:
        async def run():
            first = await client.acomplete(MSGS, model=ROOT)
            with pytest.raises(ModelNotFound, match=f"{ROOT}, {SUB}"):
                await client.acomplete(MSGS, model="missing")
            await client.aclose()
            return first

        assert asyncio.run(run()).text == "ok"


def test_close_after_async_use_in_a_finished_loop():
    with FakeModelServer() as server:
        client = make_client(server.url)
        asyncio.run(client.acomplete(MSGS, model=SUB))
        client.close()
        client.close()  # idempotent


# ------------------------------------------------------------------------------ malformed replies (issue 19 D)
MALFORMED_STEPS = [
    {"raw": '{"id": "x", "choices": [{"index": 0, "mess'},               # cut JSON: json.JSONDecodeError
    {"raw": "<html>bad gateway</html>", "content_type": "text/html"},   # not JSON at all
    {"raw": '{"choices": "nope"}'},                                      # JSON of the wrong shape
    {"raw": '{"choices": [{"message": 5}]}'},
    {"raw": "null"},
]


@pytest.mark.parametrize("step", MALFORMED_STEPS)
def test_a_malformed_reply_is_retried_like_a_transient_error(step):
    with FakeModelServer(root=[step, "after the hiccup"]) as server, make_client(server.url) as client:
        assert client.complete(MSGS, model=ROOT).text == "after the hiccup"
        assert len(server.requests) == 2


@pytest.mark.parametrize("step", MALFORMED_STEPS)
def test_malformed_replies_every_time_are_a_model_server_error(step):
    with FakeModelServer(root=[step] * 5) as server, make_client(server.url, max_retries=2) as client:
        with pytest.raises(LLMError) as err:
            client.complete(MSGS, model=ROOT)
        assert type(err.value) is LLMError  # exit 4, never "a bug in rlm"
        assert "malformed reply" in str(err.value) and "3 attempts" in str(err.value)
        assert server.url in str(err.value) and err.value.hint
        assert len(server.requests) == 3


def test_async_malformed_reply_is_retried_then_translated():
    with FakeModelServer(models=[SUB], sub_raw_when="BROKEN") as server, make_client(server.url) as client:
        async def run():
            ok = await client.acomplete([{"role": "user", "content": "fine"}], model=SUB)
            with pytest.raises(LLMError, match="malformed reply"):
                await client.acomplete([{"role": "user", "content": "BROKEN"}], model=SUB)
            await client.aclose()
            return ok

        assert asyncio.run(run()).text == "sub-answer"
        assert len(server.requests) == 1 + 3


# ------------------------------------------------------------------------------ silence and total wait (issue 19 F)
def test_silence_is_reported_while_the_server_is_slow_and_retried():
    events: list[tuple[str, dict]] = []
    steps = [{"delay_s": 0.5, "content": "late"}, {"delay_s": 0.35, "content": "late again"}]
    with FakeModelServer(root=steps) as server:
        client = OpenAICompatibleClient(
            ModelSettings(base_url=server.url, root_model=ROOT, timeout_s=0.3, max_retries=1),
            backoff_base_s=0.001, silence_report_s=0.1, on_wait=lambda kind, data: events.append((kind, data)))
        with client, pytest.raises(LLMError, match="did not answer within 0.3 s"):
            client.complete(MSGS, model=ROOT)
    waits = [d for k, d in events if k == "model_wait"]
    retries = [d for k, d in events if k == "model_retry"]
    assert len(retries) == 1 and retries[0]["attempt"] == 2 and "retrying" in retries[0]["message"]
    assert len(waits) >= 3, events
    assert waits[0]["attempt"] == 1 and waits[-1]["attempt"] == 2
    assert [w["silent_s"] for w in waits] == sorted(w["silent_s"] for w in waits)
    assert "has been silent for" in waits[-1]["message"] and "attempt 2 of 2" in waits[-1]["message"]


def test_report_waits_sets_the_listener_for_the_calls_in_its_context():
    from rlm.llm.base import report_waits

    events: list[str] = []
    with FakeModelServer(root=[{"delay_s": 0.35, "content": "slow"}, "fast"]) as server, \
            make_client(server.url) as client:
        client.silence_report_s = 0.1
        with report_waits(lambda kind, data: events.append(kind)):
            assert client.complete(MSGS, model=ROOT).text == "slow"
        seen = len(events)
        assert seen >= 2 and set(events) == {"model_wait"}
        assert client.complete(MSGS, model=ROOT).text == "fast"
        assert len(events) == seen  # outside the context nobody is told


def test_total_wait_is_bounded_by_max_wait_s():
    steps = [{"delay_s": 2.0, "content": "too late"}] * 6
    with FakeModelServer(root=steps) as server, \
            make_client(server.url, timeout_s=0.4, max_retries=5, max_wait_s=1.0) as client:
        start = time.monotonic()
        with pytest.raises(LLMError) as err:
            client.complete(MSGS, model=ROOT)
        elapsed = time.monotonic() - start
    assert "max_wait_s=1 s in total" in str(err.value) and "RLM_MAX_WAIT" in err.value.hint
    assert elapsed < 1.8, f"waited {elapsed:.2f} s with max_wait_s=1"
    assert 2 <= len(server.requests) <= 4


def test_max_wait_s_zero_means_no_total_limit():
    steps = [{"delay_s": 0.5, "content": "late"}, "ok"]
    with FakeModelServer(root=steps) as server, \
            make_client(server.url, timeout_s=0.2, max_retries=1, max_wait_s=0) as client:
        assert client.complete(MSGS, model=ROOT).text == "ok"


# ------------------------------------------------------------------------------ raw scripted HTTP
class RawHTTP:
    """An HTTP server on 127.0.0.1 that answers each request with the next raw response (bytes, sent
    as they are, then the connection is closed): for replies the fake server cannot make."""

    def __init__(self, responses: list[bytes]) -> None:
        import threading

        self.responses = list(responses)
        self.requests = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
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
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests += 1
                conn.sendall(self.responses.pop(0) if self.responses else _json(200, _completion("spare")))

    def close(self) -> None:
        self.sock.close()


def _completion(text: str) -> bytes:
    import json

    return json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": ROOT,
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


def _json(status: int, body: bytes, *, headers: str = "", length: int | None = None) -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n{headers}"
            f"Content-Length: {len(body) if length is None else length}\r\n\r\n").encode() + body


RATE_LIMITED = b'{"error": {"message": "slow down", "type": "rate_limit_error", "code": null}}'


# ------------------------------------------------------------------------------ Retry-After (D6)
def test_retry_after_is_honoured_beyond_the_backoff_cap_and_the_wait_is_shown():
    """The plan that both clients follow waits what the server asks (30 s here, above the 8 s
    backoff cap), without sleeping in the test: the plan is driven by hand."""
    from rlm.llm.openai_client import _CALL, _SLEEP

    server = RawHTTP([_json(429, RATE_LIMITED, headers="Retry-After: 30\r\n")])
    told: list[tuple[str, dict]] = []
    client = OpenAICompatibleClient(ModelSettings(base_url=server.url, root_model=ROOT, max_retries=3,
                                                  max_wait_s=600), on_wait=lambda k, d: told.append((k, d)))
    try:
        clock = client._clock(ROOT)
        plan = client._retry_plan(ROOT, clock)
        kind, timeout = next(plan)
        assert kind == _CALL
        try:
            client._client.chat.completions.create(model=ROOT, messages=MSGS, timeout=timeout)
        except openai.RateLimitError as exc:
            kind, delay = plan.send((False, exc))
        assert kind == _SLEEP and 30 <= delay <= 31
        assert told[-1][0] == "model_retry" and told[-1][1]["retry_after_s"] == 30
        assert told[-1][1]["message"].startswith("model server asked to retry after 30 s; waiting")
        assert plan.send(None) == (_CALL, pytest.approx(timeout, abs=1))  # then it tries again
        with pytest.raises(StopIteration) as done:
            plan.send((True, "ok"))
        assert done.value.value == "ok"
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize("use_async", [False, True])
def test_retry_after_is_waited_then_the_call_succeeds(use_async):
    server = RawHTTP([_json(429, RATE_LIMITED, headers="Retry-After: 1.5\r\n"), _json(200, _completion("done"))])
    told: list[tuple[str, dict]] = []
    client = OpenAICompatibleClient(ModelSettings(base_url=server.url, root_model=ROOT, max_retries=2,
                                                  max_wait_s=60), backoff_base_s=0.001,
                                    on_wait=lambda k, d: told.append((k, d)))
    try:
        started = time.monotonic()
        if use_async:
            text = asyncio.run(client.acomplete(MSGS, model=ROOT)).text
        else:
            text = client.complete(MSGS, model=ROOT).text
        assert text == "done" and time.monotonic() - started >= 1.5  # it waited what the server asked
        assert [k for k, _ in told] == ["model_retry"] and "asked to retry after 1.5 s" in told[0][1]["message"]
    finally:
        client.close()
        server.close()


def test_a_retry_after_past_what_is_left_of_max_wait_gives_up_at_once_and_says_why():
    server = RawHTTP([_json(429, RATE_LIMITED, headers="Retry-After: 30\r\n")])
    client = OpenAICompatibleClient(ModelSettings(base_url=server.url, root_model=ROOT, max_retries=3,
                                                  max_wait_s=5))
    try:
        started = time.monotonic()
        with pytest.raises(LLMError, match=r"asked to retry .* after 30 s, more than the \d+ s left of max_wait_s=5"):
            client.complete(MSGS, model=ROOT)
        assert time.monotonic() - started < 4 and server.requests == 1
    finally:
        client.close()
        server.close()


def test_retry_after_as_an_http_date_is_understood():
    from email.utils import formatdate

    from rlm.llm.openai_client import _retry_after

    class Exc:
        class response:  # noqa: N801 - shaped like the SDK's exception
            headers = {"retry-after": formatdate(time.time() + 20, usegmt=True)}

    assert 17 <= (_retry_after(Exc()) or 0) <= 21  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ truncated bodies (D13)
@pytest.mark.parametrize("use_async", [False, True])
def test_a_body_cut_mid_way_is_a_truncated_reply_not_an_unreachable_server(use_async):
    from rlm.errors import TruncatedReply

    cut = _json(200, _completion("half of it")[:40], length=500)  # says 500 bytes, sends 40, closes
    chunked = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"28\r\n" + _completion("x")[:40] + b"\r\n")  # one chunk, then the connection closes
    server = RawHTTP([cut, chunked, cut])
    client = make_client(server.url, max_retries=2)
    try:
        with pytest.raises(TruncatedReply) as err:
            asyncio.run(client.acomplete(MSGS, model=ROOT)) if use_async else client.complete(MSGS, model=ROOT)
        message = str(err.value)
        assert "cut off before its end" in message and "after 3 attempts" in message
        assert not isinstance(err.value, ModelUnreachable) and "cannot reach" not in message
        assert "ollama" not in (err.value.hint or "").lower()
        assert server.requests == 3  # a cut reply is retried like other transient failures
    finally:
        client.close()
        server.close()


def test_a_cut_reply_then_a_whole_one_succeeds():
    server = RawHTTP([_json(200, _completion("half")[:30], length=400), _json(200, _completion("whole"))])
    client = make_client(server.url)
    try:
        assert client.complete(MSGS, model=ROOT).text == "whole"
    finally:
        client.close()
        server.close()
