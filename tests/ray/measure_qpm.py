"""Queries per minute of a batch on a Ray cluster of 1, then 2 nodes started on this machine
(the nodes share its cores), against the scripted model server; and the local executor for
reference.  Prints the figures; not a test.

    .venv/bin/python tests/ray/measure_qpm.py [--n 12]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raycluster import RayCluster  # noqa: E402

from rlm.jobs import load_spec, run_batch  # noqa: E402
from rlm.llm.fake_server import FakeModelServer  # noqa: E402

SOLVE = ('```repl\nimport re\nm = re.search(r"The code is (\\d+)", context)\n'
         'FINAL(m.group(1) if m else "not found")\n```')


def spec_for(folder: Path, url: str, n: int, executor: str, concurrency: int) -> Path:
    folder.mkdir(parents=True)
    lines = []
    for i in range(n):
        (folder / f"d{i}.txt").write_text(f"filler\nThe code is {i}.\nfiller\n")
        lines.append(f"  - {{id: q{i}, question: 'What is the code?', context_file: d{i}.txt, expected: '{i}'}}")
    spec = folder / "spec.yaml"
    spec.write_text(f"model: {{base_url: '{url}', root_model: root-model}}\nsettings: {{max_iterations: 2}}\n"
                    f"executor: {executor}\nconcurrency: {concurrency}\nqueries:\n" + "\n".join(lines) + "\n")
    return spec


def measure(label: str, base: Path, url: str, n: int, executor_kind: str, concurrency: int = 1,
            executor=None) -> None:
    spec = load_spec(spec_for(base / label.replace(" ", "-"), url, n, executor_kind, concurrency))
    started = time.perf_counter()
    summary = run_batch(spec, executor=executor)
    wall = time.perf_counter() - started
    assert summary.all_ok and summary.correct == n, summary.to_dict()
    print(f"{label:28s} {n} queries in {wall:6.1f} s = {60 * n / wall:5.1f} queries/min", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=12)
    args = parser.parse_args()
    from rlm.jobs.ray_executor import RayExecutor

    with tempfile.TemporaryDirectory() as tmp, FakeModelServer(root_default=SOLVE) as server:
        base = Path(tmp)
        measure("local, concurrency 1", base, server.url, args.n, "local", 1)
        measure("local, concurrency 2", base, server.url, args.n, "local", 2)
        cluster = RayCluster(base)
        try:
            cluster.start_head()
            cluster.wait_for_nodes(1)
            with RayExecutor(cluster.address) as warm:          # workers started, modules imported
                run_batch(load_spec(spec_for(base / "warm1", server.url, 2, "ray", 1)), executor=warm)
            with RayExecutor(cluster.address) as ex:
                measure("ray, 1 node (1 CPU)", base, server.url, args.n, "ray", executor=ex)
            cluster.add_node()
            cluster.wait_for_nodes(2)
            with RayExecutor(cluster.address) as warm:
                run_batch(load_spec(spec_for(base / "warm2", server.url, 4, "ray", 1)), executor=warm)
            with RayExecutor(cluster.address) as ex:
                measure("ray, 2 nodes (1 CPU each)", base, server.url, args.n, "ray", executor=ex)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
