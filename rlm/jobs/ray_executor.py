"""Batch queries as Ray tasks, one per query, on the nodes of a Ray cluster.

    from rlm.jobs import load_spec, run_batch
    from rlm.jobs.ray_executor import RayExecutor

    with RayExecutor("127.0.0.1:6379") as executor:
        run_batch(load_spec("batch.yaml"), executor=executor)

* Each query is a Ray task that takes one CPU (``num_cpus``), so a node with room runs it.
* On its node, the task checks that the local Docker engine has the sandbox image with the
  hash the driver expects (:func:`rlm.sandbox.image.image_status`); a missing or stale image
  raises :class:`NodeImageError`, naming the node, which stops the batch.
* The task opens the sandbox on its node's engine, asks the spec's model server (every node
  must reach it) and returns the record with its ``node`` (Ray node id) and ``host``.  Only
  the driver appends to the results file, so resume and ``--retry-failed`` are unchanged.
* A task whose worker or node dies is retried by Ray on another node (``max_retries``);
  its first attempt never reached the driver, so nothing is written twice.
* Stopping (Ctrl-C, SIGTERM, a fatal error) cancels every task with ``ray.cancel(force=True)``
  and removes the containers of this run (label ``rlm.job``) on every node.  Containers of a
  killed worker have a dead owner pid, so the reaper of the next run removes them as well.

``ray`` is an optional extra (``pip install 'rlm[ray]'``) imported only here, and only when
an executor is made.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rlm.errors import ImageMissing, SandboxError, UsageError

if TYPE_CHECKING:
    from rlm.config import Settings
    from rlm.jobs.spec import BatchQuery, BatchSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

JOB_LABEL = "rlm.job"
INSTALL_HINT = "pip install 'rlm[ray]' (or pip install '.[ray]' from a checkout)"
SWEEP_TIMEOUT_S = 30.0
CANCEL_WAIT_S = 5.0
RESWEEP_AFTER_S = 1.5


class NodeImageError(ImageMissing):
    """The sandbox image on a node is missing or was built from other sources."""


class ClusterUnavailable(SandboxError):
    """No Ray cluster answers at the address."""


class TaskLost(SandboxError):
    """A query's task was lost with its worker or node, after Ray's retries."""


def require_ray() -> Any:
    """The ``ray`` module, or a usage error that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise UsageError("the ray executor needs Ray, which is not installed", hint=INSTALL_HINT) from exc
    return ray


# ---------------------------------------------------------------------------- on a node
def _node() -> tuple[str, str]:
    import ray

    return ray.get_runtime_context().get_node_id(), socket.gethostname()


_checked: set[tuple[str, frozenset[str] | None]] = set()
_checked_lock = threading.Lock()


def check_node_image(image: str, accepted: frozenset[str] | None) -> None:
    """Raise :class:`NodeImageError` unless this node's engine has ``image`` with an accepted hash."""
    key = (image, accepted)
    with _checked_lock:
        if key in _checked:
            return
    from rlm.sandbox.engine import Engine
    from rlm.sandbox.image import HASH_LABEL

    node_id, host = _node()
    where = f"node {host} ({node_id[:12]})"
    engine = Engine()
    try:
        labels = engine.image_labels(image)
    finally:
        engine.close()
    if labels is None:
        raise NodeImageError(f"{where}: the sandbox image {image} is not built there",
                             hint="run `rlm sandbox build` on that node, from the same rlm version as the driver")
    found = labels.get(HASH_LABEL)
    if accepted is not None and found not in accepted:
        expected = ", ".join(sorted(h[:12] for h in accepted))
        raise NodeImageError(f"{where}: the sandbox image {image} is stale (hash {(found or 'none')[:12]}, "
                             f"the driver expects {expected})",
                             hint="run `rlm sandbox build` on that node, from the same rlm version as the driver")
    with _checked_lock:
        _checked.add(key)


@dataclasses.dataclass(frozen=True)
class RemoteQuery:
    """The picklable task of one query: what a node needs to run it without the driver."""

    settings: Settings
    trace_dir: Path
    image: str
    accepted_hashes: frozenset[str] | None

    def __call__(self, query: BatchQuery) -> dict | None:
        from rlm.jobs.executor import CancelToken
        from rlm.jobs.query import error_record, execute_query
        from rlm.llm.resolve import make_client

        check_node_image(self.image, self.accepted_hashes)
        node_id, host = _node()
        missing = [p for p in (query.context_file, query.context_dir) if p is not None and not p.exists()]
        record: dict | None
        if missing:
            record = error_record(query, ContextNotOnNode(
                f"the context {missing[0]} is not on node {host} ({node_id[:12]}); every node needs the "
                "spec's context files at the same path (a shared filesystem)"))
        else:
            token = CancelToken()
            with make_client(self.settings) as client:
                try:
                    record = execute_query(query, self.settings, client, token, self.trace_dir)
                finally:
                    token.stop()
                    token.close_sessions()
        if record is not None:
            record = {**record, "node": node_id, "host": host}
        return record


class ContextNotOnNode(UsageError):
    """A context file of the spec does not exist on the node that runs the query."""


def _call(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


def sweep_here(job_id: str) -> int:
    """Remove this engine's containers of run ``job_id``; how many were removed."""
    from rlm.sandbox.engine import Engine
    from rlm.sandbox.provisioner import LABEL

    removed = 0
    engine = Engine()
    try:
        for info in engine.list_labelled(LABEL):
            if info.labels.get(JOB_LABEL) == job_id:
                engine.remove(info.id)
                removed += 1
    finally:
        engine.close()
    return removed


# ---------------------------------------------------------------------------- the driver
def _accepted_hashes(image: str) -> frozenset[str] | None:
    """Hashes of ``image`` built from this rlm's sources on any base we know of (None: unknown)."""
    from rlm.sandbox.image import (
        BASE_LABEL,
        DEFAULT_BASE,
        LOCAL_BASE,
        image_hash,
        repo_root_default,
    )

    try:
        root = repo_root_default()
    except SandboxError:
        log.warning("the sandbox sources are not here; nodes' images are checked for presence only")
        return None
    bases = {DEFAULT_BASE, LOCAL_BASE}
    try:
        from rlm.sandbox.engine import Engine

        engine = Engine()
        try:
            labels = engine.image_labels(image) or {}
        finally:
            engine.close()
        if labels.get(BASE_LABEL):
            bases.add(labels[BASE_LABEL])
    except SandboxError:
        pass  # the driver need not have an engine of its own
    return frozenset(image_hash(root, base) for base in bases)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _signal_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in _SIGNALS}


def _restore(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


class RayExecutor:
    """Runs each submitted function as a Ray task; see the module docstring."""

    remote = True

    def __init__(self, address: str | None = None, *, num_cpus: float = 1, max_retries: int = 3,
                 job_id: str | None = None) -> None:
        ray = require_ray()
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.job_id = job_id or uuid.uuid4().hex[:12]
        self._started_ray = False
        if not ray.is_initialized():
            handlers = _signal_handlers()
            try:
                ray.init(address=address or "auto", logging_level=logging.WARNING, log_to_driver=False,
                         namespace="rlm")
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ClusterUnavailable(f"no Ray cluster answers at {address or 'auto'}: {exc}",
                                         hint="start one with `ray start --head`, then give its address with "
                                              "--address HOST:PORT (or set RAY_ADDRESS)") from exc
            finally:
                _restore(handlers)  # Ray's own SIGTERM handler aborts; ours stops the batch cleanly
            self._started_ray = True
        self._ray = ray
        self._task = ray.remote(_call).options(num_cpus=num_cpus, max_retries=max_retries, retry_exceptions=False)
        self._lock = threading.Lock()
        self._refs: dict[Future, Any] = {}
        self._closed = False

    # -- what the batch runner asks for ----------------------------------------------------
    def query_task(self, spec: BatchSpec) -> RemoteQuery:
        settings = self.labelled(spec.settings)
        return RemoteQuery(settings=settings, trace_dir=spec.trace_dir, image=settings.sandbox.image,
                           accepted_hashes=_accepted_hashes(settings.sandbox.image))

    def labelled(self, settings: Settings) -> Settings:
        """``settings`` whose sandboxes carry this run's label (for the sweep)."""
        labels = tuple(kv for kv in settings.sandbox.extra_labels if kv[0] != JOB_LABEL) + ((JOB_LABEL, self.job_id),)
        return dataclasses.replace(settings, sandbox=dataclasses.replace(settings.sandbox, extra_labels=labels))

    # -- Executor --------------------------------------------------------------------------
    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        with self._lock:
            if self._closed:
                raise RuntimeError("this executor is shut down")
            ref = self._task.remote(fn, *args)
            out: Future = Future()
            out.set_running_or_notify_cancel()
            self._refs[out] = ref
        ref.future().add_done_callback(lambda done: self._settle(out, done))
        return out

    def _settle(self, out: Future, done: Future) -> None:
        from ray.exceptions import RayError, RayTaskError, TaskCancelledError

        with self._lock:
            self._refs.pop(out, None)
        exc = done.exception()
        if exc is None:
            out.set_result(done.result())
        elif isinstance(exc, RayTaskError):
            cause = getattr(exc, "cause", None)
            out.set_exception(cause if isinstance(cause, BaseException) else exc)
        elif isinstance(exc, TaskCancelledError):
            out.set_exception(TaskLost("the task was cancelled"))
        elif isinstance(exc, RayError):
            out.set_exception(TaskLost(f"the task was lost with its worker or node, after {self.max_retries} "
                                       f"retries: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                                       hint="rerun with --retry-failed"))
        else:
            out.set_exception(exc)

    def shutdown(self, *, cancel_pending: bool = False) -> None:
        """Accept no more work; with ``cancel_pending``, kill every unfinished task at once
        (``ray.cancel(force=True)``).  Then remove the containers of this run on every node."""
        with self._lock:
            self._closed = True
            refs = list(self._refs.values())
        if cancel_pending and refs:
            for ref in refs:
                try:
                    self._ray.cancel(ref, force=True)
                except Exception:
                    log.debug("ray.cancel failed", exc_info=True)
            try:
                self._ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)
            except Exception:
                log.debug("waiting for cancelled tasks failed", exc_info=True)
            self.sweep()
            # a container whose creation a killed worker had asked for may appear just after
            time.sleep(RESWEEP_AFTER_S)
        self.sweep()

    def sweep(self) -> int:
        """Remove this run's containers on every alive node (and on the driver's engine)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        removed = 0
        try:
            nodes = [n["NodeID"] for n in self._ray.nodes() if n.get("Alive")]
            task = self._ray.remote(sweep_here)
            refs = [task.options(num_cpus=0, max_retries=0,
                                 scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
                                 ).remote(self.job_id) for node in nodes]
            ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=SWEEP_TIMEOUT_S)
            for ref in ready:
                try:
                    removed += int(self._ray.get(ref))
                except Exception:
                    log.debug("sweeping a node failed", exc_info=True)
        except Exception:
            log.debug("sweeping the cluster failed", exc_info=True)
        try:
            removed += sweep_here(self.job_id)
        except Exception:
            log.debug("sweeping the driver's engine failed", exc_info=True)
        return removed

    def close(self) -> None:
        if not self._closed:
            self.shutdown()
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
