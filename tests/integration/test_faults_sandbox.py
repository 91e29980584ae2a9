"""Faults at the sandbox's edges (issue 19 A, C, I), with the real sandbox and a scripted model
server on 127.0.0.1 (marker ``docker``).

* A: a context that does not fit in the sandbox's memory is an error with the figures, never a
  run where the model sees ``NameError: context`` and rlm exits 0 with a junk answer;
* I: time a cell spends waiting on llm_query is model time, not code time;
* C: a cell's abandoned sub-calls are cancelled (their HTTP requests closed) and not counted;
  one still in flight when the run ends does not keep rlm alive, and prints no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlm.config import CONFIG_ENV_VAR, FIELDS
from rlm.core.subcalls import SubCallHandler
from rlm.errors import ContextError
from rlm.llm.base import ModelSettings
from rlm.llm.fake_server import FakeModelServer
from rlm.llm.openai_client import OpenAICompatibleClient
from rlm.sandbox import SandboxSession, SandboxSettings

pytestmark = pytest.mark.docker

ROOT, SUB = "root-model", "sub-model"
RLM_ENV = {name for spec in FIELDS for name in spec.env_names} | {CONFIG_ENV_VAR}
SMALL = 512  # MB of sandbox memory: the kernel may use 336 MB of address space


def _repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def _env(server: FakeModelServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RLM_ENV}
    env.update(RLM_BASE_URL=server.url, RLM_ROOT_MODEL=ROOT, RLM_SUB_MODEL=SUB, RLM_MAX_RETRIES="0",
               PYTHONUNBUFFERED="1", COLUMNS="200", **extra)
    return env


def _rlm(*args: str, env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlm", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _exploding_json(path: Path, mb: int = 20) -> Path:
    """A small JSON file whose parsed form is about 20 times larger (millions of empty dicts)."""
    n = mb * 1024 * 1024 // 3
    path.write_text("[" + "{}," * n + "{}]")
    return path


def _until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.05)


def _client_connections(port: int) -> int:
    """Established TCP connections from this host to 127.0.0.1:port (client side), from /proc/net/tcp."""
    count = 0
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and int(remote.split(":")[1], 16) == port:
                count += 1
    return count


# ------------------------------------------------------------------ A: context and memory
def test_a_context_that_fails_to_load_in_the_kernel_is_a_context_error(engine, tmp_path):
    path = _exploding_json(tmp_path / "docs.json")
    settings = SandboxSettings(memory_mb=SMALL, cell_timeout_s=60)
    with SandboxSession(context=path, settings=settings, engine=engine) as s:
        with pytest.raises(ContextError) as caught:
            s.execute("_rlm_context_info()")
        assert "does not fit in the sandbox's memory" in caught.value.message
        assert "20.0 MB" in caught.value.message and "336 MB" in caught.value.message
        assert "memory_mb" in (caught.value.hint or "")


def test_a_bad_json_context_is_a_context_error_not_a_name_error(engine, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"a": [1, 2,')
    with SandboxSession(context=path, settings=SandboxSettings(cell_timeout_s=30), engine=engine) as s:
        with pytest.raises(ContextError, match=r"could not be loaded: JSONDecodeError"):
            s.execute("print(len(context))")


def test_a_context_too_large_for_the_sandbox_exits_2_before_any_model_call(engine, tmp_path):
    path = _exploding_json(tmp_path / "docs.json")
    with FakeModelServer(root_model=ROOT, models=[SUB], root=["FINAL(junk)"]) as server:
        proc = _rlm("query", "-q", "How many documents?", "-f", str(path), "--json",
                    env=_env(server, RLM_MEMORY_MB=str(SMALL)), cwd=tmp_path, timeout=120)
        requests = server.requests
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "does not fit in the sandbox's memory" in proc.stderr
    assert "memory_mb" in proc.stderr
    assert requests == []  # refused before the model was asked anything


def _probe(session: SandboxSession) -> dict:
    ex = session.execute("import json as _j\nprint(_j.dumps({'type': type(context).__name__, 'len': len(context), "
                         "'head': context[:12], 'tail': context[-12:], 'needle': context.find('NEEDLE-7421'), "
                         "'lines': context.count(chr(10))}))")
    assert ex.ok, ex.output
    return json.loads(ex.stdout)


def test_a_large_ascii_text_loads_in_about_its_own_size(engine, tmp_path):
    """250 MB of ASCII in a sandbox whose kernel may use 592 MB: decoding would need 710 MB
    (bytes + text + the kernel's 210 MB); read straight into its str it needs about 476 MB."""
    line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
    count = 250 * 1024 * 1024 // len(line)
    path = tmp_path / "big.txt"
    with open(path, "wb") as fh:
        fh.write(b"HEAD-OF-FILE")
        for i in range(8):
            fh.write(line * (count // 8))
            if i == 3:
                fh.write(b"NEEDLE-7421")
        fh.write(b"END-OF-FILE.")
    size = path.stat().st_size
    middle = 12 + 4 * (count // 8) * len(line)
    with SandboxSession(context=path, settings=SandboxSettings(memory_mb=768, cell_timeout_s=60),
                        engine=engine) as s:
        got = _probe(s)
    assert got == {"type": "str", "len": size, "head": "HEAD-OF-FILE", "tail": "END-OF-FILE.",
                   "needle": middle, "lines": 8 * (count // 8)}


def test_a_large_text_that_is_not_ascii_is_still_decoded_exactly(engine, tmp_path):
    line = "plain ascii line\n" * 1000
    path = tmp_path / "mixed.txt"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("HEAD-OF-FILE")
        for i in range(4000):  # about 66 MB: above the size read straight into a str
            fh.write(line)
            if i == 2000:
                fh.write("NEEDLE-7421")
        fh.write("caf\u00e9 END.")
    text_len = 12 + 4000 * len(line) + 11 + 9
    with SandboxSession(context=path, settings=SandboxSettings(cell_timeout_s=60), engine=engine) as s:
        got = _probe(s)
    assert got == {"type": "str", "len": text_len, "head": "HEAD-OF-FILE", "tail": (line + "caf\u00e9 END.")[-12:],
                   "needle": 12 + 2001 * len(line), "lines": 4000 * 1000}


# ------------------------------------------------------------------ I: bridge time is model time
def _handler(server: FakeModelServer, events: list[dict]) -> tuple[SubCallHandler, OpenAICompatibleClient]:
    client = OpenAICompatibleClient(ModelSettings(base_url=server.url, root_model=ROOT, sub_model=SUB,
                                                  timeout_s=60, max_retries=0))
    handler = SubCallHandler(client, sub_model=SUB, temperature=0.0, enabled=True, max_calls=10, max_chars=10_000,
                             concurrency=4, on_call=events.append)
    return handler, client


def test_i_waiting_on_a_sub_call_does_not_use_the_cell_timeout(engine):
    events: list[dict] = []
    with FakeModelServer(root_model=ROOT, models=[SUB], sub={"default": "slow answer"}, sub_delay_s=3.0) as server:
        handler, client = _handler(server, events)
        try:
            with SandboxSession(settings=SandboxSettings(cell_timeout_s=1.5), engine=engine, handler=handler) as s:
                ex = s.execute("a = llm_query('first')\nb = llm_query_batched(['x', 'y'])\nprint(a, b)")
                assert ex.ok and not ex.timed_out, ex.output
                assert ex.stdout.strip() == "slow answer ['slow answer', 'slow answer']"
                assert ex.duration_s >= 6.0  # two waits of 3 s, each longer than the 1.5 s code timeout
                spin = s.execute("while True:\n    pass")  # code time still counts
                assert spin.timed_out
        finally:
            handler.close()
            client.close()
    assert handler.calls == 3 and [e["ok"] for e in events] == [True, True, True]


# ------------------------------------------------------------------ C: cancelled, not counted
def test_c_an_interrupted_cell_cancels_its_sub_calls_at_the_server(engine):
    events: list[dict] = []
    with FakeModelServer(root_model=ROOT, models=[SUB], sub_delay_s=120.0) as server:
        handler, client = _handler(server, events)
        try:
            with SandboxSession(settings=SandboxSettings(cell_timeout_s=2), engine=engine, handler=handler) as s:
                code = ("import threading\n"
                        "threading.Thread(target=lambda: llm_query('never answered'), daemon=True).start()\n"
                        "while True:\n    pass")
                ex = s.execute(code)
                assert ex.timed_out
                assert len(server.requests) == 1  # the sub-call did reach the server...
                _until(lambda: handler.in_flight == 0, 10, "the sub-call is cancelled")
                _until(lambda: _client_connections(server.port) == 0, 10, "its HTTP request is closed")
                assert handler.calls == 0 and events == []  # ...and is not counted
                after = s.execute("print('still here')")
                assert after.ok and after.stdout == "still here\n", after.output  # the session goes on
        finally:
            handler.close()
            client.close()


def test_c_a_sub_call_in_flight_at_the_end_does_not_keep_rlm_alive(engine, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("The secret code is 7421.\n")
    code = ("import threading\n"
            "t = threading.Thread(target=lambda: llm_query('hang'), daemon=True)\n"
            "t.start()\n"
            "t.join(3)  # time for the request to reach the server; the test checks that it did\n"
            "FINAL('7421')")
    with FakeModelServer(root_model=ROOT, models=[SUB], root=[_repl(code)], sub_delay_s=300.0) as server:
        started = time.monotonic()
        proc = _rlm("query", "-q", "What is the secret code?", "-f", str(doc), "--json",
                    env=_env(server, RLM_REQUEST_TIMEOUT="250"), cwd=tmp_path, timeout=90)
        seconds = time.monotonic() - started
        sub_requests = [r for r in server.requests if r.get("model") == SUB]
    assert proc.returncode == 0, proc.stderr
    assert sub_requests, "the sub-call never reached the server: the test did not exercise the fault"
    result = json.loads(proc.stdout)
    assert result["answer"] == "7421"
    assert result["sub_calls"] == 0  # abandoned: not counted
    assert "Traceback" not in proc.stderr and "bridge handler failed" not in proc.stderr, proc.stderr
    assert seconds < 90
