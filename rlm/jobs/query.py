"""One query of a batch, run in its own sandbox session, and its JSONL record.

The batch runner (:mod:`rlm.jobs.batch`) calls :func:`execute_query` in a thread of the
driver; the Ray executor (:mod:`rlm.jobs.ray_executor`) calls it on a node.  Both import it
from here, so neither imports the other at load time.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from rlm.bench.scorers import score as score_answer
from rlm.config import Settings
from rlm.core.context import ContextSource, inline_text
from rlm.core.orchestrator import Orchestrator
from rlm.errors import EngineUnavailable, ImageMissing, ModelAuthError, ModelNotFound, ModelUnreachable
from rlm.jobs.executor import Cancelled, CancelToken
from rlm.jobs.spec import BatchQuery
from rlm.llm.base import ModelClient

if TYPE_CHECKING:
    from rlm.sandbox.pool import SandboxPool

# Errors that would fail every remaining query the same way: stop instead of recording each.
FATAL_ERRORS = (EngineUnavailable, ImageMissing, ModelUnreachable, ModelNotFound, ModelAuthError)
__all__ = ["FATAL_ERRORS", "error_record", "execute_query", "scored"]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60] or "q"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _context(query: BatchQuery, max_bytes: int) -> ContextSource:
    """The query's context; files and folders were checked when the spec was loaded."""
    if query.context_text is not None:
        return inline_text(query.context_text, max_bytes=max_bytes)
    return ContextSource(query.context_dir or query.context_file)


def scored(record: dict, query: BatchQuery) -> dict:
    if query.expected is None:
        return record
    value = score_answer(query.match, record.get("answer"), query.expected)
    return {**record, "expected": query.expected, "match": query.match, "score": round(value, 4),
            "correct": value >= 1.0}


def error_record(query: BatchQuery, exc: BaseException, *, started_at: str | None = None,
                 duration_s: float = 0.0, trace: Path | None = None) -> dict:
    """The ``error`` line of a query that failed (its failure is data; the batch goes on)."""
    message = getattr(exc, "message", None) or f"{exc.__class__.__name__}: {exc}"
    record: dict = {"id": query.id, "question": query.question, "started_at": started_at or _now(), "answer": None,
              "status": "error", "iterations": 0, "sub_calls": 0, "usage": {}, "duration_s": round(duration_s, 3),
              "error": message, "trace": str(trace) if trace is not None and trace.exists() else None,
              "finished_at": _now()}
    return scored(record, query)


def execute_query(query: BatchQuery, settings: Settings, client: ModelClient, token: CancelToken,
                  trace_dir: Path, pool: SandboxPool | None = None) -> dict | None:
    """Run one query in its own sandbox; its record, or None when the batch is stopping.

    Fatal errors (:data:`FATAL_ERRORS`) raise; any other failure becomes an ``error`` record.
    The local executor calls this in a thread of the driver, the Ray executor on a node.
    """
    if token.stopped:
        return None
    trace = trace_dir / f"{_safe(query.id)}-{uuid.uuid4().hex[:6]}.jsonl"
    orch = Orchestrator(settings, client, progress=token.progress,
                        session_factory=token.session_factory(settings.sandbox, pool))
    started = time.perf_counter()
    started_at = _now()
    try:
        with _context(query, settings.run.max_context_bytes) as source:
            result = orch.run(query.question, source.path, trace_path=trace)
    except Cancelled:
        return None
    except FATAL_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - one query's failure is data; the batch goes on
        return error_record(query, exc, started_at=started_at, duration_s=time.perf_counter() - started,
                            trace=trace)
    d = result.to_dict()
    record = {"id": query.id, "question": query.question, "started_at": started_at,
              **{k: d[k] for k in ("answer", "status", "iterations", "sub_calls", "usage", "duration_s", "error",
                                   "trace")}, "phases": d["phases"], "finished_at": _now()}
    return scored(record, query)
