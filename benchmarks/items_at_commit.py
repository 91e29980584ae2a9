"""Run another checkout's loop on the generated items of a results file.

    git worktree add /tmp/old 1228e81
    python benchmarks/items_at_commit.py --checkout /tmp/old --results docs/bench/test-20261207.jsonl \\
        --name oolong,code_qa -- --sizes 256k --results old.jsonl

Reads which items of each generated benchmark (``oolong-256000-12`` is item 12) and which seed the
results file holds, then starts ``rlm benchmark`` of the checkout with its generator patched to
make exactly those items (checked against the questions and answers in the file before anything
runs).  What follows ``--`` goes to that checkout's ``rlm benchmark`` as it is (its own flags: an
older checkout has no ``--split``).  For comparing today's figures with an earlier loop's on the
same items; the public benchmarks (hotpotqa, squad) are newer than the loops worth comparing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path


def _wanted(results: Path, names: list[str]) -> tuple[dict[str, list[int]], int, dict[str, dict]]:
    # read here, not with rlm.jobs.results: this process must import only the checkout's rlm
    indices: dict[str, list[int]] = defaultdict(list)
    seeds, records = set(), {}
    for line in results.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record["benchmark"] not in names:
            continue
        index = int(record["id"].rsplit("-", 1)[1])
        if index not in indices[record["benchmark"]]:
            indices[record["benchmark"]].append(index)
        seeds.add((record.get("run") or {}).get("seed", record.get("seed")))
        records[record["id"]] = record
    seeds.discard(None)
    if len(seeds) != 1:
        raise SystemExit(f"the results file should hold one seed, it holds {sorted(seeds) or 'none'}")
    return dict(indices), int(seeds.pop()), records


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True, help="a checkout (git worktree) of the other commit")
    parser.add_argument("--results", type=Path, required=True, help="the results file whose items to run")
    parser.add_argument("--name", required=True, help="generated benchmarks, comma-separated")
    args = parser.parse_args(own)
    names = [n for n in args.name.split(",") if n]
    indices, seed, records = _wanted(args.results, names)
    sys.path.insert(0, str(args.checkout.resolve()))
    os.chdir(args.checkout)
    import rlm.jobs.benchmark as jobs  # the checkout's
    from rlm.bench.generators import GENERATORS
    from rlm.cli import main as cli

    def generate(name: str, sizes: list[int], n: int, seed_: int, *_a: object, **_k: object) -> list:
        items = [GENERATORS[name](size, i, seed_) for size in sizes for i in indices.get(name, [])]
        for item in items:
            known = records.get(item.id)
            if known is not None and (item.question, item.expected) != (known["question"], known["expected"]):
                raise SystemExit(f"{item.id}: the checkout's generator makes another item than the results file")
        return items

    jobs.generate = generate  # type: ignore[assignment]
    n = max(len(v) for v in indices.values())
    sys.argv = ["rlm", "benchmark", "--name", ",".join(names), "--n", str(n), "--seed", str(seed), *rest]
    cli()
    return 0


if __name__ == "__main__":
    sys.exit(main())
