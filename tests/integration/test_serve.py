"""`rlm serve` and `rlm mcp` as real processes on 127.0.0.1, reached with the real clients (openai, httpx,
the mcp SDK), over the scripted model server and real sandboxes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from rlm.llm.fake_server import FakeModelServer, repl

pytestmark = pytest.mark.docker

ROOT, SUB = "root-model", "sub-model"
# The runtime of the test run is pinned in the server process as conftest pins it in this one.
BOOT = ("import os, sys; from rlm.sandbox import runtime; runtime.pin_auto(os.environ.get('RLM_TEST_RUNTIME') or 'runc'); "
        "from rlm.cli.app import main; sys.argv[0] = 'rlm'; main()")
TOKEN = "s3cret-token-for-the-test-0123456789"


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OLLAMA_")) and k not in (
        "ROOT_MODEL", "SUB_MODEL", "MAX_ITERATIONS")}
    env.update(RLM_MAX_RETRIES="0", PYTHONUNBUFFERED="1", **extra)
    if os.environ.get("RLM_TEST_RUNTIME"):
        env["RLM_TEST_RUNTIME"] = os.environ["RLM_TEST_RUNTIME"]
    return env


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def containers(self, engine) -> list[str]:
        return [c.name for c in engine.list_labelled("rlm.session")
                if c.labels.get("rlm.owner_pid") == str(self.proc.pid)]

    def gone_within(self, engine, seconds: float) -> list[str]:
        deadline = time.monotonic() + seconds
        left = self.containers(engine)
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.containers(engine)
        return left

    def openai(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def doc_root(tmp_path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "doc.txt").write_text("alpha\n" * 50 + "The vault code is 7421.\n" + "omega\n" * 50)
    (tmp_path / "secret.txt").write_text("outside the root\n")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    (root / "folder").mkdir()
    (root / "folder" / "a.txt").write_text("inside\n")
    (root / "leaky").mkdir()
    (root / "leaky" / "out.txt").symlink_to(tmp_path / "secret.txt")
    return root


@pytest.fixture
def serve(tmp_path, engine, doc_root):
    started: list[Served] = []

    def start(model: FakeModelServer, *args: str, host: str = "127.0.0.1", env: dict | None = None,
              ready: bool = True) -> Served:
        port = _free_port(host)
        cmd = [sys.executable, "-c", BOOT, "serve", "--host", host, "--port", str(port),
               "--data-dir", str(tmp_path / "data"), "--context-root", str(doc_root), "--base-url", model.url,
               "--model", ROOT, "--sub-model", SUB, "--max-iterations", "6", "--workers", "1", *args]
        proc = subprocess.Popen(cmd, env=env or _env(), cwd=tmp_path, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        served = Served(proc, f"http://{host}:{port}")
        started.append(served)
        up = threading.Event()

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                served.lines.append(line)
                if "Application startup complete" in line:
                    up.set()
            up.set()

        threading.Thread(target=read, daemon=True).start()
        if ready:
            assert up.wait(90) and proc.poll() is None, f"the server did not start:\n{served.log}"
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.stop()
        assert served.gone_within(engine, 5) == [], "containers left after the server stopped"


def test_models_and_a_chat_completion_with_the_openai_client(serve):
    model = FakeModelServer(root_model=ROOT, models=[SUB], root=[
        repl("import re\nprint(re.search(r'code is (\\d+)', context).group(1))\nprint(llm_query('say ok'))"),
        "FINAL(7421)"], sub={"default": "ok"})
    with model:
        served = serve(model)
        client = served.openai()
        ids = [m.id for m in client.models.list().data]
        assert ids[0] == "rlm" and f"rlm/{ROOT}" in ids and f"rlm/{SUB}" in ids
        completion = client.chat.completions.create(
            model="rlm", messages=[{"role": "user", "content": "What is the vault code?"}],
            extra_body={"rlm": {"context": {"path": "doc.txt"}}})
        assert completion.choices[0].message.content == "7421"
        info = completion.model_dump()["rlm"]
        assert info["status"] == "ok" and info["iterations"] == 2 and info["sub_calls"] == 1
        assert [b["model"] for b in model.requests] == [ROOT, SUB, ROOT]
        assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
        assert completion.usage.prompt_tokens > 0
        fed_back = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "user"][-1]
        assert "7421" in fed_back
        trace = httpx.get(f"{served.url}/v1/traces/{info['trace_id']}")
        assert trace.status_code == 200
        events = [json.loads(line) for line in trace.text.strip().split("\n")]
        assert events[-1]["kind"] == "run_end" and events[-1]["answer"] == "7421"
        page = httpx.get(f"{served.url}/v1/traces/{info['trace_id']}/view")
        assert page.status_code == 200 and page.text.lstrip().lower().startswith("<!doctype html")
        assert httpx.get(f"{served.url}/v1/traces/run-0000000000000000").status_code == 404
        assert httpx.get(f"{served.url}/v1/traces/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_streaming_sends_progress_then_the_answer_then_done(serve):
    model = FakeModelServer(root_model=ROOT, models=[SUB], root=[
        repl("print(len(context))"), repl("x = 'forty two ' * 20\nprint(len(x))"), "FINAL_VAR(x)"])
    with model:
        served = serve(model)
        stream = served.openai().chat.completions.create(
            model=f"rlm/{ROOT}", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "How long is it?"}],
            extra_body={"rlm": {"context": {"documents": ["one", "two"]}}})
        chunks = list(stream)
    progress = [c.choices[0].delta.model_dump().get("reasoning_content") for c in chunks if c.choices]
    progress = [p for p in progress if p]
    assert [p for p in progress if p.startswith("iteration")][:3] == ["iteration 1/6\n", "iteration 2/6\n",
                                                                     "iteration 3/6\n"]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "forty two " * 20
    first_content = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    last_progress = max(i for i, c in enumerate(chunks) if c.choices and
                        c.choices[0].delta.model_dump().get("reasoning_content"))
    assert last_progress < first_content  # progress as it happens, the answer after
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_earlier_messages_are_the_context(serve):
    model = FakeModelServer(root_model=ROOT, models=[SUB], root=[repl("print(context)"), "FINAL(seen)"])
    with model:
        served = serve(model)
        reply = served.openai().chat.completions.create(model="rlm", messages=[
            {"role": "system", "content": "Ledger: Ada paid 7421 crowns."},
            {"role": "user", "content": "Keep this in mind."},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "How much did Ada pay?"}])
    assert reply.choices[0].message.content == "seen"
    fed_back = [m["content"] for m in model.requests[1]["messages"] if m["role"] == "user"][-1]
    assert "Ada paid 7421 crowns" in fed_back and "Noted." in fed_back
    question = [m["content"] for m in model.requests[0]["messages"] if m["role"] == "user"]
    assert any("How much did Ada pay?" in q for q in question)


def test_a_path_outside_the_root_is_refused_with_400(serve):
    model = FakeModelServer(root_model=ROOT, models=[SUB], root=["FINAL(should not run)"])
    with model:
        client = serve(model).openai()
        for path, code in (("/etc/passwd", "path_outside_root"), ("../secret.txt", "path_outside_root"),
                           ("link.txt", "path_outside_root"), ("leaky", "path_outside_root"),
                           ("missing.txt", "invalid_context")):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model="rlm", messages=[{"role": "user", "content": "Q?"}],
                                               extra_body={"rlm": {"context": {"path": path}}})
            assert caught.value.status_code == 400 and caught.value.code == code, path
            assert "outside the root\n" not in str(caught.value.body)
        assert model.requests == []


def test_errors_are_openai_error_objects_without_tracebacks(serve, engine):
    model = FakeModelServer(root_model=ROOT, models=[SUB], root=[{"content": "FINAL(late)", "delay_s": 30}])
    with model:
        served = serve(model, "--max-upload-mb", "1", "--request-timeout", "3", "--no-warm-pool")
        client = served.openai()
        with pytest.raises(openai.APIStatusError) as timeout:
            client.chat.completions.create(model="rlm", messages=[{"role": "user", "content": "Q?"}])
        assert timeout.value.status_code == 504 and timeout.value.code == "timeout"
        with pytest.raises(openai.NotFoundError) as not_found:
            client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "Q?"}])
        assert not_found.value.code == "model_not_found"
        bad = httpx.post(f"{served.url}/v1/chat/completions", content=b"{not json", timeout=30)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
        no_user = httpx.post(f"{served.url}/v1/chat/completions", json={"messages": [{"role": "system",
                                                                                      "content": "x"}]})
        assert no_user.status_code == 400 and "user message" in no_user.json()["error"]["message"]
        big = client.files.create(file=("doc.txt", b"x" * 1000), purpose="user_data")
        assert big.bytes == 1000
        with pytest.raises(openai.APIStatusError) as too_large:
            client.files.create(file=("big.txt", b"x" * (2 * 1024 * 1024)), purpose="user_data")
        assert too_large.value.status_code == 413
        assert httpx.get(f"{served.url}/no/such/route").json()["error"]["type"] == "not_found_error"
        model.close()  # the model server goes away: 503
        with pytest.raises(openai.APIStatusError) as down:
            client.chat.completions.create(model="rlm", messages=[{"role": "user", "content": "Q?"}])
        assert down.value.status_code == 503
        assert served.containers(engine) == []  # the timed-out run's sandbox went with it
        for err in (timeout, not_found, too_large, down):
            assert "Traceback" not in str(err.value.body) and "File \"" not in str(err.value.body)


def test_an_uploaded_file_is_a_context(serve):
    model = FakeModelServer(root_model=ROOT, models=[SUB], root=[repl("print(context['k'])"), "FINAL(done)"])
    with model:
        served = serve(model)
        client = served.openai()
        uploaded = client.files.create(file=("data.json", b'{"k": "from the upload"}'), purpose="user_data")
        assert uploaded.id.startswith("file-")
        reply = client.chat.completions.create(model="rlm", messages=[{"role": "user", "content": "What is k?"}],
                                               extra_body={"rlm": {"context": {"file_id": uploaded.id}}})
        assert reply.choices[0].message.content == "done"
        fed_back = [m["content"] for m in model.requests[1]["messages"] if m["role"] == "user"][-1]
        assert "from the upload" in fed_back


def test_sixteen_concurrent_requests_are_all_answered_and_no_container_is_left(serve, engine):
    model = FakeModelServer(root_model=ROOT, models=[SUB], root_default=repl(
        "import re\nn = re.search(r'number (\\d+)', context).group(1)\nFINAL('answer ' + n)"))
    with model:
        served = serve(model, "--workers", "4")
        client = served.openai(timeout=180)
        answers: dict[int, str] = {}

        def ask(i: int) -> None:
            reply = client.chat.completions.create(model="rlm", messages=[{"role": "user", "content": "Which?"}],
                                                   extra_body={"rlm": {"context": {"text": f"number {i}"}}})
            answers[i] = reply.choices[0].message.content

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert answers == {i: f"answer {i}" for i in range(16)}
        assert len(served.containers(engine)) <= 4  # the warm pool alone
        assert served.stop() == 0
    assert served.containers(engine) == []


def test_a_client_that_disconnects_cancels_its_run_and_its_container(serve, engine, tmp_path):
    model = FakeModelServer(root_model=ROOT, models=[SUB], root=[
        repl("print('started')"), {"content": "FINAL(too late)", "delay_s": 60},
        repl("import time\ntime.sleep(60)"), {"content": "FINAL(too late)", "delay_s": 60}])
    with model:
        served = serve(model, "--no-warm-pool")
        # streaming: leave once the first cell has run
        with httpx.stream("POST", f"{served.url}/v1/chat/completions", timeout=60, json={
                "model": "rlm", "stream": True, "messages": [{"role": "user", "content": "Q?"}],
                "rlm": {"context": {"text": "some text"}}}) as response:
            for line in response.iter_lines():
                if "ran a cell" in line:
                    assert len(served.containers(engine)) == 1
                    break
        assert served.gone_within(engine, 5) == []
        # not streaming: the client goes away while its run waits on the model or runs a long cell
        before = _roots(model)  # 1 or 2: the streamed run may have asked again before it was cancelled
        sock = socket.create_connection(("127.0.0.1", int(served.url.rsplit(":", 1)[1])))
        body = json.dumps({"model": "rlm", "messages": [{"role": "user", "content": "Q?"}]}).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        deadline = time.monotonic() + 30
        while _roots(model) == before and time.monotonic() < deadline:
            time.sleep(0.1)  # until the run has asked the model (its sandbox is up)
        assert _roots(model) == before + 1 and served.containers(engine)
        sock.close()
        assert served.gone_within(engine, 5) == []
        assert _roots(model) == before + 1  # the run asked nothing more after its client left
        assert "cancelling" in served.log
        # both traces end as interrupted runs, not as errors
        traces = tmp_path / "data" / "traces"
        deadline = time.monotonic() + 30
        while len(_run_ends(traces)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the cancelled runs write their last event as they unwind
        assert [(e["status"], e["error"]) for e in _run_ends(traces)] == [("interrupted", "the run was cancelled")] * 2


def _run_ends(traces: Path) -> list[dict]:
    events = [json.loads(line) for path in sorted(traces.glob("*.jsonl")) for line in path.read_text().splitlines()
              if line.strip()]
    return [e for e in events if e.get("kind") == "run_end"]


def _roots(model: FakeModelServer) -> int:
    return sum(1 for b in model.requests if b.get("model") == ROOT)


def test_a_full_queue_answers_429_with_retry_after(serve, engine):
    model = FakeModelServer(root_model=ROOT, models=[SUB], root=[{"content": "FINAL(slow)", "delay_s": 60}])
    with model:
        served = serve(model, "--workers", "1", "--queue", "0", "--no-warm-pool")
        gave_up: list[str] = []

        def slow_client() -> None:
            try:
                httpx.post(f"{served.url}/v1/chat/completions", timeout=5,
                           json={"model": "rlm", "messages": [{"role": "user", "content": "Q?"}]})
            except httpx.ReadTimeout:
                gave_up.append("timeout")

        first = threading.Thread(target=slow_client, daemon=True)
        deadline = time.monotonic() + 30
        first.start()
        while httpx.get(f"{served.url}/health").json()["running"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        busy = httpx.post(f"{served.url}/v1/chat/completions",
                          json={"model": "rlm", "messages": [{"role": "user", "content": "Q?"}]})
        assert busy.status_code == 429
        assert int(busy.headers["retry-after"]) >= 1 and busy.json()["error"]["code"] == "queue_full"
        first.join(timeout=30)  # its client gives up after 5 s: the run is cancelled
        assert gave_up == ["timeout"]
        assert served.gone_within(engine, 5) == []


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_a_token_is_required_off_loopback(serve, tmp_path):
    model = FakeModelServer(root_model=ROOT, models=[SUB], root=[repl("import os\nprint(sorted(os.environ))"),
                                                                 "FINAL(done)"])
    with model:
        refused = subprocess.run([sys.executable, "-c", BOOT, "serve", "--host", "0.0.0.0", "--port", "0",
                                  "--base-url", model.url], env=_env(), cwd=tmp_path, capture_output=True,
                                 text=True, timeout=60)
        assert refused.returncode == 2 and "without a token" in refused.stderr
        host = _non_loopback_address()
        if host is None:
            pytest.skip("this machine has no non-loopback address to bind")
        served = serve(model, host=host, env=_env(RLM_SERVE_TOKEN=TOKEN))
        assert httpx.get(f"{served.url}/v1/models").status_code == 401
        wrong = httpx.get(f"{served.url}/v1/models", headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        client = served.openai(api_key=TOKEN)
        assert "rlm" in [m.id for m in client.models.list().data]
        reply = client.chat.completions.create(model="rlm", messages=[{"role": "user", "content": "Env?"}],
                                               extra_body={"rlm": {"context": {"text": "x"}}})
        trace = httpx.get(f"{served.url}/v1/traces/{reply.model_dump()['rlm']['trace_id']}",
                          headers={"Authorization": f"Bearer {TOKEN}"}).text
        served.stop()
    assert reply.choices[0].message.content == "done"
    sandbox_saw = [m["content"] for m in model.requests[1]["messages"] if m["role"] == "user"][-1]
    assert "RLM_SERVE_TOKEN" not in sandbox_saw and TOKEN not in sandbox_saw
    assert TOKEN not in trace and TOKEN not in served.log


def test_sigterm_drains_then_cancels_the_runs_in_flight(serve, engine):
    model = FakeModelServer(root_model=ROOT, models=[SUB], root=[
        repl("print('started')"), {"content": "FINAL(too late)", "delay_s": 60}])
    with model:
        served = serve(model, "--grace", "2", "--no-warm-pool")
        outcome: dict[str, object] = {}

        def ask() -> None:
            try:
                outcome["status"] = httpx.post(f"{served.url}/v1/chat/completions", timeout=60, json={
                    "model": "rlm", "messages": [{"role": "user", "content": "Q?"}]}).status_code
            except httpx.HTTPError as exc:
                outcome["error"] = type(exc).__name__

        asker = threading.Thread(target=ask)
        asker.start()
        deadline = time.monotonic() + 30
        while _roots(model) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        t0 = time.monotonic()
        assert served.stop() == 0
        took = time.monotonic() - t0
        asker.join(timeout=30)
        assert served.containers(engine) == []
    assert took < 15, f"shutting down took {took:.1f} s with a 2 s grace"
    assert outcome  # the client was answered or its connection closed, not left hanging


def test_mcp_over_stdio_with_the_sdk_client(tmp_path, engine, doc_root):
    import anyio
    from mcp import Client, StdioServerParameters

    model = FakeModelServer(root_model=ROOT, models=[SUB], root=[
        repl("import re\nprint(re.search(r'code is (\\d+)', context).group(1))"), "FINAL(7421)",
        repl("kept = 'remembered'\nprint(kept)"), "FINAL(stored)",
        repl("print(kept)"), "FINAL_VAR(kept)"])
    params = StdioServerParameters(
        command=sys.executable, args=["-c", BOOT, "mcp", "--context-root", str(doc_root), "--base-url", model.url,
                                      "--model", ROOT, "--sub-model", SUB, "--max-iterations", "6",
                                      "--data-dir", str(tmp_path / "data")],
        env=_env(), cwd=str(tmp_path))
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def main() -> dict[str, str]:
        out: dict[str, str] = {}
        async with Client(params, read_timeout_seconds=120) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            out["tools"] = ",".join(sorted(tools))
            asked = await client.call_tool("ask", {"question": "What is the vault code?", "path": "doc.txt"},
                                           progress_callback=on_progress)
            out["ask"] = asked.content[0].text
            outside = await client.call_tool("ask", {"question": "Q?", "path": "../secret.txt"})
            out["outside"] = f"{outside.is_error} {outside.content[0].text}"
            session = (await client.call_tool("open_session", {"path": "doc.txt"})).content[0].text
            out["first"] = (await client.call_tool("ask_in_session", {"session_id": session,
                                                                      "question": "Store it"})).content[0].text
            out["second"] = (await client.call_tool("ask_in_session", {"session_id": session,
                                                                       "question": "Read it"})).content[0].text
            out["close"] = (await client.call_tool("close_session", {"session_id": session})).content[0].text
            gone = await client.call_tool("ask_in_session", {"session_id": session, "question": "Again?"})
            out["gone"] = f"{gone.is_error} {gone.content[0].text}"
        return out

    with model:
        out = anyio.run(main)
    assert out["tools"] == "ask,ask_in_session,close_session,open_session"
    assert out["ask"].startswith("7421\n") and "[rlm: ok, 2 iterations" in out["ask"]
    assert out["outside"].startswith("True ") and "outside the context root" in out["outside"]
    assert out["first"].startswith("stored") and out["second"].startswith("remembered")
    assert out["close"].startswith("closed ses-") and out["gone"].startswith("True ")
    assert progress == [(1, 6, "iteration 1/6"), (2, 6, "iteration 2/6")]


def test_mcp_over_streamable_http_beside_the_openai_endpoint(serve):
    import anyio
    from mcp import Client

    model = FakeModelServer(root_model=ROOT, models=[SUB], root=[repl("print(context[:5])"), "FINAL(over http)"])

    async def main(url: str) -> str:
        async with Client(url + "/mcp", read_timeout_seconds=120) as client:
            result = await client.call_tool("ask", {"question": "What?", "text": "hello world"})
            return result.content[0].text

    with model:
        served = serve(model, "--mcp")
        answer = anyio.run(main, served.url)
        assert httpx.get(f"{served.url}/v1/models").status_code == 200
    assert answer.startswith("over http\n") and "[rlm: ok" in answer


def test_sigterm_lets_a_run_that_ends_within_the_grace_finish(serve, engine):
    model = FakeModelServer(root_model=ROOT, models=[SUB], root=[
        repl("print('started')"), {"content": "FINAL(finished while draining)", "delay_s": 3}])
    with model:
        served = serve(model, "--grace", "30", "--no-warm-pool")
        outcome: dict[str, object] = {}

        def ask() -> None:
            response = httpx.post(f"{served.url}/v1/chat/completions", timeout=60, json={
                "model": "rlm", "messages": [{"role": "user", "content": "Q?"}]})
            outcome["status"], outcome["body"] = response.status_code, response.json()

        asker = threading.Thread(target=ask)
        asker.start()
        deadline = time.monotonic() + 30
        while _roots(model) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the run is waiting on its last model reply
        assert served.stop() == 0
        asker.join(timeout=30)
        assert served.containers(engine) == []
    assert outcome["status"] == 200
    assert outcome["body"]["choices"][0]["message"]["content"] == "finished while draining"


def test_mcp_over_stdio_stops_on_sigterm_and_removes_its_sandboxes(tmp_path, engine, doc_root):
    model = FakeModelServer(root_model=ROOT, models=[SUB])
    with model:
        proc = subprocess.Popen([sys.executable, "-c", BOOT, "mcp", "--context-root", str(doc_root), "--base-url",
                                 model.url, "--model", ROOT, "--sub-model", SUB, "--data-dir", str(tmp_path / "d")],
                                env=_env(), cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        served = Served(proc, "stdio")
        assert proc.stderr is not None
        for line in proc.stderr:
            served.lines.append(line)
            if "rlm mcp ready" in line:
                break
        deadline = time.monotonic() + 30
        while not served.containers(engine) and time.monotonic() < deadline:
            time.sleep(0.2)  # the warm pool's sandbox
        assert served.containers(engine)
        proc.send_signal(signal.SIGTERM)  # stdin stays open: the signal alone must end it
        assert proc.wait(timeout=20) == 0
        assert served.gone_within(engine, 5) == []
