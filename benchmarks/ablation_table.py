"""The ablation table of docs/policy.md from the results files of `rlm benchmark` runs.

    python benchmarks/ablation_table.py results/general.jsonl results/general-minus-*.jsonl ...

One row per file (named by its stem): the RLM side's mean score per benchmark with its 95%
interval and n, the runs that ended without an answer, and for each rule of the loop's policy
on how many items it fired (read from the traces the records name, relative to --root, the
folder the runs were started in; a trace that is gone counts nothing and is said), and on how many
items the answer differs from the first file's (two runs of one loop can differ: the server batches
concurrent requests, and a batch's arithmetic is not bit-identical to a lone request's).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

from rlm.bench.stats import interval
from rlm.core.trace import read_trace
from rlm.jobs.results import read_results

BENCHMARKS = ("hotpotqa", "squad", "oolong", "code_qa")


def _fired(trace: Path) -> set[str]:
    return {str(event.get("id")) for event in read_trace(trace) if event.get("kind") == "rule"}


def row(path: Path, root: Path) -> tuple[str, dict[str, str], Counter[str], int, dict[str, object]]:
    scores: dict[str, list[float]] = defaultdict(list)
    no_answer: Counter[str] = Counter()
    fired: Counter[str] = Counter()
    answers: dict[str, object] = {}
    missing = 0
    records = read_results(path)
    if not records:
        raise SystemExit(f"{path}: no records of rlm benchmark in it (a results file is one JSON object a line)")
    for record in records.values():
        side = record.get("rlm") or {}
        answers[record["id"]] = side.get("answer")
        scores[record["benchmark"]].append(float(side.get("score") or 0.0))
        no_answer[record["benchmark"]] += side.get("status") == "no_answer"
        trace = root / str(side.get("trace") or "")
        if side.get("trace") and trace.is_file():
            fired.update(_fired(trace))
        else:
            missing += 1
    cells = {}
    for name, values in scores.items():
        iv = interval(values)
        extra = f", {no_answer[name]} no answer" if no_answer[name] else ""
        cells[name] = f"{iv['mean']:.2f} [{iv['lo']:.2f}, {iv['hi']:.2f}] n={iv['n']}{extra}"
    return path.stem, cells, fired, missing, answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results files (JSONL) of rlm benchmark")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the folder the runs were started in")
    args = parser.parse_args(argv)
    rows = [row(path, args.root) for path in args.results]
    names = [b for b in BENCHMARKS if any(b in cells for _, cells, _, _, _ in rows)]
    first = rows[0][4]
    print("| run | " + " | ".join(names) + f" | answers unlike {rows[0][0]}'s | rules fired (items) |")
    print("|---|" + "---|" * len(names) + "---|---|")
    for stem, cells, fired, missing, answers in rows:
        rules = ", ".join(f"{rule} {count}" for rule, count in sorted(fired.items(), key=lambda kv: (-kv[1], kv[0])))
        if missing:
            rules += f" ({missing} traces not found)"
        shared = [i for i in answers if i in first]
        changed = sum(answers[i] != first[i] for i in shared)
        print(f"| {stem} | " + " | ".join(cells.get(b, "-") for b in names) + f" | {changed} of {len(shared)} | "
              f"{rules or '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
