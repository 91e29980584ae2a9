"""The service behind both adapters: one model client, a warm pool of sandboxes, a bounded queue,
and ``run`` (one question, its own sandbox, limits and timeout) and sessions (several questions in
one sandbox, for MCP).  Adapters translate its ``APIError``s; it translates ``RLMError``s."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm import RLM, LoadedSettings, RLMError, RunResult, Settings
from rlm.serve.contexts import FileStore, confined
from rlm.serve.errors import APIError, from_rlm_error
from rlm.serve.queue import RunQueue

log = logging.getLogger("rlm.serve")

TRACE_ID = re.compile(r"^run-[0-9a-f]{16}$")
SESSION_ID = re.compile(r"^ses-[0-9a-f]{16}$")
EventSink = Callable[[str, dict], None]


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    context_root: Path | None = None
    workers: int = 2
    max_queue: int = 32
    request_timeout_s: float = 600.0   # one run, queue wait excluded
    grace_s: float = 30.0              # on SIGTERM: how long in-flight runs may finish before they are cancelled
    data_dir: Path = Path(".rlm-serve")  # uploads and traces
    max_upload_bytes: int = 100 * 1024 * 1024
    max_sessions: int = 8              # MCP sessions open at once
    session_idle_s: float = 1800.0     # an MCP session unused this long is closed when room is needed
    warm_pool: bool = True
    token: str | None = field(default=None, repr=False)


@dataclass
class _Session:
    rlm: RLM
    lock: asyncio.Lock
    path: str
    last_used: float = field(default_factory=time.monotonic)


class Service:
    def __init__(self, loaded: LoadedSettings, options: ServeOptions) -> None:
        self.loaded = loaded
        self.options = options
        self.settings: Settings = loaded.settings
        self.client: Any = None
        self.pool: Any = None
        self.models: list[str] = []
        self.queue: RunQueue | None = None
        self.files = FileStore(options.data_dir / "files", options.max_upload_bytes)
        self.trace_dir = options.data_dir / "traces"
        self.trace_dir.mkdir(parents=True, exist_ok=True)
        self.sessions: dict[str, _Session] = {}
        self._started = False

    # -- lifecycle (blocking: call from a thread) ----------------------------------------------
    def start(self) -> Service:
        from rlm.llm.resolve import make_client, open_models

        try:
            self.settings, self.client = open_models(self.loaded.settings,
                                                     base_url_explicit=self.loaded.base_url_configured,
                                                     say=lambda text: log.info("%s", text))
        except RLMError as exc:  # the server still starts; runs answer 503 until the model server is up
            log.warning("the model server is not ready: %s", exc)
            self.settings, self.client = self.loaded.settings, make_client(self.loaded.settings)
        try:
            offered = self.client.list_models()
        except RLMError:
            offered = []
        m = self.settings.model
        self.models = list(dict.fromkeys([m.root_model, m.effective_sub_model, *offered]))
        if self.options.warm_pool:
            from rlm.sandbox.pool import SandboxPool

            self.pool = SandboxPool(self.options.workers, self.settings.sandbox).start()
        self._started = True
        return self

    def close(self) -> None:
        """Close the sessions, wait for cancelled runs to remove their sandboxes, close the pool and client."""
        from rlm._api import CANCEL_GRACE_S

        deadline = time.monotonic() + CANCEL_GRACE_S + 5
        for thread in [t for t in threading.enumerate() if t.name in ("rlm-arun", "rlm-cancel")]:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for session in list(self.sessions.values()):
            session.rlm.close()
        self.sessions.clear()
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        if self.client is not None:
            self.client.close()
            self.client = None

    def bind_queue(self) -> RunQueue:
        """The queue (made on the serving event loop)."""
        if self.queue is None:
            self.queue = RunQueue(self.options.workers, self.options.max_queue)
        return self.queue

    # -- what a request names --------------------------------------------------------------------
    def model_for(self, name: str | None) -> str | None:
        """The root model a request's ``model`` names (None: the configured one); 404 if unknown."""
        if name in (None, "", "rlm"):
            return None
        if isinstance(name, str) and name.startswith("rlm/") and name[4:] in self.models:
            return name[4:]
        raise APIError(404, f"the model {str(name)[:100]!r} does not exist; this server offers "
                            + ", ".join(["rlm"] + [f"rlm/{m}" for m in self.models][:20]), "model_not_found",
                       param="model")

    def context_for(self, spec: Any) -> Any:
        """A request's ``rlm.context`` object as a context for ``RLM.run``; 400 if malformed."""
        if spec is None:
            return None
        if not isinstance(spec, dict) or len(spec) != 1:
            raise APIError(400, "rlm.context must be an object with one key: text, documents, path or file_id",
                           "invalid_context", param="rlm.context")
        (kind, value), = spec.items()
        if kind == "text":
            if not isinstance(value, str):
                raise APIError(400, "rlm.context.text must be a string", "invalid_context", param="rlm.context.text")
            return value
        if kind == "documents":
            if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
                raise APIError(400, "rlm.context.documents must be a list of strings", "invalid_context",
                               param="rlm.context.documents")
            return value
        if kind == "path":
            return confined(self.options.context_root, value)
        if kind == "file_id":
            return self.files.get(value).path
        raise APIError(400, f"unknown rlm.context kind {str(kind)[:40]!r}: use text, documents, path or file_id",
                       "invalid_context", param="rlm.context")

    def trace_path(self, trace_id: str) -> Path:
        if not TRACE_ID.match(trace_id):
            raise APIError(404, "no such trace", "trace_not_found")
        path = self.trace_dir / f"{trace_id}.jsonl"
        if not path.is_file():
            raise APIError(404, "no such trace", "trace_not_found")
        return path

    def _settings(self, model: str | None, max_iterations: int | None) -> Settings:
        s = self.settings
        if model is not None:
            s = dataclasses.replace(s, model=dataclasses.replace(s.model, root_model=model))
        if max_iterations is not None:
            if not isinstance(max_iterations, int) or isinstance(max_iterations, bool) or max_iterations < 1:
                raise APIError(400, "max_iterations must be a positive integer", "invalid_request",
                               param="max_iterations")
            limit = min(max_iterations, s.run.max_iterations)
            s = dataclasses.replace(s, run=dataclasses.replace(s.run, max_iterations=limit))
        return s

    def _rlm(self, settings: Settings, on_event: EventSink | None) -> RLM:
        return RLM(settings=settings, model_client=self.client, sandbox_pool=self.pool, on_event=on_event,
                   on_notice=lambda text: log.info("%s", text))

    # -- runs ----------------------------------------------------------------------------------
    async def run(self, question: str, context: Any, *, model: str | None = None,
                  max_iterations: int | None = None, on_event: EventSink | None = None) -> tuple[RunResult, str]:
        """One question in its own sandbox, after its turn in the queue; (result, trace id)."""
        if not isinstance(question, str) or not question.strip():
            raise APIError(400, "the question (the last user message) is empty", "invalid_request", param="messages")
        settings = self._settings(model, max_iterations)
        trace_id = "run-" + secrets.token_hex(8)
        async with self.bind_queue().slot():
            r = self._rlm(settings, on_event)
            result = await self._await(r.arun(question, context, trace_path=self.trace_dir / f"{trace_id}.jsonl"))
        return result, trace_id

    async def _await(self, run: Any) -> RunResult:
        try:
            return await asyncio.wait_for(run, self.options.request_timeout_s)
        except asyncio.TimeoutError:
            raise APIError(504, f"the run took longer than the server's limit of {self.options.request_timeout_s:g} s",
                           "timeout") from None
        except RLMError as exc:
            raise from_rlm_error(exc) from None

    # -- sessions (MCP) ------------------------------------------------------------------------
    async def open_session(self, context: Any) -> str:
        now = time.monotonic()
        for session_id, idle in list(self.sessions.items()):
            if now - idle.last_used > self.options.session_idle_s and not idle.lock.locked():
                log.info("closing the idle session %s", session_id)
                del self.sessions[session_id]
                await asyncio.to_thread(idle.rlm.close)
        if len(self.sessions) >= self.options.max_sessions:
            raise APIError(429, f"{len(self.sessions)} sessions are open (the limit); close one first",
                           "too_many_sessions")
        r = self._rlm(self.settings, None)
        r.__enter__()
        try:
            await asyncio.to_thread(r.open_sandbox, context)
        except BaseException as exc:
            await asyncio.to_thread(r.close)
            if isinstance(exc, RLMError):
                raise from_rlm_error(exc) from None
            raise
        session_id = "ses-" + secrets.token_hex(8)
        self.sessions[session_id] = _Session(r, asyncio.Lock(), str(context)[:200])
        return session_id

    def _session(self, session_id: str) -> _Session:
        session = self.sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None:
            raise APIError(404, f"no open session {str(session_id)[:40]!r}", "session_not_found")
        return session

    async def ask_in_session(self, session_id: str, question: str, *,
                             on_event: EventSink | None = None) -> tuple[RunResult, str]:
        session = self._session(session_id)
        if not isinstance(question, str) or not question.strip():
            raise APIError(400, "the question is empty", "invalid_request")
        trace_id = "run-" + secrets.token_hex(8)
        async with session.lock, self.bind_queue().slot():
            session.rlm._callbacks = (None, None, on_event)  # this question's progress
            try:
                result = await self._await(session.rlm.arun(question,
                                                            trace_path=self.trace_dir / f"{trace_id}.jsonl"))
            finally:
                session.last_used = time.monotonic()
        return result, trace_id

    async def close_session(self, session_id: str) -> None:
        session = self._session(session_id)
        del self.sessions[session_id]
        await asyncio.to_thread(session.rlm.close)


def summary(result: RunResult, trace_id: str) -> dict[str, Any]:
    """The ``rlm`` object of a reply: how the run went."""
    return {"status": result.status, "iterations": result.iterations, "sub_calls": result.sub_calls,
            "duration_s": round(result.duration_s, 3), "trace_id": trace_id,
            "trace_url": f"/v1/traces/{trace_id}", "error": result.error}


def usage(result: RunResult) -> dict[str, int]:
    """OpenAI ``usage``: the sum over the root model and every sub-call."""
    prompt = sum(u.prompt_tokens for u in result.usage.values())
    completion = sum(u.completion_tokens for u in result.usage.values())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


