"""`rlm batch run --executor ray` on a real two-node Ray cluster started on this machine
(markers ``ray`` and ``docker``): every node runs its queries in sandboxes on the local Docker
engine; only the driver writes the results; a node killed mid-batch loses nothing; Ctrl-C /
SIGTERM of the driver cancels the tasks and removes their containers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from raycluster import RayCluster

from rlm.llm.fake_server import FakeModelServer

pytestmark = [pytest.mark.ray, pytest.mark.docker]

# The root model's reply: regex code over the context, so every answer is right.
SOLVE = ('```repl\nimport re\nm = re.search(r"The code is (\\d+)", context)\n'
         'FINAL(m.group(1) if m else "not found")\n```')
RUN_TIMEOUT_S = 150.0


def make_spec(folder: Path, url: str, n: int) -> Path:
    docs = folder / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    queries = []
    for i in range(n):
        (docs / f"d{i}.txt").write_text(f"Some filler text.\nThe code is {2000 + i}.\nMore filler.\n")
        queries.append(f"  - {{id: q{i}, question: 'What is the code?', context_file: docs/d{i}.txt, "
                       f"expected: '{2000 + i}'}}")
    spec = folder / "spec.yaml"
    spec.write_text(f"model: {{base_url: '{url}', root_model: root-model}}\n"
                    "settings: {max_iterations: 2, max_retries: 0}\n"
                    "executor: ray\noutput: out.jsonl\nqueries:\n" + "\n".join(queries) + "\n")
    return spec


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def start(spec: Path, cluster: RayCluster, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlm", "batch", "run", str(spec), "--address", cluster.address,
                             *extra], cwd=spec.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"})


def finish(proc: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"the batch did not finish in {timeout} s:\n{err[-3000:]}")


def wait_until(condition, what: str, timeout: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the batch ended ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.1)
    if proc is not None:
        proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def containers_of(engine, pids) -> list[str]:
    wanted = {str(p) for p in pids}
    return [c.name for c in engine.list_labelled("rlm.session") if c.labels.get("rlm.owner_pid") in wanted]


@pytest.fixture
def two_nodes(ray_cluster: RayCluster) -> RayCluster:
    """The cluster with its head and one live worker node (a test before may have killed one)."""
    live = [n for n in ray_cluster.nodes if n.proc.poll() is None and n.raylet_pid() is not None]
    if len(live) < 2:
        ray_cluster.add_node()
        ray_cluster.wait_for_nodes(2)
    return ray_cluster


def worker(cluster: RayCluster):
    return next(n for n in reversed(cluster.nodes) if n.name != "head" and n.raylet_pid() is not None)


def test_eight_queries_run_on_both_nodes(engine, two_nodes: RayCluster, tmp_path: Path) -> None:
    steps = [{"content": SOLVE, "delay_s": 0.5}] * 8
    with FakeModelServer(root=steps, root_default=SOLVE) as server:
        spec = make_spec(tmp_path, server.url, 8)
        proc = start(spec, two_nodes)
        _out, err = finish(proc)
        assert proc.returncode == 0, err[-3000:]
        records = lines(tmp_path / "out.jsonl")
        assert sorted(r["id"] for r in records) == [f"q{i}" for i in range(8)]
        assert all(r["status"] == "ok" and r["correct"] and r["answer"] == r["expected"] for r in records)
        node_ids = {n.node_id() for n in two_nodes.nodes if n.raylet_pid() is not None}
        assert {r["node"] for r in records} == node_ids      # tasks seen on both nodes
        assert all(Path(r["trace"]).exists() for r in records)

        before = len(server.requests)                        # a rerun: nothing to do, no model call
        again = start(spec, two_nodes)
        _out, err = finish(again)
        assert again.returncode == 0, err[-3000:]
        assert len(server.requests) == before and len(lines(tmp_path / "out.jsonl")) == 8
    pids = {p for n in two_nodes.nodes for p in n.pids()}
    assert containers_of(engine, pids) == []


def test_a_node_without_the_image_is_a_fatal_error_naming_the_node(two_nodes: RayCluster, tmp_path: Path) -> None:
    with FakeModelServer(root_default=SOLVE) as server:
        spec = make_spec(tmp_path, server.url, 2)
        spec.write_text(spec.read_text().replace("max_retries: 0}", "max_retries: 0, image: 'rlm-sandbox:not-on-nodes'}"))
        proc = start(spec, two_nodes)
        _out, err = finish(proc)
        flat = " ".join(err.split())
        assert proc.returncode == 3, err[-3000:]
        assert "the sandbox image rlm-sandbox:not-on-nodes is not built there" in flat
        node_ids = [n.node_id() for n in two_nodes.nodes]
        assert any(f"({node_id[:12]})" in flat for node_id in node_ids if node_id)   # names the node
        assert "rlm sandbox build" in flat
        assert server.requests == []                         # the check comes before any model call
    assert lines(tmp_path / "out.jsonl") == []


def test_sigterm_of_the_driver_cancels_the_tasks_and_removes_their_containers(
        engine, two_nodes: RayCluster, tmp_path: Path) -> None:
    with FakeModelServer(root=[{"content": SOLVE, "delay_s": 3.0}] * 20, root_default=SOLVE) as server:
        spec = make_spec(tmp_path, server.url, 6)
        proc = start(spec, two_nodes)
        node_pids = lambda: {p for n in two_nodes.nodes for p in n.pids()}  # noqa: E731
        wait_until(lambda: len(containers_of(engine, node_pids())) >= 2, "a sandbox on each node", 90, proc)
        proc.send_signal(signal.SIGTERM)
        _out, err = finish(proc, 60)
        assert proc.returncode == 130, err[-3000:]
        assert "interrupted" in err
        kept = lines(tmp_path / "out.jsonl")
        assert len(kept) < 6 and all(r["status"] == "ok" for r in kept)
        # the tasks were cancelled: no sandbox of theirs is left, and none starts afterwards
        assert containers_of(engine, two_nodes.nodes[0].seen | worker(two_nodes).seen) == []
        seen = len(server.requests)
        time.sleep(1.0)  # not a readiness check: a cancelled task must not call the model again
        assert len(server.requests) == seen


def test_a_worker_node_killed_mid_batch_loses_nothing_and_a_rerun_resumes(
        engine, two_nodes: RayCluster, tmp_path: Path) -> None:
    steps = [{"content": SOLVE, "delay_s": 0.5}] * 8
    with FakeModelServer(root=steps, root_default=SOLVE) as server:
        spec = make_spec(tmp_path, server.url, 8)
        out = tmp_path / "out.jsonl"
        victim = worker(two_nodes)
        victim_id = victim.node_id()
        proc = start(spec, two_nodes)
        wait_until(lambda: len(lines(out)) >= 2 and containers_of(engine, victim.pids()),
                   "2 results, and a query running on the worker node", 120, proc)
        victim.pids()                                        # remember its workers for the checks below
        raylet = victim.raylet_pid()
        assert raylet is not None
        os.kill(raylet, signal.SIGKILL)
        killed_at = time.time()
        _out, err = finish(proc)
        assert proc.returncode == 0, err[-3000:]
        records = lines(out)
        assert Counter(r["id"] for r in records) == Counter({f"q{i}": 1 for i in range(8)})  # nothing lost or doubled
        assert all(r["status"] == "ok" and r["correct"] for r in records)
        from datetime import datetime

        late = [r for r in records if datetime.fromisoformat(r["finished_at"]).timestamp() > killed_at + 1]
        assert late and all(r["node"] != victim_id for r in late)   # what the dead node held ran elsewhere
        # the killed node's sandboxes (their owners died with it) were removed
        wait_until(lambda: containers_of(engine, victim.seen) == [], "the dead node's sandboxes to go", 30)

        before = len(server.requests)
        again = start(spec, two_nodes)                       # a rerun resumes: every id is done
        _out, err = finish(again)
        assert again.returncode == 0, err[-3000:]
        assert "8 already done" in err
        assert len(server.requests) == before and len(lines(tmp_path / "out.jsonl")) == 8
