"""The model-client interface every model is reached through."""

from __future__ import annotations

import contextvars
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BASE_URL = "http://localhost:11434/v1"
DEFAULT_ROOT_MODEL = "qwen3:14b"


@dataclass(frozen=True)
class ModelSettings:
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = None          # from the environment when set; a placeholder is sent otherwise
    root_model: str = DEFAULT_ROOT_MODEL
    sub_model: str | None = None        # None: same as root_model
    temperature: float = 0.0
    timeout_s: float = 300.0            # per request
    max_retries: int = 3                # on connection errors, 429, 5xx and malformed replies
    max_wait_s: float = 600.0           # one call in total, over all its retries; 0: no total limit
    model_windows: tuple[tuple[str, str], ...] = ()  # (model, context window in tokens): overrides the server

    def windows(self) -> dict[str, int]:
        """``model_windows`` as numbers (the settings check that each is a positive integer)."""
        out: dict[str, int] = {}
        for name, tokens in self.model_windows:
            try:
                out[name] = int(str(tokens).strip())
            except ValueError:
                continue
        return out

    @property
    def effective_sub_model(self) -> str:
        return self.sub_model or self.root_model


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    memoised: int = 0  # sub-calls answered from the run's memo (not sent, not in ``calls``)
    cost_usd: float | None = None  # what the server reported it cost (``usage.cost``), when it did

    def add(self, other: "Usage") -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.calls += other.calls
        self.memoised += other.memoised
        if other.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + other.cost_usd

    def to_dict(self) -> dict[str, int | float]:
        out: dict[str, int | float] = {"prompt_tokens": self.prompt_tokens,
                                       "completion_tokens": self.completion_tokens,
                                       "calls": self.calls, "memoised": self.memoised}
        if self.cost_usd is not None:
            out["cost_usd"] = self.cost_usd
        return out


@dataclass
class Completion:
    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0


Message = dict[str, Any]  # {"role": "system" | "user" | "assistant", "content": str}

WaitListener = Callable[[str, dict[str, Any]], None]
"""Told ``("model_wait", data)`` while a model call is silent and ``("model_retry", data)`` before a
retry; ``data["message"]`` is a sentence to show."""

_wait_listener: contextvars.ContextVar[WaitListener | None] = contextvars.ContextVar(
    "rlm_model_wait_listener", default=None)


@contextmanager
def report_waits(listener: WaitListener | None) -> Iterator[None]:
    """Model calls made in this context (this thread, or tasks created in it) tell ``listener``
    when the server is silent or a request is retried."""
    token = _wait_listener.set(listener)
    try:
        yield
    finally:
        _wait_listener.reset(token)


def current_wait_listener() -> WaitListener | None:
    return _wait_listener.get()


class ModelClient(ABC):
    """Sync and async chat completion against one server."""

    @abstractmethod
    def complete(self, messages: list[Message], *, model: str, temperature: float | None = None,
                 max_tokens: int | None = None) -> Completion:
        """One chat completion; raises ``LLMError`` subclasses on failure."""

    @abstractmethod
    async def acomplete(self, messages: list[Message], *, model: str, temperature: float | None = None,
                        max_tokens: int | None = None) -> Completion:
        """Async twin of ``complete``."""

    @abstractmethod
    def list_models(self) -> list[str]:
        """Model names the server offers."""

    def context_window(self, model: str) -> int | None:
        """``model``'s context window in tokens as its server reports it, or None when unknown.

        Never raises.  A wrapper that keeps the client it wraps as ``.inner`` answers from it."""
        inner = getattr(self, "inner", None)
        return inner.context_window(model) if isinstance(inner, ModelClient) else None

    def count_tokens(self, model: str, text: str) -> int | None:
        """Tokens of ``text`` by the server's own tokenizer, or None when it has none.  Never raises."""
        inner = getattr(self, "inner", None)
        return inner.count_tokens(model, text) if isinstance(inner, ModelClient) else None

    async def arelease(self) -> None:  # noqa: B027 - optional hook
        """Release what the running event loop holds (called before that loop is closed)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> "ModelClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReportingClient(ModelClient):
    """``inner`` as a caller on another thread or event loop sees it: its silent or retried
    requests are told to ``listener`` (a run's sub-calls run on bridge threads, outside the root
    call's context); it does not own ``inner``."""

    def __init__(self, inner: ModelClient, listener: WaitListener) -> None:
        self.inner = inner
        self.listener = listener

    def complete(self, messages: list[Message], *, model: str, temperature: float | None = None,
                 max_tokens: int | None = None) -> Completion:
        with report_waits(self.listener):
            return self.inner.complete(messages, model=model, temperature=temperature, max_tokens=max_tokens)

    async def acomplete(self, messages: list[Message], *, model: str, temperature: float | None = None,
                        max_tokens: int | None = None) -> Completion:
        with report_waits(self.listener):
            return await self.inner.acomplete(messages, model=model, temperature=temperature, max_tokens=max_tokens)

    def list_models(self) -> list[str]:
        return self.inner.list_models()

    async def arelease(self) -> None:
        await self.inner.arelease()

    def close(self) -> None:
        """``inner`` is not owned: nothing to close."""
