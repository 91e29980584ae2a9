"""The OpenAI-compatible model client (Ollama, vLLM, llama.cpp's server, OpenAI).

This is the only module in rlm that imports ``openai``.  It adds what the plain SDK
does not: its own bounded retries, ``<think>`` stripping, an empty-reply retry, usage
and latency, and translation of every SDK error into an ``LLMError`` with a hint.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import openai

from rlm.errors import EmptyReply, LLMError, ModelAuthError, ModelNotFound, ModelUnreachable
from rlm.llm.base import Completion, Message, ModelClient, ModelSettings, Usage

PLACEHOLDER_API_KEY = "not-needed"
BACKOFF_CAP_S = 8.0
EMPTY_REPLY_ATTEMPTS = 2  # the first call plus one retry

_T = TypeVar("_T")
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"\s*<think>", re.IGNORECASE)


def strip_think(text: str) -> str:
    """Remove reasoning: ``<think>..</think>`` blocks, text before a lone ``</think>``,
    and an unclosed leading ``<think>`` (the reply was cut off while thinking)."""
    text = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    elif _THINK_OPEN.match(text):
        text = ""
    return text.strip()


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return exc.message


def _is_retryable(exc: Exception) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 429:
            return exc.code != "insufficient_quota"  # out of credit: waiting will not help
        return exc.status_code >= 500
    return False


def _is_model_not_found(exc: Exception) -> bool:
    return isinstance(exc, openai.APIStatusError) and (
        exc.status_code == 404 or exc.code == "model_not_found")


class OpenAICompatibleClient(ModelClient):
    """Chat completions against one OpenAI-compatible server, sync and async."""

    def __init__(self, settings: ModelSettings | None = None, *, backoff_base_s: float = 0.5) -> None:
        self.settings = settings or ModelSettings()
        self.backoff_base_s = backoff_base_s
        self._lock = threading.Lock()
        self._client = openai.OpenAI(**self._client_kwargs())
        # One async client per event loop: httpx connections belong to the loop that made them.
        self._aclients: dict[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = {}

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def _client_kwargs(self) -> dict[str, Any]:
        return {"api_key": self.settings.api_key or PLACEHOLDER_API_KEY,
                "base_url": self.settings.base_url,
                "timeout": self.settings.timeout_s,
                "max_retries": 0}  # retries are ours, so their count is settings.max_retries

    def _async_client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        with self._lock:
            for dead in [lp for lp in self._aclients if lp.is_closed()]:
                del self._aclients[dead]
            client = self._aclients.get(loop)
            if client is None:
                client = self._aclients[loop] = openai.AsyncOpenAI(**self._client_kwargs())
            return client

    # ---- public API ---------------------------------------------------------------

    def complete(self, messages: list[Message], *, model: str, temperature: float | None = None,
                 max_tokens: int | None = None) -> Completion:
        kwargs = self._request(messages, model, temperature, max_tokens)
        start = time.monotonic()
        usage = Usage()
        finish: str | None = None
        had_thinking = False
        for _ in range(EMPTY_REPLY_ATTEMPTS):
            response = self._retry_sync(lambda: self._client.chat.completions.create(**kwargs), model)
            text, finish, had_thinking = self._read(response, usage)
            if text:
                return Completion(text=text, model=model, usage=usage, latency_s=time.monotonic() - start)
        raise self._empty_reply(model, finish, had_thinking)

    async def acomplete(self, messages: list[Message], *, model: str, temperature: float | None = None,
                        max_tokens: int | None = None) -> Completion:
        kwargs = self._request(messages, model, temperature, max_tokens)
        client = self._async_client()
        start = time.monotonic()
        usage = Usage()
        finish: str | None = None
        had_thinking = False
        for _ in range(EMPTY_REPLY_ATTEMPTS):
            response = await self._retry_async(lambda: client.chat.completions.create(**kwargs), model)
            text, finish, had_thinking = self._read(response, usage)
            if text:
                return Completion(text=text, model=model, usage=usage, latency_s=time.monotonic() - start)
        raise self._empty_reply(model, finish, had_thinking)

    def list_models(self) -> list[str]:
        page = self._retry_sync(lambda: self._client.models.list(), None)
        return [m.id for m in page.data]

    async def alist_models(self) -> list[str]:
        client = self._async_client()
        page = await self._retry_async(lambda: client.models.list(), None)
        return [m.id for m in page.data]

    def close(self) -> None:
        """Close the sync client and every async client (idempotent)."""
        self._client.close()
        with self._lock:
            aclients, self._aclients = self._aclients, {}
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, client in aclients.items():
            if loop.is_closed():
                continue  # its connections went with the loop
            try:
                if loop is current:
                    loop.create_task(client.close())
                elif loop.is_running():
                    asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=5)
                else:
                    loop.run_until_complete(client.close())
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass

    async def arelease(self) -> None:
        """Close the client of the running event loop only (its loop is about to close)."""
        with self._lock:
            client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    async def aclose(self) -> None:
        """Async close: awaits the current loop's client, closes the rest like ``close``."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._aclients.pop(loop, None)
        if client is not None:
            await client.close()
        self.close()

    # ---- internals ----------------------------------------------------------------

    def _request(self, messages: list[Message], model: str, temperature: float | None,
                 max_tokens: int | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": model, "messages": messages,
            "temperature": self.settings.temperature if temperature is None else temperature}
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        return kwargs

    @staticmethod
    def _read(response: Any, usage: Usage) -> tuple[str, str | None, bool]:
        """Text (thinking removed), finish_reason and whether thinking was removed; adds usage."""
        u = getattr(response, "usage", None)
        usage.prompt_tokens += int(getattr(u, "prompt_tokens", 0) or 0)
        usage.completion_tokens += int(getattr(u, "completion_tokens", 0) or 0)
        usage.calls += 1
        choices = getattr(response, "choices", None) or []
        if not choices:
            return "", None, False
        raw = choices[0].message.content or ""
        text = strip_think(raw)
        return text, choices[0].finish_reason, bool(raw.strip()) and not text

    def _empty_reply(self, model: str, finish: str | None, had_thinking: bool) -> EmptyReply:
        what = "only <think> reasoning and no answer" if had_thinking else "no content"
        hint = ("the model ran out of tokens (finish_reason=length): raise max_tokens or use a "
                "model that thinks less" if finish == "length"
                else "try again, use another model, or check the model server's log")
        return EmptyReply(f"model {model!r} at {self.base_url} returned {what} twice "
                          f"(finish_reason={finish!r})", hint=hint)

    def _backoff(self, attempt: int, exc: Exception) -> float:
        delay = min(BACKOFF_CAP_S, self.backoff_base_s * 2 ** attempt)
        if isinstance(exc, openai.APIStatusError):
            try:
                retry_after = float(exc.response.headers.get("retry-after", ""))
                delay = max(delay, min(retry_after, BACKOFF_CAP_S))
            except ValueError:
                pass
        return delay + random.uniform(0, 0.1 * delay)

    def _retry_sync(self, call: Callable[[], _T], model: str | None) -> _T:
        attempt = 0
        while True:
            try:
                return call()
            except openai.OpenAIError as exc:
                if attempt < self.settings.max_retries and _is_retryable(exc):
                    time.sleep(self._backoff(attempt, exc))
                    attempt += 1
                    continue
                models = self._models_or_none() if model and _is_model_not_found(exc) else None
                raise self._translate(exc, model, attempt + 1, models) from exc

    async def _retry_async(self, call: Callable[[], Awaitable[_T]], model: str | None) -> _T:
        attempt = 0
        while True:
            try:
                return await call()
            except openai.OpenAIError as exc:
                if attempt < self.settings.max_retries and _is_retryable(exc):
                    await asyncio.sleep(self._backoff(attempt, exc))
                    attempt += 1
                    continue
                models = None
                if model and _is_model_not_found(exc):
                    try:
                        models = await self.alist_models()
                    except LLMError:
                        models = None
                raise self._translate(exc, model, attempt + 1, models) from exc

    def _models_or_none(self) -> list[str] | None:
        try:
            return self.list_models()
        except LLMError:
            return None

    def _translate(self, exc: Exception, model: str | None, attempts: int,
                   models: list[str] | None) -> LLMError:
        url = self.base_url
        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        what = f"model {model!r}" if model else "the model list"
        if isinstance(exc, openai.APITimeoutError):
            return LLMError(f"{what} at {url} did not answer within {self.settings.timeout_s:g} s ({tries})",
                            hint="raise the request timeout (timeout_s) or use a smaller, faster model")
        if isinstance(exc, openai.APIConnectionError):
            cause = f": {exc.__cause__}" if exc.__cause__ else ""
            return ModelUnreachable(
                f"cannot reach the model server at {url} ({tries}){cause}",
                hint="start Ollama with `ollama serve`, or point rlm at another OpenAI-compatible "
                     "server with --base-url or OLLAMA_BASE_URL")
        if isinstance(exc, openai.APIStatusError):
            status, msg = exc.status_code, _server_message(exc)
            if status in (401, 403):
                return ModelAuthError(
                    f"the model server at {url} refused the credentials (HTTP {status}): {msg}",
                    hint="set OPENAI_API_KEY (or api_key in the config) to a key this server accepts")
            if model and _is_model_not_found(exc):
                if models is None:
                    offered = "its model list could not be read either"
                    hint = f"check that the base URL ({url}) is right; it usually ends in /v1"
                else:
                    offered = "it offers: " + (", ".join(models) if models else "(no models)")
                    hint = f"use one of the offered models, or with Ollama run `ollama pull {model}`"
                return ModelNotFound(f"the server at {url} does not offer model {model!r} "
                                     f"(HTTP {status}: {msg}); {offered}", hint=hint)
            if status == 429:
                return LLMError(f"the model server at {url} is rate-limiting requests for {what} "
                                f"(HTTP 429, {tries}): {msg}",
                                hint="lower the concurrency, raise max_retries, or check your quota")
            if status >= 500:
                return LLMError(f"the model server at {url} failed on {what} (HTTP {status}, {tries}): {msg}",
                                hint="check the model server's log; it may be out of memory")
            return LLMError(f"the model server at {url} rejected the request for {what} (HTTP {status}): {msg}")
        return LLMError(f"unexpected reply from the model server at {url} for {what}: {exc}")
