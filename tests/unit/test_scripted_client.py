"""ScriptedClient: the in-process fake model for loop tests."""

from __future__ import annotations

import asyncio
import threading

import pytest

from rlm.errors import LLMError, ModelUnreachable
from rlm.llm.scripted import ScriptedClient


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_replies_are_consumed_in_order_and_calls_recorded():
    client = ScriptedClient(["one", "two"])
    assert client.complete(user("a"), model="m1").text == "one"
    out = client.complete(user("b"), model="m2")
    assert (out.text, out.model) == ("two", "m2")
    assert client.calls == [("m1", user("a")), ("m2", user("b"))]
    assert client.remaining == 0


def test_usage_is_rough_token_count():
    out = ScriptedClient(["x" * 41]).complete(user("y" * 80), model="m")
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.calls) == (20, 10, 1)


def test_exception_reply_is_raised_and_script_continues():
    client = ScriptedClient([ModelUnreachable("down"), "after"])
    with pytest.raises(ModelUnreachable, match="down"):
        client.complete(user("a"), model="m")
    assert client.complete(user("a"), model="m").text == "after"
    assert len(client.calls) == 2


def test_running_out_raises_llm_error():
    client = ScriptedClient(["only"])
    client.complete(user("a"), model="m")
    with pytest.raises(LLMError, match="ran out of replies at call 2"):
        client.complete(user("a"), model="m")


def test_callable_sees_messages_and_model():
    client = ScriptedClient(lambda messages, model: f"{model}:{messages[-1]['content']}")
    assert client.complete(user("hi"), model="sub").text == "sub:hi"
    assert client.remaining == 0 and client.calls == [("sub", user("hi"))]


def test_recorded_messages_are_a_snapshot():
    client = ScriptedClient(["r"])
    messages = user("before")
    client.complete(messages, model="m")
    messages[0]["content"] = "after"
    messages.append({"role": "assistant", "content": "x"})
    assert client.calls[0][1] == user("before")


def test_thread_safe_consumption():
    client = ScriptedClient([str(i) for i in range(200)])
    got: list[str] = []
    lock = threading.Lock()

    def worker():
        for _ in range(25):
            text = client.complete(user("q"), model="m").text
            with lock:
                got.append(text)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got, key=int) == [str(i) for i in range(200)]
    assert len(client.calls) == 200


def test_async_and_misc():
    client = ScriptedClient(["a", "b"], models=["x", "y"])

    async def run():
        return await asyncio.gather(client.acomplete(user("1"), model="m"), client.acomplete(user("2"), model="m"))

    assert sorted(c.text for c in asyncio.run(run())) == ["a", "b"]
    assert client.list_models() == ["x", "y"]
    with client:
        pass
    assert client.closed
