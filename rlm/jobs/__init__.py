"""YAML batch runs: validate a spec, run each query in its own sandbox, append JSONL results.

    from rlm.jobs import load_spec, run_batch
    spec = load_spec("configs/examples/batch.yaml")
    summary = run_batch(spec)            # BatchSummary: counts, accuracy, tokens, time

Ray executor (optional extra): rlm.jobs.ray_executor.RayExecutor; see docs/batch.md and docs/ray.md.
"""

from rlm.jobs.batch import (
           BatchRunner,
           BatchSummary,
           Reporter,
           run_batch,
           select_queries,
           summarize,
)
from rlm.jobs.executor import CancelToken, Executor, LocalExecutor
from rlm.jobs.loop import Outcome, run_jobs
from rlm.jobs.results import ResultWriter, read_results
from rlm.jobs.spec import BatchQuery, BatchSpec, load_spec

__all__ = ["BatchQuery", "BatchRunner", "BatchSpec", "BatchSummary", "CancelToken", "Executor", "LocalExecutor",
           "Outcome", "Reporter", "ResultWriter", "load_spec", "read_results", "run_batch", "run_jobs", "select_queries",
           "summarize"]
