"""The public API: ``RLM``.

    from rlm import RLM

    result = RLM(base_url="http://localhost:11434/v1", root_model="qwen3:14b").run(
        "Which customers churned?", Path("tickets.jsonl"))
    print(result.answer, result.status, result.iterations, result.sub_calls, result.usage)

    with RLM(config="run.yaml") as r:          # one sandbox for every question in the block
        r.run("Load the tickets into a DataFrame called df", Path("tickets.jsonl"))
        r.run("How many rows does df have?")   # variables are kept, as in `rlm interactive`
        r.run("Which of them are in the CRM export?", Path("crm.csv"))  # a new context: `context_1`

Settings come from the same layers as the CLI's (defaults < YAML < ``.env`` < environment <
keyword arguments, by their YAML keys); with no model server configured and none answering,
the embedded llama.cpp model stands in, exactly as for ``rlm query``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Union

from rlm.config import LoadedSettings, Settings, load_settings
from rlm.core.context import ContextSource, check_file, inline_json, inline_text
from rlm.core.orchestrator import Orchestrator
from rlm.core.result import RunResult
from rlm.errors import ContextError, Interrupted, UsageError
from rlm.llm.base import Completion, Message, ModelClient
from rlm.sandbox.session import SandboxSession

if TYPE_CHECKING:
    from rlm.sandbox.pool import SandboxPool

log = logging.getLogger(__name__)

__all__ = ["RLM", "ContextLike", "IterationEvent", "SubCallEvent"]

ContextLike = Union[str, "os.PathLike[str]", list, dict, None]
"""A ``str`` (the text itself), a list of ``str`` (documents), a JSON-able ``dict``/``list``, or a
``Path`` to a text / ``.json`` / ``.jsonl`` file or to a folder of documents."""


@dataclass
class SubCallEvent:
    """One ``llm_query`` / ``llm_query_batched`` prompt answered (or failed) during a run."""

    model: str
    prompt_chars: int
    reply_chars: int
    latency_s: float
    ok: bool
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class IterationEvent:
    """One finished iteration: the model's reply and the cells it ran."""

    iteration: int
    max_iterations: int
    reply: str = ""
    cells: list[dict[str, Any]] = field(default_factory=list)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _Events:
    """Turns the orchestrator's progress events into the user's callbacks."""

    def __init__(self, on_iteration: Callable[[IterationEvent], None] | None,
                 on_sub_call: Callable[[SubCallEvent], None] | None,
                 on_event: Callable[[str, dict], None] | None) -> None:
        self.on_iteration = on_iteration
        self.on_sub_call = on_sub_call
        self.on_event = on_event
        self.current: IterationEvent | None = None

    def __call__(self, kind: str, data: dict) -> None:
        if self.on_event is not None:
            self.on_event(kind, data)
        if kind == "sub_call" and self.on_sub_call is not None:
            self.on_sub_call(SubCallEvent(model=str(data.get("model", "")), prompt_chars=int(data.get("prompt_chars", 0)),
                                          reply_chars=int(data.get("reply_chars", 0)),
                                          latency_s=float(data.get("latency_s", 0.0)), ok=bool(data.get("ok", True)),
                                          error=data.get("error"), data=dict(data)))
        elif kind == "iteration":
            self._flush()
            self.current = IterationEvent(int(data.get("iteration", 0)), int(data.get("max", 0)))
        elif kind == "model_reply" and self.current is not None:
            self.current.reply = str(data.get("text", ""))
        elif kind == "cell" and self.current is not None:
            self.current.cells.append(dict(data))
        elif kind == "done":
            self._flush()

    def _flush(self) -> None:
        if self.current is not None and self.on_iteration is not None:
            self.on_iteration(self.current)
        self.current = None


CANCEL_GRACE_S = 2.0
"""After a cancellation, how long the run gets to stop by itself before its sandboxes are removed."""

_SAFE_POINTS = frozenset({"sandbox_ready", "iteration", "model_reply", "cell"})
"""Progress events after which the loop may stop (a step is over; nothing is half done)."""


class _Cancel:
    """One run's cancellation: a flag the loop checks at its safe points and before every model
    request, the model requests in flight (cancelled, which closes their HTTP requests), and the
    run's sandboxes (interrupted, then removed if the run does not stop by itself)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.finished = threading.Event()
        self.thread: int | None = None  # the run's own thread: where the safe points raise
        self._lock = threading.Lock()
        self._sessions: list[SandboxSession] = []
        self._tasks: set[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = set()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def check(self) -> None:
        if self.event.is_set():
            raise Interrupted("the run was cancelled")

    def at_safe_point(self, kind: str) -> None:
        if kind in _SAFE_POINTS and threading.get_ident() == self.thread:
            self.check()

    def add_session(self, session: SandboxSession) -> None:
        with self._lock:
            self._sessions.append(session)
        if self.event.is_set():
            self._stop_session(session)

    def add_task(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        with self._lock:
            self._tasks.add((loop, task))
        if self.event.is_set():
            loop.call_soon_threadsafe(task.cancel)

    def drop_task(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        with self._lock:
            self._tasks.discard((loop, task))

    def cancel(self) -> None:
        """Set the flag, cancel the model requests in flight, interrupt the running cells."""
        self.event.set()
        with self._lock:
            tasks, sessions = list(self._tasks), list(self._sessions)
        for loop, task in tasks:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # its loop is closed: the request is over
                pass
        for session in sessions:
            self._stop_session(session)

    @staticmethod
    def _stop_session(session: SandboxSession) -> None:
        if session.opened and not session.closed and session.open_seconds is not None:
            try:
                session.interrupt()  # the cell stops; its sub-calls are cancelled
            except Exception as exc:  # noqa: BLE001 - the removal below still happens
                log.debug("could not interrupt the sandbox: %s", exc)

    def remove_sandboxes(self) -> None:
        """The run did not stop in time: remove its containers (the run then fails at once)."""
        with self._lock:
            sessions = list(self._sessions)
        names = [s.container_id for s in sessions if s.container_id and not s.closed]
        if not names:
            return
        from rlm.sandbox.engine import Engine

        engine = Engine()
        try:
            for name in names:
                try:
                    engine.remove(name)
                except Exception as exc:  # noqa: BLE001 - best effort; the reaper is the last resort
                    log.warning("could not remove the cancelled run's container %s: %s", name[:12], exc)
        finally:
            engine.close()

    def watch(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """After ``cancel()``: if the run has not ended within ``grace_s``, remove its sandboxes."""

        def watchdog() -> None:
            if not self.finished.wait(grace_s):
                self.remove_sandboxes()

        threading.Thread(target=watchdog, name="rlm-cancel", daemon=True).start()


class _CancellableClient(ModelClient):
    """A model client whose requests a ``_Cancel`` can stop: each request runs as a task (the root
    model's on a loop of the run's own, the sub-calls' on theirs) that the cancellation cancels."""

    def __init__(self, inner: ModelClient, cancel: _Cancel) -> None:
        self.inner = inner
        self.cancel = cancel
        self._loop: asyncio.AbstractEventLoop | None = None

    def complete(self, messages: list[Message], *, model: str, temperature: float | None = None,
                 max_tokens: int | None = None) -> Completion:
        self.cancel.check()
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        try:
            return self._loop.run_until_complete(
                self.acomplete(messages, model=model, temperature=temperature, max_tokens=max_tokens))
        except asyncio.CancelledError:
            raise Interrupted("the run was cancelled") from None

    async def acomplete(self, messages: list[Message], *, model: str, temperature: float | None = None,
                        max_tokens: int | None = None) -> Completion:
        self.cancel.check()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.cancel.add_task(loop, task)
        try:
            return await self.inner.acomplete(messages, model=model, temperature=temperature, max_tokens=max_tokens)
        finally:
            self.cancel.drop_task(loop, task)

    def list_models(self) -> list[str]:
        return self.inner.list_models()

    async def arelease(self) -> None:
        await self.inner.arelease()

    def close(self) -> None:
        """Release the run's own loop (the inner client is the caller's)."""
        loop, self._loop = self._loop, None
        if loop is not None:
            try:
                loop.run_until_complete(self.inner.arelease())
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
            loop.close()


def context_source(context: ContextLike, *, max_bytes: int) -> ContextSource:
    """The run's context as a file the sandbox mounts read-only (validated; nothing is started)."""
    if context is None:
        return ContextSource(None)
    if isinstance(context, os.PathLike):
        path = Path(context)
        return check_file(path, max_bytes=max_bytes, allow_dir=path.is_dir())
    if isinstance(context, str):
        return inline_text(context, max_bytes=max_bytes)
    if isinstance(context, (list, tuple, dict)):
        return inline_json(context, max_bytes=max_bytes)
    raise ContextError(f"a context of type {type(context).__name__} is not supported",
                       hint="give a str, a list of str, a JSON-able dict or list, or a pathlib.Path")


class RLM:
    """Answers questions over contexts of any size with the RLM loop; model code runs only in the sandbox.

    ``RLM(config="run.yaml", **settings)``: any setting by its YAML key (``base_url``, ``root_model``,
    ``sub_model``, ``max_iterations``, ``memory_mb``, ``runtime``, ...), over the YAML file, ``.env``
    and the environment.  Callbacks: ``on_iteration(IterationEvent)``, ``on_sub_call(SubCallEvent)``,
    ``on_event(kind, data)`` (every progress event), ``on_notice(text)`` (e.g. "starting the embedded
    model"; default: printed on stderr).  ``model_client``: a client to use instead of opening one
    (the caller closes it); ``sandbox_pool``: a started ``SandboxPool`` whose warm sessions the runs
    take (its sandbox settings are the pool's).

    Threads: ``run`` and ``arun`` may be called from several threads at once (each run has its own
    sandbox, or, in a ``with`` block, the questions take turns in the block's one sandbox).  Library
    code installs no signal handler.
    """

    def __init__(self, config: str | os.PathLike[str] | None = None, *, settings: Settings | LoadedSettings | None = None,
                 on_iteration: Callable[[IterationEvent], None] | None = None,
                 on_sub_call: Callable[[SubCallEvent], None] | None = None,
                 on_event: Callable[[str, dict], None] | None = None,
                 on_notice: Callable[[str], None] | None = None,
                 model_client: ModelClient | None = None,
                 sandbox_pool: SandboxPool | None = None,
                 **overrides: Any) -> None:
        if settings is not None and (config is not None or overrides):
            raise UsageError("give either settings=... or config/keyword settings, not both")
        if isinstance(settings, LoadedSettings):
            self.loaded = settings
        elif isinstance(settings, Settings):
            self.loaded = LoadedSettings(settings=settings, sources={"base_url": "RLM(settings=...)"})
        else:
            self.loaded = load_settings(config_file=None if config is None else Path(config), cli=overrides,
                                        cli_flags={k: f"RLM({k}=...)" for k in overrides})
        self._callbacks = (on_iteration, on_sub_call, on_event)
        self._notice = on_notice or _stderr
        self._client = model_client
        self._pool = sandbox_pool
        self._lock = threading.Lock()
        self._block: _Block | None = None
        self.last_trace: Path | None = None

    @property
    def settings(self) -> Settings:
        return self.loaded.settings

    # -- one question ---------------------------------------------------------------------
    def run(self, question: str, context: ContextLike = None, *, trace_path: str | os.PathLike[str] | None = None
            ) -> RunResult:
        """Answer ``question`` over ``context``; returns a ``RunResult`` (answer, status, iterations,
        sub_calls, usage per model, trace, duration_s).  Infrastructure failures raise ``RLMError``s."""
        return self._run(question, context, trace_path, None)

    async def arun(self, question: str, context: ContextLike = None, *,
                   trace_path: str | os.PathLike[str] | None = None) -> RunResult:
        """``run`` for asyncio, in a thread of its own (callbacks are called from it).

        Cancelling the awaiting task (``asyncio.wait_for``, ``task.cancel()``) cancels the run: the
        model requests in flight are cancelled, the running cell is interrupted, the loop stops at its
        next step (raising ``Interrupted`` in the run's thread) and the sandbox is removed; if the run
        has not stopped within ``CANCEL_GRACE_S`` its container is removed all the same."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RunResult] = loop.create_future()
        cancel = _Cancel()

        def deliver(result: RunResult | None, exc: BaseException | None) -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def work() -> None:
            cancel.thread = threading.get_ident()
            result: RunResult | None = None
            error: BaseException | None = None
            try:
                result = self._run(question, context, trace_path, cancel)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                error = exc
            finally:
                cancel.finished.set()
            try:
                loop.call_soon_threadsafe(deliver, result, error)
            except RuntimeError:  # the event loop is closed: nobody waits for this run any more
                pass

        threading.Thread(target=work, name="rlm-arun", daemon=True).start()
        try:
            return await future
        except asyncio.CancelledError:
            cancel.cancel()
            cancel.watch()
            raise

    def completion(self, prompt: str, context: ContextLike = None) -> str:
        """The answer alone (``run(...).answer``, or ``""``)."""
        return self.run(prompt, context).answer or ""

    # -- a session: one sandbox for every question -----------------------------------------
    def __enter__(self) -> "RLM":
        with self._lock:
            if self._block is not None:
                raise UsageError("this RLM is already in a `with` block",
                                 hint="one `with` block per RLM; its questions may come from several threads")
            self._block = _Block(self)  # the model server and the sandbox start with the first question
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open_sandbox(self, context: ContextLike = None) -> float:
        """In a ``with`` block: start the block's sandbox now, with ``context``; return its start-up time (s)."""
        block = self._block
        if block is None:
            raise UsageError("open_sandbox() is for a `with RLM() as r:` block")
        seconds = block.open(context)
        self._new_events()("sandbox_ready", {"seconds": seconds})
        return seconds

    def add_context(self, context: ContextLike) -> str:
        """In a ``with`` block: load another context now, beside the others (nothing in the sandbox is
        lost); returns the variable that holds it: ``context`` for the block's first, then
        ``context_1``, ``context_2``, ...  A context given before is not loaded again (its variable is
        returned).  ``run(question, context)`` does the same for a new context before it asks."""
        block = self._block
        if block is None:
            raise UsageError("add_context() is for a `with RLM() as r:` block",
                             hint="outside a block each run has its own sandbox and one context")
        if context is None:
            raise UsageError("add_context() needs a context")
        name, seconds = block.attach(context)
        if seconds:
            self._new_events()("sandbox_ready", {"seconds": seconds})
        assert name is not None
        return name

    def reset(self) -> None:
        """In a ``with`` block: a new sandbox for the next question (variables cleared), same contexts."""
        block = self._block
        if block is None:
            raise UsageError("reset() is for a `with RLM() as r:` block")
        block.reset()

    def close(self) -> None:
        """End the session (if any): the sandbox is removed, the model client closed.  A question still
        running in the block (another thread) is waited for."""
        with self._lock:
            block, self._block = self._block, None
        if block is not None:
            block.close()

    # -- internals ------------------------------------------------------------------------
    def _run(self, question: str, context: ContextLike, trace_path: str | os.PathLike[str] | None,
             cancel: _Cancel | None) -> RunResult:
        if not isinstance(question, str) or not question.strip():
            raise UsageError("the question is empty", hint="ask something, e.g. run('What is the main topic?', ctx)")
        events = self._new_events()
        block = self._block
        if block is not None:
            return block.run(question, context, trace_path, events, cancel)
        with context_source(context, max_bytes=self.settings.run.max_context_bytes) as source:
            settings, client = self._open_models()
            try:
                if cancel is not None:
                    cancel.check()
                orch = self._orchestrator(settings, client, events, cancel)
                try:
                    return orch.run(question, source.path, trace_path=self._trace_path(orch, trace_path, events))
                finally:
                    _release(orch)
            finally:
                if self._client is None:
                    client.close()

    def _new_events(self) -> _Events:
        return _Events(*self._callbacks)

    def _open_models(self) -> tuple[Settings, ModelClient]:
        if self._client is not None:
            return self.settings, self._client
        from rlm.llm.resolve import open_models

        return open_models(self.settings, base_url_explicit=self.loaded.base_url_configured, say=self._notice)

    def _orchestrator(self, settings: Settings, client: ModelClient, events: _Events,
                      cancel: _Cancel | None) -> Orchestrator:
        pool = self._pool

        def new_session(path: Path | None) -> SandboxSession:
            session = pool.acquire(path) if pool is not None else SandboxSession(context=path,
                                                                                 settings=settings.sandbox)
            if cancel is not None:
                cancel.add_session(session)
            return session

        if cancel is None:
            return Orchestrator(settings, client, progress=events, session_factory=new_session)

        def progress(kind: str, data: dict) -> None:
            events(kind, data)
            cancel.at_safe_point(kind)

        return Orchestrator(settings, _CancellableClient(client, cancel), progress=progress,
                            session_factory=new_session)

    def _trace_path(self, orch: Orchestrator, given: str | os.PathLike[str] | None, events: _Events) -> Path:
        path = Path(given) if given is not None else orch.default_trace_path()
        self.last_trace = path
        events("trace", {"path": str(path)})
        return path


def _release(orch: Orchestrator) -> None:
    if isinstance(orch.client, _CancellableClient):
        orch.client.close()


@dataclass(frozen=True)
class _Loaded:
    """A context of a ``with`` block: its key (to know it again), its checked file, its variable."""

    key: str
    source: ContextSource
    name: str
    label: str


class _Block:
    """The state of a ``with RLM() as r:`` block: one client, one sandbox, its contexts (the first is
    ``context``, later ones ``context_1``, ``context_2``, ...; a new sandbox after ``reset`` loads them
    all again under the same names).  A context is checked before the model server is opened, and both
    before the sandbox starts.  One lock:
    questions from several threads take turns (one kernel runs one cell at a time), and the sandbox
    is opened once."""

    def __init__(self, owner: RLM) -> None:
        self.owner = owner
        self.lock = threading.RLock()
        self.models: tuple[Settings, ModelClient] | None = None
        self.session: SandboxSession | None = None
        self.sources: list[_Loaded] = []  # every context given, in order: the first is `context`
        self.closed = False

    def run(self, question: str, context: ContextLike, trace_path: str | os.PathLike[str] | None,
            events: _Events, cancel: _Cancel | None) -> RunResult:
        with self.lock:
            self.open(context)
            assert self.models is not None and self.session is not None
            settings, client = self.models
            orch = self.owner._orchestrator(settings, client, events, cancel)
            if cancel is not None:
                cancel.check()
                cancel.add_session(self.session)
            try:
                return orch.run(question, trace_path=self.owner._trace_path(orch, trace_path, events),
                                session=self.session)
            except BaseException:
                if cancel is not None and cancel.cancelled:
                    self.reset()  # a cancelled question takes its sandbox with it; the next one starts anew
                raise
            finally:
                _release(orch)

    def open(self, context: ContextLike) -> float:
        """The block's sandbox with its contexts; its start-up time, 0 if it was open already."""
        return self.attach(context)[1]

    def attach(self, context: ContextLike) -> tuple[str | None, float]:
        """The block's sandbox, with ``context`` loaded: the first context given is ``context``, each new
        one the next ``context_N``, beside the others (nothing in the kernel is lost); a context given
        before is not loaded again.  Returns its variable (None for no context) and the sandbox's
        start-up time (0 if it was open).  The context is checked before the model server is opened,
        and both before the sandbox starts."""
        with self.lock:
            if self.closed:
                raise UsageError("this `with RLM()` block is over")
            key = _context_key(context)
            known = {loaded.key: loaded.name for loaded in self.sources}
            new = None
            if key is not None and key not in known:
                new = context_source(context, max_bytes=self.owner.settings.run.max_context_bytes)
            try:
                if self.models is None:
                    self.models = self.owner._open_models()
                seconds = self._start() if self.session is None else 0.0
                if new is None:
                    return (known[key] if key is not None else None), seconds
                assert self.session is not None and key is not None and new.path is not None
                label = _label(context)
                name = self.session.add_context(new.path, label)
            except BaseException:
                if new is not None:
                    new.cleanup()
                raise
            self.sources.append(_Loaded(key, new, name, label))
            return name, seconds

    def _start(self) -> float:
        """A new sandbox with every context of the block, under the same variables as before."""
        assert self.models is not None
        pool = self.owner._pool
        first = self.sources[0].source.path if self.sources else None
        if pool is not None:
            session = pool.acquire(first)
        else:
            session = SandboxSession(context=None, settings=self.models[0].sandbox, attachable=True).open()
        try:
            if pool is None and first is not None:
                session.attach_context(first)
            for loaded in self.sources[1:]:
                assert loaded.source.path is not None
                got = session.add_context(loaded.source.path, loaded.label)
                if got != loaded.name:
                    raise ContextError(f"the new sandbox loaded a context as {got}, not {loaded.name}")
        except BaseException:
            session.close()
            raise
        self.session = session
        return float(session.open_seconds or 0.0)

    def reset(self) -> None:
        with self.lock:
            session, self.session = self.session, None
        if session is not None:
            session.close()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            try:
                if self.session is not None:
                    self.session.close()
            finally:
                try:
                    for loaded in self.sources:
                        loaded.source.cleanup()
                finally:
                    if self.models is not None and self.owner._client is None:
                        self.models[1].close()


def _label(context: ContextLike) -> str:
    """Where a context came from, as the model is told it."""
    if isinstance(context, os.PathLike):
        path = Path(context)
        return f"{path.name}/ (a folder)" if path.is_dir() else path.name or str(path)
    if isinstance(context, str):
        return f"text given in the question's call ({len(context):,} characters)"
    return f"a {type(context).__name__} given in the question's call"


def _context_key(context: ContextLike) -> str | None:
    if context is None:
        return None
    if isinstance(context, os.PathLike):
        return "path:" + str(Path(context).resolve())
    if isinstance(context, str):
        return "text:" + context
    try:
        return "json:" + json.dumps(context, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return "object:" + repr(id(context))
