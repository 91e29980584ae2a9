"""Running benchmarks: each item through the RLM loop and, with ``compare_base``, through
the same root model asked directly with the context cut to a window (one prompt).

One run may cover several benchmarks (``names``).  Items run on an executor (``concurrency``
at a time; 1 keeps model calls in a fixed order).  An item's infrastructure error is recorded
(score 0) unless it would fail every item the same way (see ``rlm.jobs.batch.FATAL_ERRORS``),
which stops the run.

Each finished item is appended to a results file (JSONL, see :mod:`rlm.jobs.results`) as it
ends, so a run that is stopped loses nothing: the same command with the same results file
runs only what is not yet done: an item whose RLM run ended in an error, or was made by
another revision of the loop (its code, prompts or REPL helpers: ``rlm_revision``), runs its
RLM side again and keeps its base answer, the expensive half at large sizes.  A results file
holds one seed and root model; another run's file is refused rather than mixed in.
"""

from __future__ import annotations

import ast
import hashlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

from rlm.bench.generators import BenchItem, generate
from rlm.bench.scorers import score
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

DEFAULT_BASE_WINDOW = 32_000
BASE_SYSTEM = ("You answer questions about a document. Reply with the answer only: no explanation, "
               "no restating the question.")
BASE_PROMPT = "Document:\n<<<\n{document}\n>>>\n{note}\nQuestion: {question}\nAnswer:"


def _tokens(usage: dict) -> int:
    return sum(int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0)) for u in usage.values())


def _message(exc: BaseException) -> str:
    return getattr(exc, "message", None) or f"{exc.__class__.__name__}: {exc}"


def base_prompt(item: BenchItem, window: int) -> str:
    """The direct prompt: the first ``window`` characters of the context, and the question."""
    shown = item.context[:window]
    cut = len(item.context) - len(shown)
    note = (f"(The document was cut to its first {len(shown):,} characters; {cut:,} more were not shown.)\n"
            if cut else "")
    return BASE_PROMPT.format(document=shown, note=note, question=item.question)


@dataclass
class ItemResult:
    item: BenchItem
    rlm: dict
    base: dict | None = None

    def to_dict(self) -> dict:
        return {**self.item.to_dict(), "rlm": self.rlm, "base": self.base}


def _rate(runs: list[dict]) -> float | None:
    """Tokens (prompt + completion) the model processed per second of these runs, all together."""
    seconds = sum(r["duration_s"] for r in runs)
    return round(sum(r["tokens"] for r in runs) / seconds, 1) if seconds > 0 else None


@dataclass
class BenchReport:
    benchmarks: list[str]
    sizes: list[int]
    n: int
    seed: int
    root_model: str
    sub_model: str
    compare_base: bool
    base_window: int
    results: list[ItemResult] = field(default_factory=list)
    wall_s: float = 0.0
    resumed: int = 0            # items taken from the results file instead of run
    results_path: str | None = None

    @property
    def title(self) -> str:
        return ", ".join(self.benchmarks)

    def rows(self, benchmark: str | None = None) -> list[dict]:
        """One summary row per benchmark and size (only ``benchmark``'s when given): mean scores,
        seconds and tokens per query."""
        out = []
        for name in self.benchmarks if benchmark is None else [benchmark]:
            for size in self.sizes:
                rs = [r for r in self.results if r.item.size == size and r.item.benchmark == name]
                if rs:
                    out.append(_row(name, size, rs))
        return out

    def to_dict(self) -> dict:
        return {"benchmarks": self.benchmarks, "size_unit": "characters", "sizes": self.sizes, "n": self.n,
                "seed": self.seed, "root_model": self.root_model, "sub_model": self.sub_model,
                "compare_base": self.compare_base, "base_window": self.base_window if self.compare_base else None,
                "wall_s": round(self.wall_s, 3), "resumed": self.resumed, "results_path": self.results_path,
                "summary": self.rows(), "items": [r.to_dict() for r in self.results]}


def _row(name: str, size: int, rs: list[ItemResult]) -> dict:
    row = {"benchmark": name, "size": size, "n": len(rs),
           "rlm_score": round(mean(r.rlm["score"] for r in rs), 4),
           "rlm_time_s": round(mean(r.rlm["duration_s"] for r in rs), 3),
           "rlm_tokens": round(mean(r.rlm["tokens"] for r in rs)),
           "rlm_tokens_per_s": _rate([r.rlm for r in rs]),
           "rlm_errors": sum(1 for r in rs if r.rlm["status"] == "error"),
           "base_score": None, "base_time_s": None, "base_tokens": None, "base_tokens_per_s": None}
    bs = [r.base for r in rs if r.base is not None]
    if bs:
        row.update(base_score=round(mean(b["score"] for b in bs), 4),
                   base_time_s=round(mean(b["duration_s"] for b in bs), 3),
                   base_tokens=round(mean(b["tokens"] for b in bs)), base_tokens_per_s=_rate(bs))
    return row


# ---------------------------------------------------------------------------- results file
_SAME_ITEMS = ("seed", "root_model")                        # else: another run's items, refused
_SAME_RLM = ("sub_model", "max_iterations", "rlm_revision")  # else: the RLM side runs again


def rlm_revision() -> str:
    """12 hex digits that change whenever an RLM answer could: the loop's code and prompts
    (``rlm.core``) and the REPL's files (the sandbox image's sources).  The loop's modules are
    read as syntax trees without docstrings, so a comment, a docstring or a line break changes
    nothing; every string the model can be shown is in the tree.  The base model's answers do
    not depend on it, so a results file keeps them across revisions."""
    from rlm.core import orchestrator
    from rlm.sandbox.image import image_hash, repo_root_default

    digest = hashlib.sha256(image_hash(repo_root_default(), "").encode())
    for path in sorted(Path(orchestrator.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + code_fingerprint(path.read_text()).encode() + b"\0")
    return digest.hexdigest()[:12]


def code_fingerprint(source: str) -> str:
    """The syntax tree of a module's source, docstrings left out, as text: equal for two sources
    that differ only in comments, docstrings and layout."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def run_key(settings: Settings, *, seed: int, compare_base: bool, base_window: int,
            revision: str | None = None) -> dict:
    """What a results file's record must match to count in this run."""
    return {"seed": seed, "root_model": settings.model.root_model, "sub_model": settings.model.effective_sub_model,
            "max_iterations": settings.run.max_iterations,
            "rlm_revision": revision if revision is not None else rlm_revision(),
            "base_window": base_window if compare_base else None}


@dataclass
class Resumed:
    """What a results file already holds for one item: its RLM result and its base result,
    each None when it must run (again)."""

    rlm: dict | None
    base: dict | None

    def complete(self, compare_base: bool) -> bool:
        return self.rlm is not None and (self.base is not None or not compare_base)


def resume_results(path: Path, items: list[BenchItem], key: dict) -> dict[str, Resumed]:
    """What the results file at ``path`` holds for the items of ``items`` under ``key``.

    An RLM result counts when it did not end in an error and was made with the same sub-model,
    iteration limit and RLM revision; a base result when it was made with the same window.  A
    file with records of another seed or root model raises a UsageError.
    """
    records = read_results(path)
    other = next((r for r in records.values()
                  if any((r.get("run") or {}).get(k) != key[k] for k in _SAME_ITEMS)), None)
    if other is not None:
        theirs = other.get("run") or {}
        differs = ", ".join(f"{k} {theirs.get(k)!r} there, {key[k]!r} now" for k in _SAME_ITEMS
                            if theirs.get(k) != key[k])
        raise UsageError(f"the results file {path} holds another run's items ({differs})",
                         hint="give this run its own --results file, or delete that one")
    found: dict[str, Resumed] = {}
    for item in items:
        record = records.get(item.id)
        if record is None:
            continue
        run = record["run"]
        rlm = record.get("rlm")
        if not isinstance(rlm, dict) or rlm.get("status") == "error" or any(run.get(k) != key[k] for k in _SAME_RLM):
            rlm = None
        base = record.get("base")
        if not isinstance(base, dict) or key["base_window"] is None or run.get("base_window") != key["base_window"]:
            base = None
        if rlm is not None or base is not None:
            found[item.id] = Resumed(rlm, base)
    return found


def new_trace_dir(settings: Settings) -> Path:
    """A new folder name for one benchmark run's traces (and, by default, its results file)."""
    return Path(settings.run.trace_dir) / f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


class BenchRunner:
    def __init__(self, settings: Settings, client: ModelClient, *, compare_base: bool = False,
                 base_window: int = DEFAULT_BASE_WINDOW, trace_dir: Path | None = None,
                 reporter: Reporter | None = None) -> None:
        self.settings = settings
        self.client = client
        self.compare_base = compare_base
        self.base_window = base_window
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
            return {"answer": None, "score": 0.0, "status": "error",
                    "duration_s": round(time.perf_counter() - started, 3), "tokens": 0, "iterations": 0,
                    "sub_calls": 0, "error": _message(exc), "trace": str(trace)}
        d = result.to_dict()
        return {"answer": result.answer, "score": round(score(item.scorer, result.answer, item.expected), 4),
                "status": result.status, "duration_s": d["duration_s"], "tokens": _tokens(d["usage"]),
                "iterations": result.iterations, "sub_calls": result.sub_calls, "error": result.error,
                "trace": result.trace}

    def run_base(self, item: BenchItem) -> dict:
        self.token.check()
        messages = [{"role": "system", "content": BASE_SYSTEM},
                    {"role": "user", "content": base_prompt(item, self.base_window)}]
        started = time.perf_counter()
        try:
            completion = self.client.complete(messages, model=self.settings.model.root_model,
                                              temperature=self.settings.model.temperature)
        except FATAL_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the prompt is over the model's window
            return {"answer": None, "score": 0.0, "status": "error",
                    "duration_s": round(time.perf_counter() - started, 3), "tokens": 0, "error": _message(exc),
                    "context_chars_shown": min(len(item.context), self.base_window)}
        answer = completion.text.strip()
        final = parsing.find_final(answer)
        if final is not None and final.kind == "answer":
            answer = final.value
        return {"answer": answer, "score": round(score(item.scorer, answer, item.expected), 4), "status": "ok",
                "duration_s": round(time.perf_counter() - started, 3),
                "tokens": completion.usage.prompt_tokens + completion.usage.completion_tokens, "error": None,
                "context_chars_shown": min(len(item.context), self.base_window)}

    def run_item(self, item: BenchItem, kept: Resumed | None = None) -> ItemResult | None:
        """Run ``item`` (the parts ``kept`` from a results file are not run again)."""
        try:
            rlm = kept.rlm if kept is not None and kept.rlm is not None else self.run_rlm(item)
            base = None
            if self.compare_base:
                base = kept.base if kept is not None and kept.base is not None else self.run_base(item)
        except Cancelled:
            return None
        return ItemResult(item, rlm, base)

    def run(self, items: list[BenchItem], *, concurrency: int = 1, writer: ResultWriter | None = None,
            run: dict | None = None, total: int | None = None, skipped: int = 0,
            kept: dict[str, Resumed] | None = None) -> list[ItemResult]:
        """Run ``items``; each result is appended to ``writer`` (with ``run``, the run's key) as it
        ends.  ``kept``: parts of items already in the results file (a base answer kept while
        the RLM side runs again)."""
        executor = LocalExecutor(max(1, min(concurrency, len(items) or 1)))
        done_results: dict[str, ItemResult] = {}
        kept = kept or {}

        def accept(item: BenchItem, res: ItemResult) -> dict:
            done_results[res.item.id] = res
            if writer is not None:
                writer.write({**res.to_dict(), "run": run})
            return {"id": res.item.id, "status": res.rlm["status"], "score": res.rlm["score"],
                    "duration_s": res.rlm["duration_s"], "base_score": (res.base or {}).get("score")}

        run_jobs(executor, lambda item: self.run_item(item, kept.get(item.id)), items, Outcome(accept),
                 token=self.token, reporter=self.reporter,
                 total=total, skipped=skipped)
        return [done_results[it.id] for it in items if it.id in done_results]


def run_benchmark(names: str | list[str], sizes: list[int], *, n: int, seed: int, settings: Settings,
                  client: ModelClient, compare_base: bool = False, base_window: int = DEFAULT_BASE_WINDOW,
                  concurrency: int = 1, reporter: Reporter | None = None, trace_dir: Path | None = None,
                  results_path: Path | None = None) -> BenchReport:
    """Generate ``n`` items per size of each benchmark in ``names``, run those not already
    done in the results file, and return the report of all of them.

    The results file defaults to ``results.jsonl`` in the run's trace folder.
    """
    from rlm.llm.resolve import check_models

    started = time.perf_counter()
    names = [names] if isinstance(names, str) else list(names)
    items = [item for name in names for item in generate(name, sizes, n, seed)]
    runner = BenchRunner(settings, client, compare_base=compare_base, base_window=base_window,
                         trace_dir=trace_dir, reporter=reporter)
    path = Path(results_path) if results_path is not None else runner.trace_dir / "results.jsonl"
    key = run_key(settings, seed=seed, compare_base=compare_base, base_window=base_window)
    found = resume_results(path, items, key)
    by_id = {item.id: item for item in items}
    done = {i: ItemResult(by_id[i], r.rlm, r.base if compare_base else None)
            for i, r in found.items() if r.rlm is not None and r.complete(compare_base)}
    to_run = [item for item in items if item.id not in done]
    if to_run:
        check_models(client, settings)
    with ResultWriter(path) as writer:
        fresh = runner.run(to_run, concurrency=concurrency, writer=writer, run=key, total=len(items),
                           skipped=len(done), kept=found)
    results = {**done, **{r.item.id: r for r in fresh}}
    return BenchReport(benchmarks=names, sizes=sizes, n=n, seed=seed, root_model=settings.model.root_model,
                       sub_model=settings.model.effective_sub_model, compare_base=compare_base,
                       base_window=base_window, results=[results[it.id] for it in items if it.id in results],
                       wall_s=time.perf_counter() - started, resumed=len(done), results_path=str(path))
