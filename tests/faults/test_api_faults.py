"""D2 and D9: ``arun`` is truly cancellable (the loop stops at its next step, model requests and
sub-calls in flight are cancelled, the sandbox is removed within 5 s, ``asyncio.run`` is not held);
``RLM``, its ``with`` block and ``arun`` are safe from several threads.  Real sandboxes (label
queries on the real engine), the scripted model server over real HTTP.  Marker ``docker``."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest

from rlm import RLM, RunResult, UsageError
from rlm.llm.fake_server import FakeModelServer, repl

pytestmark = pytest.mark.docker

ROOT, SUB = "root-model", "sub-model"


@pytest.fixture
def kwargs(tmp_path, sandbox_settings, monkeypatch):
    (tmp_path / "none.yaml").write_text("{}\n")
    for name in ("OLLAMA_BASE_URL", "ROOT_MODEL", "SUB_MODEL", "MAX_ITERATIONS", "RLM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return {"root_model": ROOT, "sub_model": SUB, "max_iterations": 5, "max_retries": 0,
            "trace_dir": str(tmp_path / "traces"), "run_root": sandbox_settings.run_root,
            "image": sandbox_settings.image, "config": str(tmp_path / "none.yaml")}


def _rlm(server: FakeModelServer, kwargs: dict, **more) -> RLM:
    args = dict(kwargs)
    config = args.pop("config")
    return RLM(config, base_url=server.url, **args, **more)


def _containers(engine) -> list[str]:
    """This test process's sandbox containers (label query on the real engine)."""
    return [c.name for c in engine.list_labelled("rlm.session") if c.labels.get("rlm.owner_pid") == str(os.getpid())]


def _gone_within(engine, seconds: float) -> list[str]:
    """The containers still there after at most ``seconds`` (returns as soon as there are none)."""
    deadline = time.monotonic() + seconds
    left = _containers(engine)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _containers(engine)
    return left


def _cancelled_after(r: RLM, seconds: float, context: str = "text") -> float:
    """Run ``asyncio.wait_for(r.arun(...), seconds)``; the time until asyncio.run returned."""
    async def main() -> RunResult:
        return await asyncio.wait_for(r.arun("Q?", context), seconds)

    t0 = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(main())
    return time.monotonic() - t0


def _root_requests(server: FakeModelServer) -> int:
    return sum(1 for body in server.requests if body.get("model") == ROOT)


def test_cancelling_arun_during_a_slow_model_reply_stops_the_run_and_removes_the_sandbox(kwargs, engine):
    server = FakeModelServer(root_model=ROOT, models=[SUB], root=[
        repl("print('first cell')"), {"content": "FINAL(too late)", "delay_s": 30}])
    cells: list[dict] = []
    with server:
        r = _rlm(server, kwargs, on_event=lambda kind, data: cells.append(data) if kind == "cell" else None)
        elapsed = _cancelled_after(r, 4)
        assert elapsed < 6, f"asyncio.run returned {elapsed:.1f} s after the start (cancelled at 4 s)"
        assert len(cells) == 1  # the sandbox was up and ran the first cell
        assert _gone_within(engine, 5) == []
        assert _root_requests(server) == 2  # the loop asked nothing after the cancellation
    trace = [json.loads(line) for line in Path(r.last_trace).read_text().splitlines()]
    assert trace[-1]["kind"] == "run_end" and trace[-1]["status"] == "interrupted"
    assert "cancelled" in trace[-1]["error"]


def test_cancelling_arun_during_a_long_cell_interrupts_it(kwargs, engine):
    server = FakeModelServer(root_model=ROOT, models=[SUB], root=[
        repl("import time\ntime.sleep(120)\nprint('slept')"), "FINAL(too late)"])
    with server:
        elapsed = _cancelled_after(_rlm(server, kwargs), 4)
        assert elapsed < 6
        assert _gone_within(engine, 5) == []
        assert _root_requests(server) == 1


def test_cancelling_arun_cancels_the_sub_calls_in_flight(kwargs, engine):
    server = FakeModelServer(root_model=ROOT, models=[SUB], sub_delay_s=30,
                             root=[repl("print(llm_query('take your time'))"), "FINAL(too late)"])
    with server:
        elapsed = _cancelled_after(_rlm(server, kwargs), 4)
        assert elapsed < 6
        assert _gone_within(engine, 5) == []
        assert _root_requests(server) == 1
        assert [b["model"] for b in server.requests].count(SUB) == 1


def test_two_threads_in_one_with_block_share_one_sandbox(kwargs, engine):
    server = FakeModelServer(root_model=ROOT, models=[SUB],
                             root_default=repl("import os\nFINAL(str(os.getpid()))"))
    start = threading.Barrier(2)
    results: list[RunResult] = []
    during: list[list[str]] = []

    def ask(r: RLM) -> None:
        start.wait()
        results.append(r.run("Which process answers?", "the same context"))
        during.append(_containers(engine))

    with server:
        with _rlm(server, kwargs) as r:
            threads = [threading.Thread(target=ask, args=(r,)) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
        assert _containers(engine) == []
    assert [x.status for x in results] == ["ok", "ok"]
    assert results[0].answer == results[1].answer  # the same kernel answered both
    assert all(len(names) == 1 for names in during)


def test_a_second_with_block_on_one_rlm_is_refused(kwargs):
    server = FakeModelServer(root_model=ROOT, models=[SUB])
    with server, _rlm(server, kwargs) as r:
        with pytest.raises(UsageError, match="already in a `with` block"):
            r.__enter__()


def test_cancelling_while_the_sandbox_starts_leaves_no_container(kwargs, engine):
    server = FakeModelServer(root_model=ROOT, models=[SUB], root=["FINAL(too late)"])
    with server:
        elapsed = _cancelled_after(_rlm(server, kwargs), 0.3)
        assert elapsed < 3
        assert _gone_within(engine, 5) == []
        assert server.requests == []


def test_a_cancelled_question_in_a_with_block_takes_its_sandbox_and_the_next_starts_anew(kwargs, engine):
    server = FakeModelServer(root_model=ROOT, models=[SUB], root=[
        repl("kept = 1\nprint('first')"), {"content": "FINAL(too late)", "delay_s": 30},
        repl("print('kept' in globals())"), "FINAL(fresh)"])

    async def main(r: RLM) -> RunResult:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r.arun("Q?", "ctx"), 4)
        return await r.arun("Again?")

    with server:
        with _rlm(server, kwargs) as r:
            result = asyncio.run(main(r))
            assert len(_containers(engine)) == 1
        assert _containers(engine) == []
    assert result.answer == "fresh"
    fed_back = [m["content"] for m in server.requests[-1]["messages"] if m["role"] == "user"][-1]
    assert "False" in fed_back  # a new sandbox: the cancelled question's variables are gone


def test_cancelling_one_run_leaves_a_concurrent_one_alone(kwargs, engine):
    server = FakeModelServer(root_model=ROOT, models=[SUB], root_default=repl(
        "import time\ntime.sleep(6)\nFINAL('slept')"))

    async def main(r: RLM) -> RunResult:
        keep = asyncio.ensure_future(r.arun("Keep?", "a"))
        drop = asyncio.ensure_future(r.arun("Drop?", "b"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(drop, 2)
        return await keep

    with server:
        result = asyncio.run(main(_rlm(server, kwargs)))
        assert _gone_within(engine, 5) == []
    assert result.answer == "slept" and result.status == "ok"
