"""Running a batch spec: each query in its own sandbox session, ``concurrency`` at a time.

The runner only submits work to an :class:`~rlm.jobs.executor.Executor` and writes the
records that come back, so the executor may run queries anywhere.

* ids whose last record is ``ok`` are skipped (no model call); ids with a failed last
  record (``error``, ``max_iterations``) are skipped too unless ``retry_failed``;
* one JSONL line per finished query, on disk before the next is reported;
* errors of one query (a model error, a sandbox failure) become an ``error`` record and the
  batch goes on; errors that doom every query (no Docker engine, image missing, model
  server unreachable, model unknown, bad credentials) stop the batch and raise;
* one process at a time per results file: a second run on the same file stops at once with a
  ``UsageError`` naming the first one's pid (see :class:`~rlm.jobs.results.ResultsLock`);
* Ctrl-C / SIGTERM: nothing more starts, running queries stop at their next step, their
  sandboxes are closed, written lines are kept, ``KeyboardInterrupt`` propagates.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rlm.bench.scorers import score as score_answer
from rlm.errors import EngineUnavailable, RLMError
from rlm.jobs.executor import CancelToken, Executor, LocalExecutor
from rlm.jobs.loop import STOP_GRACE_S, Outcome, Reporter, run_jobs
from rlm.jobs.query import FATAL_ERRORS, error_record, execute_query
from rlm.jobs.results import ResultsLock, ResultWriter, read_results
from rlm.jobs.spec import BatchQuery, BatchSpec
from rlm.llm.base import ModelClient

if TYPE_CHECKING:
    from rlm.sandbox.pool import SandboxPool

__all__ = ["FATAL_ERRORS", "STOP_GRACE_S", "BatchRunner", "BatchSummary", "Reporter", "execute_query",
           "run_batch", "select_queries", "summarize"]


@dataclass
class BatchSummary:
    output: Path
    total: int                      # queries in the spec
    ran: int                        # run (and written) this time
    skipped: int                    # already answered (ok, or failed without --retry-failed)
    counts: dict[str, int]          # final status per id: ok, max_iterations, error, not run
    scored: int = 0                 # final records with an expected answer
    correct: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0             # this run
    query_s: float = 0.0            # sum of duration_s over final records
    failed_ids: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None

    @property
    def all_ok(self) -> bool:
        return self.counts.get("ok", 0) == self.total

    def to_dict(self) -> dict:
        return {"output": str(self.output), "total": self.total, "ran": self.ran, "skipped": self.skipped,
                "counts": self.counts, "scored": self.scored, "correct": self.correct, "accuracy": self.accuracy,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "wall_s": round(self.wall_s, 3), "query_s": round(self.query_s, 3), "failed_ids": self.failed_ids}


def select_queries(spec: BatchSpec, previous: dict[str, dict], *, retry_failed: bool) -> list[BatchQuery]:
    """The queries to run now, given the last record per id of earlier runs."""
    todo = []
    for q in spec.queries:
        last = previous.get(q.id)
        if last is None or (retry_failed and last.get("status") != "ok"):
            todo.append(q)
    return todo


class BatchRunner:
    """Runs one spec.  ``client`` is shared by all queries (the OpenAI client is thread-safe).

    ``executor``: where queries run (default: a :class:`LocalExecutor` of the spec's
    concurrency).  An executor with ``remote = True`` (Ray) is given a picklable task from
    its own ``query_task(spec)`` instead of this runner's bound method.
    """

    def __init__(self, spec: BatchSpec, client: ModelClient, *, executor: Executor | None = None,
                 reporter: Reporter | None = None) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.client = client
        self.executor = executor
        self.reporter = reporter
        self.token = CancelToken()
        self._pool: SandboxPool | None = None  # a SandboxPool while running, when pool_size > 0

    def run_query(self, query: BatchQuery) -> dict | None:
        """The record of one query, or None when the batch is stopping."""
        return execute_query(query, self.settings, self.client, self.token, self.spec.trace_dir, self._pool)

    # -- the whole batch ------------------------------------------------------------------
    def run(self, *, retry_failed: bool = False) -> BatchSummary:
        """Run the spec's queries that are not done yet, holding the results file's lock
        from before it is read until the last line is written (one writer per file)."""
        with ResultsLock(self.spec.output) as lock:
            return self._run(lock, retry_failed=retry_failed)

    def _run(self, lock: ResultsLock, *, retry_failed: bool) -> BatchSummary:
        started = time.perf_counter()
        self._reap_leftovers()
        previous = read_results(self.spec.output)
        todo = select_queries(self.spec, previous, retry_failed=retry_failed)
        total, skipped = len(self.spec.queries), len(self.spec.queries) - len(todo)
        if not todo:
            reporter = self.reporter
            if reporter is not None:
                reporter.start(total, 0, skipped)
                reporter.finish()
            return summarize(self.spec, previous, ran=0, wall_s=time.perf_counter() - started)
        from rlm.llm.resolve import check_models

        check_models(self.client, self.settings)  # fail early, before any sandbox starts
        executor = self.executor or LocalExecutor(min(self.spec.concurrency, len(todo)))
        remote = bool(getattr(executor, "remote", False))
        if self.settings.pool_size > 0 and not remote:  # warm sessions: each query takes a ready one
            from rlm.sandbox.pool import SandboxPool

            self._pool = SandboxPool(self.settings.pool_size, self.settings.sandbox).start()
        task = executor.query_task(self.spec) if remote else self.run_query  # type: ignore[attr-defined]
        writer = ResultWriter(self.spec.output, lock=lock)

        def accept(query: BatchQuery, record: dict) -> dict:
            writer.write(record)
            previous[record["id"]] = record
            return record

        def failed(query: BatchQuery, exc: BaseException) -> dict:
            if isinstance(exc, FATAL_ERRORS) or not isinstance(exc, RLMError):
                raise exc
            return error_record(query, exc)  # e.g. a task lost with its node, after the executor's retries

        try:
            ran = run_jobs(executor, task, todo, Outcome(accept, failed), token=self.token, reporter=self.reporter,
                           total=total, skipped=skipped, own_executor=self.executor is None)
        finally:
            writer.close()
            if self._pool is not None:
                self._pool.close()
                self._pool = None
        return summarize(self.spec, previous, ran=ran, wall_s=time.perf_counter() - started)

    def _reap_leftovers(self) -> None:
        """A run killed earlier may have left sandboxes; remove them even when nothing is left to run."""
        from rlm.sandbox.engine import Engine
        from rlm.sandbox.reaper import reap_orphans

        try:
            engine = Engine()
        except EngineUnavailable:
            return  # nothing can be left on an engine that is not there; a query that needs one says so
        try:
            reap_orphans(engine, self.settings.sandbox.resolved_run_root)
        finally:
            engine.close()


def summarize(spec: BatchSpec, records: dict[str, dict], *, ran: int = 0, wall_s: float = 0.0) -> BatchSummary:
    """Counts, accuracy, tokens and time over the final record of each id of ``spec``."""
    counts: Counter = Counter()
    summary = BatchSummary(output=spec.output, total=len(spec.queries), ran=ran, skipped=0, counts={},
                           wall_s=wall_s)
    for q in spec.queries:
        rec = records.get(q.id)
        if rec is None:
            counts["not run"] += 1
            summary.failed_ids.append(q.id)
            continue
        status = str(rec.get("status"))
        counts[status] += 1
        if status != "ok":
            summary.failed_ids.append(q.id)
        if q.expected is not None:
            summary.scored += 1
            value = score_answer(q.match, rec.get("answer"), q.expected)
            summary.correct += value >= 1.0
        for usage in (rec.get("usage") or {}).values():
            if isinstance(usage, dict):
                summary.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                summary.completion_tokens += int(usage.get("completion_tokens") or 0)
        summary.query_s += float(rec.get("duration_s") or 0)
    summary.counts = dict(counts)
    summary.skipped = summary.total - ran - counts.get("not run", 0)
    return summary


def run_batch(spec: BatchSpec, client: ModelClient | None = None, *, retry_failed: bool = False,
              executor: Executor | None = None, reporter: Reporter | None = None) -> BatchSummary:
    """Run ``spec`` (see :class:`BatchRunner`); makes and closes a client when none is given.

    Without an ``executor``, the spec's own is made: threads here (``local``), or a
    :class:`~rlm.jobs.ray_executor.RayExecutor` connected to ``spec.address`` (``ray``).
    """
    if executor is None and spec.executor == "ray":
        from rlm.jobs.ray_executor import RayExecutor, require_ray

        require_ray()  # a usage error that says how to install it, before anything else
        with RayExecutor(spec.address) as ray_executor:
            return run_batch(spec, client, retry_failed=retry_failed, executor=ray_executor, reporter=reporter)
    if client is not None:
        return BatchRunner(spec, client, executor=executor, reporter=reporter).run(retry_failed=retry_failed)
    from rlm.llm.resolve import make_client

    with make_client(spec.settings) as own:
        return BatchRunner(spec, own, executor=executor, reporter=reporter).run(retry_failed=retry_failed)
