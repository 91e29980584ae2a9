"""The public API: ``RLM``.

    from rlm import RLM

    result = RLM(base_url="http://localhost:11434/v1", root_model="qwen3:14b").run(
        "Which customers churned?", Path("tickets.jsonl"))
    print(result.answer, result.status, result.iterations, result.sub_calls, result.usage)

    with RLM(config="run.yaml") as r:          # one sandbox for every question in the block
        r.run("Load the tickets into a DataFrame called df", Path("tickets.jsonl"))
        r.run("How many rows does df have?")   # variables are kept, as in `rlm interactive`

Settings come from the same layers as the CLI's (defaults < YAML < ``.env`` < environment <
keyword arguments, by their YAML keys); with no model server configured and none answering,
the embedded llama.cpp model stands in, exactly as for ``rlm query``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Union

from rlm.config import LoadedSettings, Settings, load_settings
from rlm.core.context import ContextSource, check_file, inline_json, inline_text
from rlm.core.orchestrator import Orchestrator
from rlm.core.result import RunResult
from rlm.errors import ContextError, UsageError
from rlm.llm.base import ModelClient
from rlm.sandbox.session import SandboxSession

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
    model"; default: printed on stderr).
    """

    def __init__(self, config: str | os.PathLike[str] | None = None, *, settings: Settings | LoadedSettings | None = None,
                 on_iteration: Callable[[IterationEvent], None] | None = None,
                 on_sub_call: Callable[[SubCallEvent], None] | None = None,
                 on_event: Callable[[str, dict], None] | None = None,
                 on_notice: Callable[[str], None] | None = None,
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
        self._events = _Events(on_iteration, on_sub_call, on_event)
        self._notice = on_notice or _stderr
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
        if not isinstance(question, str) or not question.strip():
            raise UsageError("the question is empty", hint="ask something, e.g. run('What is the main topic?', ctx)")
        if self._block is not None:
            return self._block.run(self, question, context, trace_path)
        with context_source(context, max_bytes=self.settings.run.max_context_bytes) as source:
            settings, client = self._open_models()
            with client:
                orch = self._orchestrator(settings, client)
                return orch.run(question, source.path, trace_path=self._trace_path(orch, trace_path))

    async def arun(self, question: str, context: ContextLike = None, *,
                   trace_path: str | os.PathLike[str] | None = None) -> RunResult:
        """``run`` for asyncio: the run happens in a worker thread; callbacks are called from it."""
        return await asyncio.to_thread(self.run, question, context, trace_path=trace_path)

    def completion(self, prompt: str, context: ContextLike = None) -> str:
        """The answer alone (``run(...).answer``, or ``""``)."""
        return self.run(prompt, context).answer or ""

    # -- a session: one sandbox for every question -----------------------------------------
    def __enter__(self) -> "RLM":
        if self._block is not None:
            raise UsageError("this RLM is already in a `with` block")
        self._block = _Block(self)  # the model server and the sandbox start with the first question
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open_sandbox(self, context: ContextLike = None) -> float:
        """In a ``with`` block: start the block's sandbox now, with ``context``; return its start-up time (s)."""
        if self._block is None:
            raise UsageError("open_sandbox() is for a `with RLM() as r:` block")
        seconds = self._block.open(context)
        self._events("sandbox_ready", {"seconds": seconds})
        return seconds

    def reset(self) -> None:
        """In a ``with`` block: a new sandbox for the next question (variables cleared), same context."""
        if self._block is None:
            raise UsageError("reset() is for a `with RLM() as r:` block")
        self._block.reset()

    def close(self) -> None:
        """End the session (if any): the sandbox is removed, the model client closed."""
        block, self._block = self._block, None
        if block is not None:
            block.close()

    # -- internals ------------------------------------------------------------------------
    def _open_models(self) -> tuple[Settings, ModelClient]:
        from rlm.llm.resolve import open_models

        return open_models(self.settings, base_url_explicit=self.loaded.base_url_configured, say=self._notice)

    def _orchestrator(self, settings: Settings, client: ModelClient) -> Orchestrator:
        return Orchestrator(settings, client, progress=self._events)

    def _trace_path(self, orch: Orchestrator, given: str | os.PathLike[str] | None) -> Path:
        path = Path(given) if given is not None else orch.default_trace_path()
        self.last_trace = path
        self._events("trace", {"path": str(path)})
        return path


class _Block:
    """The state of a ``with RLM() as r:`` block: one client, one sandbox, its context.  The context
    is checked before the model server is opened, and both before the sandbox starts."""

    def __init__(self, owner: RLM) -> None:
        self.owner = owner
        self.models: tuple[Settings, ModelClient] | None = None
        self.session: SandboxSession | None = None
        self.source: ContextSource | None = None
        self.context_key: str | None = None

    def run(self, owner: RLM, question: str, context: ContextLike,
            trace_path: str | os.PathLike[str] | None) -> RunResult:
        self.open(context)
        assert self.models is not None
        settings, client = self.models
        orch = owner._orchestrator(settings, client)
        return orch.run(question, trace_path=owner._trace_path(orch, trace_path), session=self.session)

    def open(self, context: ContextLike) -> float:
        """The block's sandbox, with its context (the first one given); its start-up time, 0 if open."""
        key = _context_key(context)
        if self.source is None:
            self.source = context_source(context, max_bytes=self.owner.settings.run.max_context_bytes)
            self.context_key = key
        elif key is not None and key != self.context_key:
            raise UsageError("a `with RLM()` block keeps one sandbox and its context; this question gives another",
                             hint="pass no context (the block's is used), or open another block for it")
        if self.models is None:
            self.models = self.owner._open_models()
        if self.session is not None:
            return 0.0
        self.session = SandboxSession(context=self.source.path, settings=self.models[0].sandbox).open()
        return float(self.session.open_seconds or 0.0)

    def reset(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.close()

    def close(self) -> None:
        try:
            if self.session is not None:
                self.session.close()
        finally:
            try:
                if self.source is not None:
                    self.source.cleanup()
            finally:
                if self.models is not None:
                    self.models[1].close()


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
