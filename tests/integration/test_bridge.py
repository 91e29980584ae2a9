"""The llm_query bridge: a real Unix socket served by the host, used from real sandbox code."""

from __future__ import annotations

import json
import threading
import time

import pytest

from rlm.sandbox import SandboxSession, SandboxSettings
from rlm.sandbox.bridge import BridgeRefusal

pytestmark = pytest.mark.docker


class Handler:
    """A scripted host side: records requests, answers by op and prompt."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, request: dict) -> dict:
        with self.lock:
            self.requests.append(request)
        op = request.get("op")
        if op == "llm_query":
            prompt = request["prompt"]
            if prompt == "refuse me":
                raise BridgeRefusal("budget exhausted: 0 sub-calls left")
            if prompt == "crash me":
                raise RuntimeError("handler exploded")
            return {"text": f"echo:{prompt}"}
        if op == "llm_query_batched":
            return {"texts": ["Error: model failed for this prompt" if p == "bad" else f"echo:{p[:20]}:{len(p)}"
                              for p in request["prompts"]]}
        if op == "rlm_query":
            return {"text": f"child:{request['prompt']}:{len(request.get('context') or '')}"}
        raise BridgeRefusal(f"unknown op {op!r}")


@pytest.fixture(scope="module")
def handler():
    return Handler()


@pytest.fixture(scope="module")
def bridged(engine, handler):
    with SandboxSession(settings=SandboxSettings(cell_timeout_s=30), engine=engine, handler=handler) as s:
        yield s


def _json(session: SandboxSession, code: str, expr: str):
    ex = session.execute(code + f"\nimport json as _j\nprint(_j.dumps({expr}))")
    assert ex.ok, ex.output
    return json.loads(ex.stdout.strip().splitlines()[-1])


def test_llm_query_round_trip(bridged, handler):
    got = _json(bridged, "answer = llm_query('héllo ✓', model='small')", "answer")
    assert got == "echo:héllo ✓"
    request = handler.requests[-1]
    assert request["op"] == "llm_query" and request["prompt"] == "héllo ✓" and request["model"] == "small"


def test_llm_query_text_goes_after_the_prompt(bridged, handler):
    # small models call it as they call grep(pattern, text=...) and map_chunks(instruction, text=...)
    got = _json(bridged, "answer = llm_query('Which port?', text='port 8443')", "answer")
    assert got == "echo:Which port?\n\nText:\nport 8443" and handler.requests[-1]["prompt"].endswith("port 8443")


def test_llm_query_batched_keeps_order_and_a_failed_slot_does_not_fail_the_others(bridged):
    got = _json(bridged, "res = llm_query_batched(['p0', 'p1', 'bad', 'p3', 'p4'])", "res")
    assert got == ["echo:p0:2", "echo:p1:2", "Error: model failed for this prompt", "echo:p3:2", "echo:p4:2"]


def test_llm_query_batched_split_over_many_frames_keeps_order(bridged, handler):
    # 5 prompts of 300 kB cannot share one 1 MiB frame: the REPL splits them, answers stay in order
    before = len(handler.requests)
    code = "big = [str(i) * 300_000 for i in range(5)]\nres = llm_query_batched(big)"
    got = _json(bridged, code, "res")
    assert got == [f"echo:{str(i) * 20}:300000" for i in range(5)]
    assert len(handler.requests) - before > 1


def test_rlm_query_round_trip(bridged):
    assert _json(bridged, "r = rlm_query('sub question', context='abc')", "r") == "child:sub question:3"


def test_refusal_raises_sub_call_error_with_the_message(bridged):
    code = ("try:\n    llm_query('refuse me')\n    outcome = 'no error'\n"
            "except SubCallError as e:\n    outcome = 'SubCallError: ' + str(e)\n")
    assert _json(bridged, code, "outcome") == "SubCallError: budget exhausted: 0 sub-calls left"
    uncaught = bridged.execute("llm_query('refuse me')")
    assert uncaught.error_name == "SubCallError" and "budget exhausted" in uncaught.error


def test_handler_crash_is_a_sub_call_error_and_the_bridge_keeps_serving(bridged):
    ex = bridged.execute("llm_query('crash me')")
    assert ex.error_name == "SubCallError" and "handler exploded" in ex.error
    assert _json(bridged, "a = llm_query('after crash')", "a") == "echo:after crash"


def test_no_handler_gives_sub_call_error_not_available(session):
    ex = session.execute("llm_query('anyone there?')")
    assert ex.error_name == "SubCallError"
    assert "not available" in ex.error
    batched = session.execute("llm_query_batched(['a', 'b'])")
    assert batched.error_name == "SubCallError" and "not available" in batched.error
    assert session.execute("1 + 1").display == ["2"]


RAW = (
    "import socket, struct, json\n"
    "import protocol\n"
    "def raw(payloads, follow_up=None):\n"
    "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
    "    s.settimeout(10)\n"
    "    s.connect('/rlm/bridge/llm.sock')\n"
    "    for p in payloads:\n"
    "        s.sendall(p)\n"
    "    replies = [protocol.read_frame(s, 1 << 20)]\n"
    "    if follow_up is not None:\n"
    "        s.sendall(protocol.encode(follow_up))\n"
    "        replies.append(protocol.read_frame(s, 1 << 20))\n"
    "    s.close()\n"
    "    return replies\n"
)


def test_malformed_frame_gets_an_error_reply_and_the_bridge_keeps_serving(bridged):
    body = b"{this is not json"
    code = RAW + (
        "frame = struct.pack('>I', len(body)) + body\n"
        "replies = raw([frame], follow_up={'op': 'llm_query', 'prompt': 'same connection', 'model': None, 'id': 7})\n"
    )
    replies = _json(bridged, f"body = {body!r}\n" + code, "replies")
    bad, good = replies
    assert bad["ok"] is False and bad["kind"] == "protocol" and "JSON" in bad["error"]
    assert good["ok"] is True and good["id"] == 7 and good["text"] == "echo:same connection"
    assert _json(bridged, "a = llm_query('next call')", "a") == "echo:next call"


def test_wrong_version_and_non_object_frames_get_error_replies(bridged):
    code = RAW + (
        "def frame(obj):\n"
        "    data = json.dumps(obj).encode()\n"
        "    return struct.pack('>I', len(data)) + data\n"
        "replies = raw([frame([1, 2, 3])]) + raw([frame({'v': 999, 'op': 'llm_query', 'prompt': 'x'})])\n"
    )
    replies = _json(bridged, code, "replies")
    assert [r["ok"] for r in replies] == [False, False]
    assert all(r["kind"] == "protocol" for r in replies)
    assert _json(bridged, "a = llm_query('still fine')", "a") == "echo:still fine"


def test_oversized_header_gets_an_error_reply(bridged):
    code = RAW + (
        "cap = 1024 * 1024\n"
        "replies = raw([struct.pack('>I', cap + 1) + b'x' * 1024])\n"
    )
    (reply,) = _json(bridged, code, "replies")
    assert reply["ok"] is False and reply["kind"] == "protocol"
    assert "exceeds" in reply["error"]
    assert _json(bridged, "a = llm_query('after oversize')", "a") == "echo:after oversize"


def test_oversized_request_from_llm_query_is_refused_in_the_sandbox(bridged, handler):
    before = len(handler.requests)
    ex = bridged.execute("llm_query('x' * (2 * 1024 * 1024))")
    assert ex.error_name == "SubCallError" and "exceeds" in ex.error
    assert len(handler.requests) == before


def test_bridge_folder_is_read_only_inside(bridged):
    code = (
        "import os, errno\n"
        "res = {}\n"
        "for name, fn in [('create', lambda: open('/rlm/bridge/evil.sock', 'w')),\n"
        "                 ('unlink', lambda: os.unlink('/rlm/bridge/llm.sock')),\n"
        "                 ('rename', lambda: os.rename('/rlm/bridge/llm.sock', '/rlm/bridge/x')),\n"
        "                 ('mkdir', lambda: os.mkdir('/rlm/bridge/d'))]:\n"
        "    try:\n"
        "        fn(); res[name] = 'ok'\n"
        "    except OSError as e:\n"
        "        res[name] = e.errno\n"
        "res['listing'] = sorted(os.listdir('/rlm/bridge'))\n"
    )
    res = _json(bridged, code, "res")
    assert res.pop("listing") == ["ctl.sock", "llm.sock"]
    assert res["create"] in (13, 30)  # EROFS under runc; gVisor answers EACCES
    assert all(v != "ok" for v in res.values()), res
    assert _json(bridged, "a = llm_query('bridge intact')", "a") == "echo:bridge intact"


def test_map_chunks_asks_one_batched_sub_call_per_piece_in_order(bridged, handler):
    text = "".join(f"line {i:03d} " + "x" * 80 + "\n" for i in range(100))  # 9,000 characters
    ex = bridged.execute(f"answers = map_chunks('Summarize.', text={text!r}, chunk_chars=3000)\n"
                         "print(len(answers)); print(answers[0][:20])")
    assert ex.ok, ex.error
    count, first = ex.stdout.splitlines()[:2]
    assert int(count) == 4  # 3,000-character pieces cut at line ends: 33 + 33 + 33 + 1 lines
    assert first.startswith("echo:Summarize.")
    batched = [r for r in handler.requests if r.get("op") == "llm_query_batched"][-1]
    assert [p.count("\nline ") for p in batched["prompts"]] == [33, 33, 33, 1]
    assert all(p.startswith("Summarize.\n\nText (part ") for p in batched["prompts"])


class SlowHandler:
    """Answers every llm_query after ``delay_s`` (a model that takes its time)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def __call__(self, request: dict) -> dict:
        time.sleep(self.delay_s)
        return {"text": "slow"}


def test_a_cell_alternating_short_work_and_slow_sub_calls_is_not_cut_by_its_timeout(engine):
    with SandboxSession(settings=SandboxSettings(cell_timeout_s=3), engine=engine,
                        handler=SlowHandler(0.5)) as s:
        code = ("import time\nanswers = []\nfor i in range(16):\n    t = time.time()\n"
                "    while time.time() - t < 0.05:\n        pass\n    answers.append(llm_query(str(i)))\n"
                "print(len(answers))")
        ex = s.execute(code)
    assert ex.ok and not ex.timed_out, ex.output
    assert ex.stdout.strip() == "16" and ex.duration_s > 8  # 8 s of waiting, well past the 3 s timeout


def test_a_cell_computing_while_its_thread_waits_on_the_bridge_times_out(engine):
    with SandboxSession(settings=SandboxSettings(cell_timeout_s=3), engine=engine,
                        handler=SlowHandler(60)) as s:
        code = ("import threading\nthreading.Thread(target=lambda: llm_query('slow'), daemon=True).start()\n"
                "while True:\n    pass")
        ex = s.execute(code)
        assert ex.timed_out
        print(f"a 3 s cell computing while its thread waited on a 60 s sub-call ended after {ex.duration_s:.1f} s")
        assert ex.duration_s < 30
