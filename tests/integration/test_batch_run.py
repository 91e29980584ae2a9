"""Batch runs against the scripted model server and the real sandbox (marker ``docker``):
concurrency, resume, retry-failed, a SIGKILL in the middle then a rerun, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

import rlm
from rlm.jobs import load_spec, read_results, run_batch
from rlm.llm.fake_server import FakeModelServer

pytestmark = pytest.mark.docker

REPO = Path(rlm.__file__).resolve().parent.parent
# The root model's reply: regex code over the context, so every answer is right.
SOLVE = ('```repl\nimport re\nm = re.search(r"The code is (\\d+)", context)\n'
         'FINAL(m.group(1) if m else "not found")\n```')


def slow(n: int, delay: float) -> list[dict]:
    return [{"content": SOLVE, "delay_s": delay}] * n


def make_spec(folder: Path, url: str, n: int, *, concurrency: int = 2, extra: str = "") -> Path:
    docs = folder / "docs"
    docs.mkdir(exist_ok=True)
    queries = []
    for i in range(n):
        (docs / f"d{i}.txt").write_text(f"Some filler text.\nThe code is {1000 + i}.\nMore filler.\n")
        queries.append(f"  - {{id: q{i}, question: 'What is the code?', context_file: docs/d{i}.txt, "
                       f"expected: '{1000 + i}'}}")
    spec = folder / "spec.yaml"
    spec.write_text(f"model: {{base_url: '{url}', root_model: root-model}}\n"
                    f"settings: {{max_iterations: 2, max_retries: 0}}\n"
                    f"concurrency: {concurrency}\noutput: out.jsonl\n{extra}queries:\n" + "\n".join(queries) + "\n")
    return spec


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def chat_requests(server: FakeModelServer) -> int:
    return len(server.requests)


def our_containers(engine, pid: int) -> list[str]:
    return [c.name for c in engine.list_labelled("rlm.session") if c.labels.get("rlm.owner_pid") == str(pid)]


def test_concurrency_resume_and_new_queries(engine, tmp_path: Path) -> None:
    with FakeModelServer(root=slow(4, 1.0)) as server:
        spec_path = make_spec(tmp_path, server.url, 3, concurrency=2)
        summary = run_batch(load_spec(spec_path))
        assert summary.counts == {"ok": 3} and summary.correct == 3 and summary.ran == 3
        records = lines(tmp_path / "out.jsonl")
        assert sorted(r["id"] for r in records) == ["q0", "q1", "q2"]
        for r in records:
            assert set(r) >= {"id", "question", "answer", "status", "iterations", "sub_calls", "usage",
                              "duration_s", "error", "trace", "expected", "correct"}
            assert r["correct"] and Path(r["trace"]).exists()
        # overlap from the records' own timestamps: 2 at a time, never 3
        spans = [(ts(r["started_at"]), ts(r["finished_at"])) for r in records]
        events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        assert peak == 2, spans

        # resume: nothing to do, not one model call
        before = chat_requests(server)
        again = run_batch(load_spec(spec_path))
        assert chat_requests(server) == before
        assert again.ran == 0 and again.skipped == 3 and again.all_ok
        assert len(lines(tmp_path / "out.jsonl")) == 3

        # a new query in the spec: only it runs
        spec_path = make_spec(tmp_path, server.url, 4, concurrency=2)
        more = run_batch(load_spec(spec_path))
        assert more.ran == 1 and more.all_ok
        assert [r["id"] for r in lines(tmp_path / "out.jsonl")][3:] == ["q3"]


def test_retry_failed(engine, tmp_path: Path) -> None:
    steps = [{"status": 400, "message": "scripted refusal"}]
    with FakeModelServer(root=steps, root_default=SOLVE) as server:
        spec_path = make_spec(tmp_path, server.url, 2, concurrency=1)
        first = run_batch(load_spec(spec_path))
        assert first.counts == {"error": 1, "ok": 1} and first.failed_ids == ["q0"]
        failed = read_results(tmp_path / "out.jsonl")["q0"]
        assert failed["status"] == "error" and "scripted refusal" in failed["error"] and failed["answer"] is None

        before = chat_requests(server)
        second = run_batch(load_spec(spec_path))            # failed ids are not rerun without the flag
        assert chat_requests(server) == before and second.ran == 0

        third = run_batch(load_spec(spec_path), retry_failed=True)
        assert third.ran == 1 and third.all_ok and third.correct == 2
        assert chat_requests(server) == before + 1
        assert [(r["id"], r["status"]) for r in lines(tmp_path / "out.jsonl")] == [
            ("q0", "error"), ("q1", "ok"), ("q0", "ok")] or \
            Counter((r["id"], r["status"]) for r in lines(tmp_path / "out.jsonl")) == Counter(
                {("q0", "error"): 1, ("q1", "ok"): 1, ("q0", "ok"): 1})


def _start(spec: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlm", "batch", "run", str(spec), "-o", str(out)],
                            cwd=spec.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for_lines(proc: subprocess.Popen, out: Path, n: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and len([x for x in out.read_text().splitlines() if x.strip()]) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the batch ended early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no result line appeared in time")


def test_sigkill_in_the_middle_then_rerun(engine, tmp_path: Path) -> None:
    with FakeModelServer(root=slow(20, 1.0)) as server:
        spec = make_spec(tmp_path, server.url, 4, concurrency=2)
        out = tmp_path / "out.jsonl"
        proc = _start(spec, out)
        _wait_for_lines(proc, out, 1)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        done_before = {k for k, v in read_results(out).items() if v["status"] == "ok"}
        assert done_before and len(done_before) < 4

        summary = run_batch(load_spec(spec))                 # its sessions reap the killed run's containers
        assert summary.all_ok and summary.correct == 4
        ok_lines = Counter(r["id"] for r in lines(out) if r["status"] == "ok")
        assert ok_lines == Counter({"q0": 1, "q1": 1, "q2": 1, "q3": 1})   # nothing lost, nothing repeated
        assert summary.ran == 4 - len(done_before)
        assert our_containers(engine, proc.pid) == []


def test_sigterm_exits_130_and_keeps_lines(engine, tmp_path: Path) -> None:
    with FakeModelServer(root=slow(20, 1.0)) as server:
        spec = make_spec(tmp_path, server.url, 4, concurrency=2)
        out = tmp_path / "out.jsonl"
        proc = _start(spec, out)
        _wait_for_lines(proc, out, 1)
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr and "run the same command again" in stderr
        kept = lines(out)                                    # every line is whole JSON
        assert 1 <= len(kept) < 4 and all(r["status"] == "ok" for r in kept)
        assert our_containers(engine, proc.pid) == []        # its sandboxes were closed on the way out


def test_a_batch_with_a_warm_pool_answers_every_query_from_fresh_containers(engine, tmp_path: Path) -> None:
    with FakeModelServer(root=slow(4, 0.0)) as server:
        spec_path = make_spec(tmp_path, server.url, 4, concurrency=2, extra="")
        text = spec_path.read_text().replace("settings: {max_iterations: 2, max_retries: 0}",
                                              "settings: {max_iterations: 2, max_retries: 0, pool_size: 2}")
        spec_path.write_text(text)
        spec = load_spec(spec_path)
        assert spec.settings.pool_size == 2
        summary = run_batch(spec)
        assert summary.counts == {"ok": 4} and summary.correct == 4
    assert our_containers(engine, os.getpid()) == []


def test_two_runs_on_one_results_file_the_second_exits_2_and_nothing_runs_twice(engine, tmp_path: Path) -> None:
    """D7: the first run holds the results file's lock; the second stops at once, naming its pid."""
    with FakeModelServer(root=slow(4, 3.0)) as server:
        spec = make_spec(tmp_path, server.url, 2, concurrency=2)
        out = tmp_path / "out.jsonl"
        first = _start(spec, out)
        lock = tmp_path / "out.jsonl.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().split()[:1] == [str(first.pid)]):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.02)
        second = subprocess.run([sys.executable, "-m", "rlm", "batch", "run", str(spec), "-o", str(out)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid}" in second.stderr and "being written by another rlm process" in second.stderr
        _, stderr = first.communicate(timeout=120)
        assert first.returncode == 0, stderr
        assert Counter(r["id"] for r in lines(out)) == Counter({"q0": 1, "q1": 1})
        assert chat_requests(server) == 2                      # 2 root calls, not 4
        assert not lock.exists()
