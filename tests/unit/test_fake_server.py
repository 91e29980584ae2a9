"""FakeModelServer: a real OpenAI-compatible HTTP server with scripted behaviour."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import rlm
from rlm.llm.base import ModelSettings
from rlm.llm.fake_server import FakeModelServer
from rlm.llm.openai_client import OpenAICompatibleClient

REPO = Path(rlm.__file__).resolve().parent.parent


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"{url}/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def ask(url: str, model: str, text: str = "hi") -> tuple[int, dict]:
    return post(url, {"model": model, "messages": [{"role": "user", "content": text}]})


def get_models(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/models", timeout=5) as resp:
        return [m["id"] for m in json.load(resp)["data"]]


def test_models_endpoint_and_url():
    with FakeModelServer(root_model="r", models=["s1", "s2", "r"]) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/v1")
        assert get_models(server.url) == ["r", "s1", "s2"]


def test_root_steps_in_order_then_default():
    steps = ["first", {"content": "second", "think": "pondering"}, {"content": None}]
    with FakeModelServer(root_model="r", root=steps) as server:
        replies = [ask(server.url, "r")[1] for _ in range(5)]
        contents = [r["choices"][0]["message"]["content"] for r in replies]
        assert contents[:3] == ["first", "<think>pondering</think>second", None]
        assert "FINAL(out of script)" in contents[3] and contents[3] == contents[4]
        first = replies[0]
        assert first["model"] == "r" and first["choices"][0]["finish_reason"] == "stop"
        assert first["usage"]["completion_tokens"] == len("first") // 4
        assert len(server.requests) == 5 and server.requests[0]["messages"][0]["content"] == "hi"


def test_root_default_is_configurable_and_delay_applies():
    with FakeModelServer(root_model="r", root=[{"content": "slow", "delay_s": 0.2}], root_default="done") as server:
        start = time.monotonic()
        assert ask(server.url, "r")[1]["choices"][0]["message"]["content"] == "slow"
        assert time.monotonic() - start >= 0.2
        assert ask(server.url, "r")[1]["choices"][0]["message"]["content"] == "done"


def test_status_step_returns_openai_error_shape():
    with FakeModelServer(root_model="r", root=[{"status": 503, "message": "busy"}, "ok"]) as server:
        status, body = ask(server.url, "r")
        assert status == 503 and body["error"]["message"] == "busy" and body["error"]["type"] == "server_error"
        assert ask(server.url, "r")[0] == 200


def test_sub_rules_first_match_and_default():
    rules = {r"capital of (France|Spain)": "Paris or Madrid", "France": "France!", "default": "dunno"}
    with FakeModelServer(root_model="r", models=["s"], sub=rules) as server:
        def sub(text: str) -> str:
            return ask(server.url, "s", text)[1]["choices"][0]["message"]["content"]

        assert sub("the capital of France?") == "Paris or Madrid"
        assert sub("France, anyway") == "France!"
        assert sub("something else") == "dunno"


def test_sub_callable_and_fail_when():
    with FakeModelServer(root_model="r", models=["s"], sub=str.upper, sub_fail_when="poison") as server:
        assert ask(server.url, "s", "abc")[1]["choices"][0]["message"]["content"] == "ABC"
        for _ in range(3):
            status, body = ask(server.url, "s", "this is poison")
            assert status == 500 and "error" in body


def test_unknown_model_is_404_model_not_found():
    with FakeModelServer(root_model="r", models=["s"]) as server:
        status, body = ask(server.url, "nope")
        assert status == 404 and body["error"]["code"] == "model_not_found" and "nope" in body["error"]["message"]


def test_api_key_is_checked():
    with FakeModelServer(root_model="r", root=["ok"], api_key="k") as server:
        assert ask(server.url, "r")[0] == 401
        status, body = post(server.url, {"model": "r", "messages": []}, {"Authorization": "Bearer k"})
        assert status == 200 and body["choices"][0]["message"]["content"] == "ok"


def test_close_is_idempotent_and_stops_serving():
    server = FakeModelServer()
    url = server.url
    server.close()
    server.close()
    with pytest.raises(urllib.error.URLError):
        get_models(url)


def test_sixty_four_sub_calls_run_concurrently():
    with FakeModelServer(root_model="r", models=["s"], sub=lambda p: f"re:{p}", sub_delay_s=0.2) as server:
        client = OpenAICompatibleClient(ModelSettings(base_url=server.url, max_retries=0), backoff_base_s=0.001)

        async def run():
            try:
                return await asyncio.gather(*(
                    client.acomplete([{"role": "user", "content": f"n{i}"}], model="s") for i in range(64)))
            finally:
                await client.aclose()

        start = time.monotonic()
        results = asyncio.run(run())
        elapsed = time.monotonic() - start
        assert [r.text for r in results] == [f"re:n{i}" for i in range(64)]
        assert elapsed < 1.5, f"64 x 0.2 s sub-calls took {elapsed:.2f} s: not concurrent"


def test_runs_as_a_process(tmp_path):
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"root_model": "r", "models": ["s"], "root": ["FINAL(42)"],
                                    "sub": {"ping": "pong", "default": "?"}}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "rlm.llm.fake_server", "--scenario", str(scenario)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the server printed nothing"
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), url
        assert ask(url, "r")[1]["choices"][0]["message"]["content"] == "FINAL(42)"
        assert ask(url, "s", "ping?")[1]["choices"][0]["message"]["content"] == "pong"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
