"""A model client that watches the embedded server it talks to.

Before each request: if the server rlm started is gone (it died *between* requests), it is
restarted once on the same port, and that is said; a second death is an error.  After a failed
request: if the server is gone, the failure is what it is, a dead server (which signal or exit
status, its log's last lines, where the log is), never "start Ollama".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from rlm.errors import LLMError
from rlm.llm.base import Completion, Message, ModelClient
from rlm.llm.local.server import ServerInfo, alive, died_error, start_server
from rlm.llm.local.weights import ModelSpec

__all__ = ["EmbeddedGuard", "GuardedClient"]


class EmbeddedGuard:
    """The embedded server's state as seen by one run (thread-safe: sub-calls come from bridge threads)."""

    def __init__(self, info: ServerInfo, spec: ModelSpec | None, *, cache: Path | None = None,
                 say: Callable[[str], None] | None = None, restarts_allowed: int = 1) -> None:
        self.info = info
        self.spec = spec
        self.cache = cache
        self.say = say or (lambda _text: None)
        self.restarts_left = restarts_allowed
        self._lock = threading.Lock()

    def before_request(self) -> None:
        with self._lock:
            if alive(self.info):
                return
            if self.restarts_left <= 0 or self.spec is None:
                raise died_error(self.info, "between requests, after a restart")
            gone = died_error(self.info, "between requests")
            self.say(f"{gone.message.splitlines()[0]}: restarting it once (log: {self.info.log}) ...")
            self.restarts_left -= 1
            self.info, _ = start_server(self.spec, cache=self.cache, port=self.info.port)
            self.say(f"embedded server restarted (pid {self.info.server_pid or self.info.pid}); going on")

    def after_failure(self, exc: LLMError) -> LLMError:
        """The error to raise for ``exc``: a dead server's own story when the server is gone."""
        if alive(self.info):
            return exc
        return died_error(self.info, "during a request")


class GuardedClient(ModelClient):
    """``inner`` with ``guard`` consulted around every request."""

    def __init__(self, inner: ModelClient, guard: EmbeddedGuard) -> None:
        self.inner = inner
        self.guard = guard

    def complete(self, messages: list[Message], *, model: str, temperature: float | None = None,
                 max_tokens: int | None = None) -> Completion:
        self.guard.before_request()
        try:
            return self.inner.complete(messages, model=model, temperature=temperature, max_tokens=max_tokens)
        except LLMError as exc:
            error = self.guard.after_failure(exc)
            if error is exc:
                raise
            raise error from exc

    async def acomplete(self, messages: list[Message], *, model: str, temperature: float | None = None,
                        max_tokens: int | None = None) -> Completion:
        self.guard.before_request()
        try:
            return await self.inner.acomplete(messages, model=model, temperature=temperature,
                                              max_tokens=max_tokens)
        except LLMError as exc:
            error = self.guard.after_failure(exc)
            if error is exc:
                raise
            raise error from exc

    def list_models(self) -> list[str]:
        self.guard.before_request()
        return self.inner.list_models()

    async def arelease(self) -> None:
        await self.inner.arelease()

    def close(self) -> None:
        self.inner.close()
