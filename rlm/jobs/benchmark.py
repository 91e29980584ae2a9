"""Running benchmarks: each item through the RLM loop and, with ``compare_base``, through the same
root model asked directly (one prompt), shown as much of the context as its window takes
(:mod:`rlm.bench.window`), and, where the data has one, an oracle: the base model shown only the
passages that hold the answer (HotpotQA: the question's own 10 paragraphs; SQuAD: its paragraph).

Items come from one split (``dev`` for tuning, ``test`` held out; :mod:`rlm.bench.splits`).  Items
run on an executor (``concurrency`` at a time; 1 keeps model calls in a fixed order).  An item's
infrastructure error is recorded (score 0) unless it would fail every item the same way (see
``rlm.jobs.batch.FATAL_ERRORS``), which stops the run.

Each finished item is appended to a results file (JSONL, :mod:`rlm.jobs.results`) as it ends,
with its split, the git commit and the run's fingerprint (:mod:`rlm.bench.fingerprint`).  A
results file is new by default: an existing one is refused unless ``resume`` is set, and then
only when its records carry this run's fingerprint; a stopped run so continues with what is not
yet done (an item side that ended in an error runs again).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from rlm.bench import splits
from rlm.bench.fingerprint import differences
from rlm.bench.generators import PUBLIC, BenchItem, generate
from rlm.bench.scorers import metrics
from rlm.bench.stats import interval
from rlm.bench.window import Window, fit
from rlm.config import Settings
from rlm.core import parsing
from rlm.core.context import inline_text
from rlm.core.orchestrator import Orchestrator
from rlm.errors import UsageError
from rlm.jobs.batch import FATAL_ERRORS
from rlm.jobs.executor import Cancelled, CancelToken, LocalExecutor
from rlm.jobs.loop import Outcome, Reporter, run_jobs
from rlm.jobs.results import ResultWriter, read_results
from rlm.llm.base import ModelClient

BASE_SYSTEM = ("You answer questions about a document. Reply with the answer only: no explanation, "
               "no restating the question.")
BASE_PROMPT = "Document:\n<<<\n{document}\n>>>\n{note}\nQuestion: {question}\nAnswer:"
SIDES = ("rlm", "base", "oracle")
SYSTEM_LABELS = {"rlm": "RLM", "base": "base (full window)", "oracle": "oracle (gold passages)"}


def _tokens(usage: dict) -> int:
    return sum(int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0)) for u in usage.values())


def _message(exc: BaseException) -> str:
    return getattr(exc, "message", None) or f"{exc.__class__.__name__}: {exc}"


def base_prompt(question: str, shown: str, cut: int) -> str:
    """The direct prompt: ``shown`` (a prefix of the context; ``cut`` characters were left out), then the question."""
    note = (f"(The document was cut to its first {len(shown):,} characters; {cut:,} more were not shown.)\n"
            if cut else "")
    return BASE_PROMPT.format(document=shown, note=note, question=question)


def primary_metric(benchmark: str) -> str:
    return "F1" if benchmark in PUBLIC else "score"


@dataclass
class ItemResult:
    item: BenchItem
    rlm: dict
    base: dict | None = None
    oracle: dict | None = None

    def side(self, name: str) -> dict | None:
        return {"rlm": self.rlm, "base": self.base, "oracle": self.oracle}[name]

    def to_dict(self) -> dict:
        return {**self.item.to_dict(), "rlm": self.rlm, "base": self.base, "oracle": self.oracle}


def _rate(runs: list[dict]) -> float | None:
    """Tokens (prompt + completion) the model processed per second of these runs, all together."""
    seconds = sum(r["duration_s"] for r in runs)
    return round(sum(r["tokens"] for r in runs) / seconds, 1) if seconds > 0 else None


def side_summary(runs: list[dict]) -> dict:
    """n, the primary score's mean with its 95% interval, exact match with its Wilson interval, cost."""
    return {"n": len(runs), "score": interval([r["score"] for r in runs]),
            "exact": interval([float(r.get("exact", 1.0 if r["score"] >= 1.0 else 0.0)) for r in runs]),
            "time_s": round(mean(r["duration_s"] for r in runs), 3), "tokens": round(mean(r["tokens"] for r in runs)),
            "tokens_per_s": _rate(runs), "errors": sum(1 for r in runs if r.get("status") == "error")}


@dataclass
class BenchReport:
    benchmarks: list[str]
    sizes: list[int]
    n: int
    seed: int
    split: str | None
    root_model: str
    sub_model: str
    compare_base: bool
    window: dict | None = None          # the base model's window (Window.describe())
    fingerprint: dict | None = None
    results: list[ItemResult] = field(default_factory=list)
    wall_s: float = 0.0
    resumed: int = 0            # items taken from the results file instead of run
    results_path: str | None = None

    @property
    def title(self) -> str:
        return ", ".join(self.benchmarks)

    def rows(self, benchmark: str | None = None) -> list[dict]:
        """One summary row per benchmark and size (only ``benchmark``'s when given), each system's
        figures under ``systems`` (``rlm``, ``base``, ``oracle``, those that ran)."""
        out = []
        for name in self.benchmarks if benchmark is None else [benchmark]:
            for size in self.sizes:
                rs = [r for r in self.results if r.item.size == size and r.item.benchmark == name]
                if rs:
                    out.append(_row(name, size, rs))
        return out

    def to_dict(self) -> dict:
        return {"benchmarks": self.benchmarks, "size_unit": "characters", "sizes": self.sizes, "n": self.n,
                "seed": self.seed, "split": self.split, "root_model": self.root_model, "sub_model": self.sub_model,
                "compare_base": self.compare_base, "window": self.window, "fingerprint": self.fingerprint,
                "intervals": "95%: Wilson for exact match and 0/1 scores; percentile bootstrap (2,000 resamples, "
                             "seed 0) for mean F1 and partial scores",
                "wall_s": round(self.wall_s, 3), "resumed": self.resumed, "results_path": self.results_path,
                "summary": self.rows(), "items": [r.to_dict() for r in self.results]}


def _row(name: str, size: int, rs: list[ItemResult]) -> dict:
    systems: dict[str, Any] = {}
    for side in SIDES:
        runs = [s for s in (r.side(side) for r in rs) if s is not None]
        if runs:
            systems[side] = side_summary(runs)
    row = {"benchmark": name, "size": size, "n": len(rs), "metric": primary_metric(name), "systems": systems}
    for side in SIDES:
        row[f"{side}_score"] = systems[side]["score"]["mean"] if side in systems else None
    return row


# ---------------------------------------------------------------------------- results file
@dataclass
class Resumed:
    """What a results file already holds for one item: each side's result, None when it must run (again)."""

    rlm: dict | None
    base: dict | None = None
    oracle: dict | None = None

    def complete(self, need_base: bool, need_oracle: bool) -> bool:
        return self.rlm is not None and (self.base is not None or not need_base) \
            and (self.oracle is not None or not need_oracle)


def check_results_file(path: Path, fingerprint: dict, *, resume: bool) -> dict[str, dict]:
    """The records of ``path`` this run may continue from (empty for a new file).

    Refused with a UsageError: an existing file without ``resume``; ``resume`` of a missing file;
    a fingerprint that differs from the records' (every difference is named); a dirty tree.
    """
    exists = path.exists() and path.stat().st_size > 0
    if not resume:
        if exists:
            raise UsageError(f"the results file {path} already exists",
                             hint=f"give a new --results file, or continue that run with --resume {path}")
        return {}
    if not exists:
        raise UsageError(f"--resume {path}: no such results file (or it is empty)",
                         hint="leave out --resume to start a new results file")
    if fingerprint.get("dirty"):
        raise UsageError("--resume needs a clean tree: rlm's code differs from the commit "
                         f"({', '.join(fingerprint['dirty'][:5])}{'...' if len(fingerprint['dirty']) > 5 else ''})",
                         hint="commit (or undo) the changes, then start a new results file")
    records = read_results(path)
    for record in records.values():
        theirs = record.get("run")
        if not isinstance(theirs, dict):
            raise UsageError(f"the results file {path} holds records without a run fingerprint",
                             hint="start a new results file")
        if theirs != fingerprint:
            diff = differences(theirs, fingerprint)
            raise UsageError(f"the results file {path} was made by another run: " + "; ".join(diff[:6])
                             + (f" (and {len(diff) - 6} more)" if len(diff) > 6 else ""),
                             hint="start a new results file (leave out --resume)")
    return records


def kept_sides(records: dict[str, dict], items: list[BenchItem]) -> dict[str, Resumed]:
    """Each item's sides found in ``records`` that ended without an error."""
    def ok(value: Any) -> dict | None:
        return value if isinstance(value, dict) and value.get("status") != "error" else None

    found = {}
    for item in items:
        record = records.get(item.id)
        if record is not None:
            found[item.id] = Resumed(ok(record.get("rlm")), ok(record.get("base")), ok(record.get("oracle")))
    return found


def new_trace_dir(settings: Settings) -> Path:
    """A new folder name for one benchmark run's traces (and, by default, its results file)."""
    return Path(settings.run.trace_dir) / f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


class BenchRunner:
    def __init__(self, settings: Settings, client: ModelClient, *, compare_base: bool = False,
                 window: Window | None = None, trace_dir: Path | None = None,
                 reporter: Reporter | None = None, base_ids: set[str] | None = None,
                 base_client: ModelClient | None = None) -> None:
        if compare_base and window is None:
            raise ValueError("compare_base needs the base model's window")
        self.base_ids = base_ids      # items the full-window base runs on (None: all)
        self.settings = settings
        self.client = client
        self.base_client = base_client or client   # the base and the oracle: one long request each
        self.compare_base = compare_base
        self.window = window
        self.trace_dir = Path(trace_dir) if trace_dir else new_trace_dir(settings)
        self.reporter = reporter
        self.token = CancelToken()

    def run_rlm(self, item: BenchItem) -> dict:
        trace = self.trace_dir / f"{item.id}.jsonl"
        orch = Orchestrator(self.settings, self.client, progress=self.token.progress,
                            session_factory=self.token.session_factory(self.settings.sandbox))
        started = time.perf_counter()
        try:
            with inline_text(item.context, max_bytes=self.settings.run.max_context_bytes) as source:
                result = orch.run(item.question, source.path, trace_path=trace)
        except (Cancelled, *FATAL_ERRORS):
            raise
        except Exception as exc:  # noqa: BLE001 - this item's failure is data
            return {"answer": None, "score": 0.0, "exact": 0.0, "status": "error",
                    "duration_s": round(time.perf_counter() - started, 3), "tokens": 0, "iterations": 0,
                    "sub_calls": 0, "error": _message(exc), "trace": str(trace)}
        d = result.to_dict()
        return {"answer": result.answer, **metrics(item.scorer, result.answer, item.expected),
                "status": result.status, "duration_s": d["duration_s"], "tokens": _tokens(d["usage"]),
                "iterations": result.iterations, "sub_calls": result.sub_calls, "error": result.error,
                "trace": result.trace}

    def run_base(self, item: BenchItem, context: str | None = None) -> dict:
        """The root model asked directly, shown as much of ``context`` (default: the item's) as fits its window."""
        self.token.check()
        assert self.window is not None
        context = item.context if context is None else context
        started = time.perf_counter()
        shown: dict[str, Any] = {"context_chars": len(context)}
        try:
            fitted = fit(context, lambda prefix, cut: base_prompt(item.question, prefix, cut), BASE_SYSTEM,
                         self.window)
            shown.update(context_chars_shown=len(fitted.shown), prompt_tokens_counted=fitted.prompt_tokens,
                         full_prompt_tokens_counted=fitted.full_prompt_tokens)
            messages = [{"role": "system", "content": BASE_SYSTEM}, {"role": "user", "content": fitted.prompt}]
            completion = self.base_client.complete(messages, model=self.settings.model.root_model,
                                              temperature=self.settings.model.temperature,
                                              max_tokens=self.window.answer_tokens)
        except FATAL_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the prompt is over the model's window
            return {"answer": None, "score": 0.0, "exact": 0.0, "status": "error",
                    "duration_s": round(time.perf_counter() - started, 3), "tokens": 0, "error": _message(exc),
                    **shown}
        answer = completion.text.strip()
        final = parsing.find_final(answer)
        if final is not None and final.kind == "answer":
            answer = final.value
        return {"answer": answer, **metrics(item.scorer, answer, item.expected), "status": "ok",
                "duration_s": round(time.perf_counter() - started, 3),
                "tokens": completion.usage.prompt_tokens + completion.usage.completion_tokens, "error": None,
                **shown}

    def run_item(self, item: BenchItem, kept: Resumed | None = None) -> ItemResult | None:
        """Run ``item`` (the sides ``kept`` from a results file are not run again)."""
        kept = kept or Resumed(None)
        try:
            rlm = kept.rlm if kept.rlm is not None else self.run_rlm(item)
            base = oracle = None
            if self.compare_base:
                if self.base_ids is None or item.id in self.base_ids:
                    base = kept.base if kept.base is not None else self.run_base(item)
                if item.oracle_context is not None:
                    oracle = kept.oracle if kept.oracle is not None else self.run_base(item, item.oracle_context)
        except Cancelled:
            return None
        return ItemResult(item, rlm, base, oracle)

    def run(self, items: list[BenchItem], *, concurrency: int = 1, writer: ResultWriter | None = None,
            run: dict | None = None, total: int | None = None, skipped: int = 0,
            kept: dict[str, Resumed] | None = None) -> list[ItemResult]:
        """Run ``items``; each result is appended to ``writer`` (with ``run``, the fingerprint) as it ends."""
        executor = LocalExecutor(max(1, min(concurrency, len(items) or 1)))
        done_results: dict[str, ItemResult] = {}
        kept = kept or {}
        commit = (run or {}).get("git_commit")

        def accept(item: BenchItem, res: ItemResult) -> dict:
            done_results[res.item.id] = res
            if writer is not None:
                writer.write({**res.to_dict(), "git_commit": commit, "run": run})
            return {"id": res.item.id, "status": res.rlm["status"], "score": res.rlm["score"],
                    "duration_s": res.rlm["duration_s"], "base_score": (res.base or {}).get("score")}

        run_jobs(executor, lambda item: self.run_item(item, kept.get(item.id)), items, Outcome(accept),
                 token=self.token, reporter=self.reporter, total=total, skipped=skipped)
        return [done_results[it.id] for it in items if it.id in done_results]


def check_seed(names: list[str], seed: int, split: str | None) -> None:
    """Test-split runs of generated benchmarks use fresh seeds (seeds below 100 were read while tuning)."""
    generated = [n for n in names if n not in PUBLIC]
    if split == "test" and generated and seed < splits.FRESH_SEEDS_FROM:
        raise UsageError(f"--split test with --seed {seed}: seeds below {splits.FRESH_SEEDS_FROM} of the generated "
                         f"benchmarks ({', '.join(generated)}) were read while tuning the loop",
                         hint=f"use a fresh seed (>= {splits.FRESH_SEEDS_FROM}; the default for --split test is "
                              f"{splits.DEFAULT_TEST_SEED})")


def run_fingerprint(settings: Settings, *, seed: int, split: str | None, window: Window | None,
                    props: dict | None = None, git: dict | None = None) -> dict:
    """This run's fingerprint (see :mod:`rlm.bench.fingerprint`)."""
    from rlm.bench.fingerprint import code_hash, git_state, reply_settings, server_identity
    from rlm.bench.public import WHEEL_SHA256

    state = git if git is not None else git_state()
    return {"git_commit": state["commit"], "dirty": state["dirty"], "code": code_hash(),
            **server_identity(settings.model.base_url, props),
            "settings": reply_settings(settings), "seed": seed, "split": split,
            "base_window": window.describe() if window is not None else None, "data_sha256": WHEEL_SHA256}


def check_test_split(split: str | None, fingerprint: dict) -> None:
    """A test-split run needs a git checkout with rlm's code as committed."""
    if split != "test":
        return
    if not fingerprint.get("git_commit"):
        raise UsageError("--split test needs a git checkout: every record names the commit it was made with")
    if fingerprint.get("dirty"):
        raise UsageError("--split test needs rlm's code as committed; these differ: "
                         + ", ".join(fingerprint["dirty"][:8]) + ("..." if len(fingerprint["dirty"]) > 8 else ""),
                         hint="commit (or undo) the changes first: a test figure names the commit it measured")


def run_benchmark(names: str | list[str], sizes: list[int], *, n: int, seed: int, settings: Settings,
                  client: ModelClient, split: str | None = "dev", compare_base: bool = False,
                  window: Window | None = None, concurrency: int = 1, reporter: Reporter | None = None,
                  trace_dir: Path | None = None, results_path: Path | None = None, resume: bool = False,
                  fingerprint: dict | None = None, base_n: int | None = None,
                  base_client: ModelClient | None = None) -> BenchReport:
    """Generate ``n`` items per size of each benchmark in ``names`` from ``split``, run those not
    already done in the results file (``resume``), and return the report of all of them.

    The results file defaults to ``results.jsonl`` in the run's trace folder.  ``window`` (needed
    with ``compare_base``): the base model's window, e.g. :func:`rlm.bench.window.detect`.
    ``fingerprint``: computed from the checkout, the server and ``settings`` when None.
    ``base_n``: the full-window base runs on the first ``base_n`` items of each benchmark and size
    only (it reads a whole window per item: minutes on a small CPU); RLM and the oracle on all.
    ``base_client``: the client of the base and oracle requests (default ``client``), e.g. one whose
    request timeout allows a whole window to be read.
    """
    from rlm.llm.resolve import check_models

    started = time.perf_counter()
    names = [names] if isinstance(names, str) else list(names)
    splits.check_split(split)
    check_seed(names, seed, split)
    if compare_base and window is None:
        raise UsageError("compare_base needs the base model's window (rlm.bench.window.detect)")
    runner = BenchRunner(settings, client, compare_base=compare_base, window=window, trace_dir=trace_dir,
                         reporter=reporter, base_client=base_client)
    path = Path(results_path) if results_path is not None else runner.trace_dir / "results.jsonl"
    if fingerprint is None:
        from rlm.bench.window import server_props

        fingerprint = run_fingerprint(settings, seed=seed, split=split, window=window,
                                      props=server_props(settings.model.base_url, settings.model.api_key))
    check_test_split(split, fingerprint)
    records = check_results_file(path, fingerprint, resume=resume)
    items = [item for name in names for item in generate(name, sizes, n, seed, split)]
    if base_n is not None:
        runner.base_ids = {item.id for name in names for size in sizes
                           for item in [i for i in items if i.benchmark == name and i.size == size][:base_n]}
    wants_base = {item.id for item in items if compare_base and (runner.base_ids is None or item.id in runner.base_ids)}
    found = kept_sides(records, items)
    by_id = {item.id: item for item in items}
    done = {i: ItemResult(by_id[i], r.rlm, r.base if i in wants_base else None,  # type: ignore[arg-type]
                          r.oracle if compare_base else None)
            for i, r in found.items()
            if r.complete(i in wants_base, compare_base and by_id[i].oracle_context is not None)}
    to_run = [item for item in items if item.id not in done]
    if to_run:
        check_models(client, settings)
    with ResultWriter(path) as writer:
        fresh = runner.run(to_run, concurrency=concurrency, writer=writer, run=fingerprint, total=len(items),
                           skipped=len(done), kept=found)
    results = {**done, **{r.item.id: r for r in fresh}}
    return BenchReport(benchmarks=names, sizes=sizes, n=n, seed=seed, split=split,
                       root_model=settings.model.root_model, sub_model=settings.model.effective_sub_model,
                       compare_base=compare_base, window=window.describe() if window is not None else None,
                       fingerprint=fingerprint, results=[results[it.id] for it in items if it.id in results],
                       wall_s=time.perf_counter() - started, resumed=len(done), results_path=str(path))
