"""The OpenAI-compatible model client (Ollama, vLLM, llama.cpp's server, OpenAI).

This is the only module in rlm that imports ``openai``.  It adds what the plain SDK
does not: its own bounded retries (also of malformed and truncated replies), a total wait
per call (``max_wait_s``), a server's ``Retry-After`` honoured up to what is left of it,
reports while the server is silent or asks to wait, ``<think>`` stripping, an empty-reply
retry, usage and latency, and translation of every SDK error into an ``LLMError`` with a hint.

The retry loop exists once, as a plan (``_retry_plan``, a generator that says what to do
next: call, sleep, or read the model list); the sync and async clients only drive it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

import openai

from rlm.errors import EmptyReply, LLMError, ModelAuthError, ModelNotFound, ModelUnreachable, TruncatedReply
from rlm.llm.base import Completion, Message, ModelClient, ModelSettings, Usage, WaitListener, current_wait_listener
from rlm.llm.window import PROBE_TIMEOUT_S

log = logging.getLogger(__name__)

PLACEHOLDER_API_KEY = "not-needed"
BACKOFF_CAP_S = 8.0       # our own exponential backoff; a server's Retry-After is not capped by it
EMPTY_REPLY_ATTEMPTS = 2  # the first call plus one retry
SILENCE_REPORT_S = 30.0   # say so after this long without an answer, then again every as long
PROBE_MAX_BYTES = 4 * 1024 * 1024  # larger answers from those endpoints are ignored
WINDOW_RANGE = (256, 100_000_000)  # a reported window outside this is ignored

_T = TypeVar("_T")
_CALL, _SLEEP, _MODELS = "call", "sleep", "models"  # what the retry plan asks its driver to do
_Step = tuple[str, float]
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


def _is_truncated(exc: BaseException) -> bool:
    """The server answered, and its body was cut off before its end (not a network failure to reach it)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if type(seen).__name__ == "RemoteProtocolError" and (
                "complete message body" in str(seen) or "incomplete chunked read" in str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retry_after(exc: Exception) -> float | None:
    """Seconds the server asked to wait (``Retry-After``: seconds or an HTTP date, or ``retry-after-ms``)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms:
            return max(0.0, float(ms) / 1000)
    except (TypeError, ValueError):
        pass
    value = str(headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_retryable(exc: Exception) -> bool:
    if isinstance(exc, _MALFORMED):  # a garbled body is usually a proxy's or server's hiccup
        return True
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


class MalformedReply(Exception):
    """The server answered 200 with a body that is not a chat completion (bad JSON, wrong shape)."""


# What a malformed body raises in the SDK or in our reading of it: json.JSONDecodeError and
# pydantic's ValidationError are ValueErrors; APIResponseValidationError is the SDK's own.
_MALFORMED = (MalformedReply, ValueError, openai.APIResponseValidationError)
_FAILURES = (openai.OpenAIError, MalformedReply, ValueError)


class _Clock:
    """One call's time budget over all its attempts, and who is told while it is silent."""

    def __init__(self, settings: ModelSettings, url: str, what: str, listener: WaitListener | None,
                 interval_s: float) -> None:
        self.settings = settings
        self.url = url
        self.what = what
        self.listener = listener
        self.interval_s = interval_s
        self.max_wait_s = float(getattr(settings, "max_wait_s", 0.0) or 0.0)
        self.started = time.monotonic()
        self.attempt = 0  # 0-based number of the attempt in flight
        self.out_of_time = False  # a retry was due, but max_wait_s was used up
        self.cut = False          # the attempt in flight has less than timeout_s, because of max_wait_s
        self.asked_s: float | None = None  # the last Retry-After the server sent

    @property
    def max_attempts(self) -> int:
        return self.settings.max_retries + 1

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return float("inf") if self.max_wait_s <= 0 else self.max_wait_s - self.elapsed()

    def attempt_timeout(self) -> float:
        """The request timeout of the next attempt: timeout_s, cut to what is left of max_wait_s."""
        timeout = min(self.settings.timeout_s, self.remaining())
        self.cut = timeout < self.settings.timeout_s
        return max(0.001, timeout)

    def _tell(self, kind: str, data: dict[str, Any]) -> None:
        if self.listener is None:
            return
        try:
            self.listener(kind, data)
        except Exception:  # noqa: BLE001 - a display problem never breaks a model call
            pass

    def _limit(self) -> str:
        return f"gives up after {self.max_wait_s:g} s" if self.max_wait_s > 0 else "no total limit"

    def silent(self) -> None:
        elapsed = self.elapsed()
        silent_s = round(elapsed)
        retry = ", retried" if self.attempt else ""
        self._tell("model_wait", {
            "model": self.what, "silent_s": silent_s, "elapsed_s": round(elapsed, 3), "interval_s": self.interval_s,
            "attempt": self.attempt + 1,
            "max_attempts": self.max_attempts, "max_wait_s": self.max_wait_s,
            "message": (f"the model server at {self.url} has been silent for {silent_s} s ({self.what}, "
                        f"attempt {self.attempt + 1} of {self.max_attempts}{retry}; rlm {self._limit()})")})

    def retrying(self, reason: str, delay_s: float, asked_s: float | None = None) -> None:
        if asked_s is not None:
            message = (f"model server asked to retry after {asked_s:g} s; waiting ({reason} at {self.url}; "
                       f"{self.what}, attempt {self.attempt + 2} of {self.max_attempts} in {delay_s:.1f} s)")
        else:
            message = (f"the model server at {self.url} failed ({reason}); retrying {self.what} in "
                       f"{delay_s:.1f} s (attempt {self.attempt + 2} of {self.max_attempts})")
        log.info("%s", message)
        self._tell("model_retry", {
            "model": self.what, "attempt": self.attempt + 2, "max_attempts": self.max_attempts,
            "delay_s": round(delay_s, 3), "reason": reason, "retry_after_s": asked_s, "message": message})

    def watch_sync(self) -> _SyncWatch:
        return _SyncWatch(self)

    async def watch_async(self) -> None:
        """Report silence every interval until cancelled."""
        while True:
            await asyncio.sleep(self._next_report())
            self.silent()

    def _next_report(self) -> float:
        """Seconds to the next multiple of the interval since the call started."""
        elapsed = self.elapsed()
        return max(0.01, self.interval_s * (int(elapsed // self.interval_s) + 1) - elapsed)


class _SyncWatch:
    """A thread that reports silence while a sync call is in flight (only with a listener)."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> _SyncWatch:
        if self.clock.listener is not None:
            self.thread = threading.Thread(target=self._run, name="rlm-model-wait", daemon=True)
            self.thread.start()
        return self

    def _run(self) -> None:
        while not self.done.wait(self.clock._next_report()):
            self.clock.silent()

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join(timeout=1)


def _reason(exc: BaseException) -> str:
    if _is_truncated(exc):
        return "reply cut off before its end"
    if isinstance(exc, openai.APITimeoutError):
        return "no answer within the request timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection error"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, _MALFORMED):
        return "malformed reply"
    return type(exc).__name__


class OpenAICompatibleClient(ModelClient):
    """Chat completions against one OpenAI-compatible server, sync and async."""

    def __init__(self, settings: ModelSettings | None = None, *, backoff_base_s: float = 0.5,
                 silence_report_s: float = SILENCE_REPORT_S, on_wait: WaitListener | None = None) -> None:
        self.settings = settings or ModelSettings()
        self.backoff_base_s = backoff_base_s
        self.silence_report_s = silence_report_s
        self.on_wait = on_wait  # used when no listener is set with rlm.llm.base.report_waits
        self._lock = threading.Lock()
        self._client = openai.OpenAI(**self._client_kwargs())
        # One async client per event loop: httpx connections belong to the loop that made them.
        self._aclients: dict[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = {}
        self._no_tokenizer = False  # the server had no /tokenize when asked

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
        clock = self._clock(model)
        usage = Usage()
        finish: str | None = None
        had_thinking = False
        for _ in range(EMPTY_REPLY_ATTEMPTS):
            text, finish, had_thinking = self._retry_sync(
                lambda timeout: self._read(self._client.chat.completions.create(**kwargs, timeout=timeout), usage),
                model, clock)
            if text:
                return Completion(text=text, model=model, usage=usage, latency_s=time.monotonic() - start)
        raise self._empty_reply(model, finish, had_thinking)

    async def acomplete(self, messages: list[Message], *, model: str, temperature: float | None = None,
                        max_tokens: int | None = None) -> Completion:
        kwargs = self._request(messages, model, temperature, max_tokens)
        client = self._async_client()
        start = time.monotonic()
        clock = self._clock(model)
        usage = Usage()
        finish: str | None = None
        had_thinking = False

        async def attempt(timeout: float) -> tuple[str, str | None, bool]:
            return self._read(await client.chat.completions.create(**kwargs, timeout=timeout), usage)

        for _ in range(EMPTY_REPLY_ATTEMPTS):
            text, finish, had_thinking = await self._retry_async(attempt, model, clock)
            if text:
                return Completion(text=text, model=model, usage=usage, latency_s=time.monotonic() - start)
        raise self._empty_reply(model, finish, had_thinking)

    def list_models(self) -> list[str]:
        return self._retry_sync(lambda timeout: _model_ids(self._client.models.list(timeout=timeout)),
                                None, self._clock(None))

    async def alist_models(self) -> list[str]:
        client = self._async_client()

        async def attempt(timeout: float) -> list[str]:
            return _model_ids(await client.models.list(timeout=timeout))

        return await self._retry_async(attempt, None, self._clock(None))

    def context_window(self, model: str) -> int | None:
        """The window the server runs ``model`` with: llama.cpp's ``GET /props``
        (``default_generation_settings.n_ctx``, else ``n_ctx``), else Ollama's ``POST /api/show``
        (``num_ctx`` in its parameters, else the model's ``*.context_length``); None when neither answers."""
        props = self._probe("GET", "/props", None)
        if isinstance(props, dict):
            settings = props.get("default_generation_settings")
            for value in (settings.get("n_ctx") if isinstance(settings, dict) else None, props.get("n_ctx")):
                if isinstance(value, int) and _window_value(value):
                    return value
        show = self._probe("POST", "/api/show", {"model": model, "name": model})
        if isinstance(show, dict):
            params = show.get("parameters")
            if isinstance(params, str):
                for line in params.splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[0] == "num_ctx" and parts[1].isdigit() and _window_value(int(parts[1])):
                        return int(parts[1])
            info = show.get("model_info")
            if isinstance(info, dict):
                for key, value in info.items():
                    if isinstance(key, str) and key.endswith(".context_length") and _window_value(value):
                        return int(value)
        return None

    def count_tokens(self, model: str, text: str) -> int | None:
        """Tokens of ``text`` by the server's ``POST /tokenize`` (llama.cpp, vLLM); None when it has none."""
        with self._lock:
            if self._no_tokenizer:
                return None
        reply = self._probe("POST", "/tokenize", {"content": text, "model": model})
        if isinstance(reply, dict):
            count, tokens = reply.get("count"), reply.get("tokens")
            if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
                return count
            if isinstance(tokens, list):
                return len(tokens)
        with self._lock:
            self._no_tokenizer = True  # asked once per client: no second try for every prompt
        return None

    def _probe(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """JSON from an endpoint beside the OpenAI API (at the server's root), or None on any failure."""
        root = self.base_url.rstrip("/")
        root = root[:-3] if root.endswith("/v1") else root
        headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        data = None if body is None else json.dumps(body).encode("utf-8", "surrogatepass")
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(root + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:  # noqa: S310 - the configured server
                raw = response.read(PROBE_MAX_BYTES + 1)
                if response.status != 200 or len(raw) > PROBE_MAX_BYTES:
                    return None
            return json.loads(raw)
        except (OSError, urllib.error.URLError, ValueError, RecursionError):
            return None
        except Exception:  # noqa: BLE001 - a probe never fails a run
            log.debug("probe %s %s failed", method, path, exc_info=True)
            return None

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

    def _clock(self, model: str | None) -> _Clock:
        what = f"model {model!r}" if model else "the model list"
        return _Clock(self.settings, self.base_url, what, current_wait_listener() or self.on_wait,
                      self.silence_report_s)

    @staticmethod
    def _read(response: Any, usage: Usage) -> tuple[str, str | None, bool]:
        """Text (thinking removed), finish_reason and whether thinking was removed; adds usage.

        Raises ``MalformedReply`` when the body is not a chat completion."""
        if isinstance(response, (str, bytes)) or response is None or not hasattr(response, "choices"):
            raise MalformedReply(f"the body is not a chat completion: {str(response)[:200]!r}")
        choices = response.choices
        if choices is not None and not isinstance(choices, list):
            raise MalformedReply(f"'choices' is {type(choices).__name__}, not a list")
        message = getattr(choices[0], "message", None) if choices else None
        raw = getattr(message, "content", None) if message is not None else None
        if choices and (message is None or isinstance(message, (str, int, float, list))
                        or not (raw is None or isinstance(raw, str))):
            raise MalformedReply("the first choice has no message with text content")
        u = getattr(response, "usage", None)
        try:
            usage.prompt_tokens += int(getattr(u, "prompt_tokens", 0) or 0)
            usage.completion_tokens += int(getattr(u, "completion_tokens", 0) or 0)
        except (TypeError, ValueError):
            pass  # token counts are informative; a strange one does not spoil the reply
        cost = getattr(u, "cost", None)   # servers that price their calls (OpenRouter) report it here
        if isinstance(cost, (int, float)) and not isinstance(cost, bool) and 0 <= cost < 1e6:
            usage.cost_usd = (usage.cost_usd or 0.0) + float(cost)
        usage.calls += 1
        if not choices:
            return "", None, False
        raw = raw or ""
        text = strip_think(raw)
        finish = getattr(choices[0], "finish_reason", None)
        return text, finish if isinstance(finish, str) else None, bool(raw.strip()) and not text

    def _empty_reply(self, model: str, finish: str | None, had_thinking: bool) -> EmptyReply:
        what = "only <think> reasoning and no answer" if had_thinking else "no content"
        hint = ("the model ran out of tokens (finish_reason=length): raise max_tokens or use a "
                "model that thinks less" if finish == "length"
                else "try again, use another model, or check the model server's log")
        return EmptyReply(f"model {model!r} at {self.base_url} returned {what} twice "
                          f"(finish_reason={finish!r})", hint=hint)

    def _backoff(self, attempt: int, exc: Exception) -> tuple[float, float | None]:
        """Seconds to wait before the next attempt, and the Retry-After the server sent (if any)."""
        delay = min(BACKOFF_CAP_S, self.backoff_base_s * 2.0 ** attempt)
        asked = _retry_after(exc) if isinstance(exc, openai.APIStatusError) else None
        if asked is not None:
            delay = max(delay, asked)
        return delay + random.uniform(0, 0.1 * min(delay, BACKOFF_CAP_S)), asked

    def _retry_plan(self, model: str | None, clock: _Clock) -> Generator[_Step, Any, Any]:
        """The one retry loop of both clients, as a plan their drivers follow.

        Yields what to do next: ``(CALL, timeout)`` (is sent ``(True, value)`` or ``(False, exc)``),
        ``(SLEEP, seconds)`` (is sent None) or ``(MODELS, 0)`` (is sent the server's model list or
        None).  Returns the call's value, or raises the failure translated into an ``LLMError``."""
        while True:
            ok, value = yield (_CALL, clock.attempt_timeout())
            if ok:
                return value
            exc = value
            delay = self._retry_delay(exc, clock)
            if delay is not None:
                clock.retrying(_reason(exc), delay, clock.asked_s)
                yield (_SLEEP, delay)
                clock.attempt += 1
                continue
            models = (yield (_MODELS, 0.0)) if model and _is_model_not_found(exc) else None
            raise self._translate(exc, model, clock, models) from exc

    def _retry_sync(self, call: Callable[[float], _T], model: str | None, clock: _Clock) -> _T:
        plan = self._retry_plan(model, clock)
        step = next(plan)
        while True:
            kind, arg = step
            outcome: Any = None
            if kind == _CALL:
                try:
                    with clock.watch_sync():
                        outcome = (True, call(arg))
                except _FAILURES as exc:
                    outcome = (False, exc)
            elif kind == _SLEEP:
                time.sleep(arg)
            else:
                outcome = self._models_or_none()
            try:
                step = plan.send(outcome)
            except StopIteration as done:
                return done.value

    async def _retry_async(self, call: Callable[[float], Awaitable[_T]], model: str | None, clock: _Clock) -> _T:
        plan = self._retry_plan(model, clock)
        step = next(plan)
        while True:
            kind, arg = step
            outcome: Any = None
            if kind == _CALL:
                watch = asyncio.ensure_future(clock.watch_async()) if clock.listener is not None else None
                try:
                    outcome = (True, await call(arg))
                except _FAILURES as exc:
                    outcome = (False, exc)
                finally:
                    if watch is not None:
                        watch.cancel()
            elif kind == _SLEEP:
                await asyncio.sleep(arg)
            else:
                try:
                    outcome = await self.alist_models()
                except LLMError:
                    outcome = None
            try:
                step = plan.send(outcome)
            except StopIteration as done:
                return done.value

    def _retry_delay(self, exc: Exception, clock: _Clock) -> float | None:
        """Seconds to wait before the next attempt, or None when the failure is final.

        A server's Retry-After is honoured up to what is left of max_wait_s: past it, the call
        gives up at once (and says so) instead of retrying too late."""
        clock.asked_s = None
        if clock.cut and isinstance(exc, openai.APITimeoutError):
            clock.out_of_time = True
            return None
        if clock.attempt >= self.settings.max_retries or not _is_retryable(exc):
            return None
        delay, clock.asked_s = self._backoff(clock.attempt, exc)
        if delay >= clock.remaining():
            clock.out_of_time = True
            return None
        return delay

    def _models_or_none(self) -> list[str] | None:
        try:
            return self.list_models()
        except LLMError:
            return None

    def _translate(self, exc: Exception, model: str | None, clock: _Clock,
                   models: list[str] | None) -> LLMError:
        url = self.base_url
        attempts = clock.attempt + 1
        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        what = f"model {model!r}" if model else "the model list"
        if clock.out_of_time and clock.asked_s is not None:
            left = max(0.0, clock.remaining())
            return LLMError(f"the model server at {url} asked to retry {what} after {clock.asked_s:g} s, more than "
                            f"the {left:.0f} s left of max_wait_s={clock.max_wait_s:g} s ({tries}; the last one: "
                            f"{_reason(exc)})",
                            hint="raise max_wait_s (RLM_MAX_WAIT), or try again later")
        if clock.out_of_time:
            return LLMError(f"{what} at {url} did not answer within max_wait_s={clock.max_wait_s:g} s "
                            f"in total ({tries}; the last one: {_reason(exc)})",
                            hint="raise max_wait_s (RLM_MAX_WAIT) or timeout_s, or use a faster model")
        if _is_truncated(exc):
            return TruncatedReply(f"the model server at {url} answered {what}, but its reply was cut off before "
                                  f"its end ({tries}): {str(exc.__cause__ or exc)[:300]}",
                                  hint="the server (or a proxy in between) closed the connection mid-reply: "
                                       "check its log; it may have crashed or hit a limit")
        if isinstance(exc, _MALFORMED):
            return LLMError(f"the model server at {url} sent a malformed reply for {what} ({tries}): "
                            f"{type(exc).__name__}: {str(exc)[:300]}",
                            hint="check the model server's log; a proxy in between may cut or rewrite replies")
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


def _window_value(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and WINDOW_RANGE[0] <= value <= WINDOW_RANGE[1]


def _model_ids(page: Any) -> list[str]:
    data = getattr(page, "data", None)
    if not isinstance(data, list):
        raise MalformedReply(f"the model list is not a list: {str(page)[:200]!r}")
    ids = [getattr(m, "id", None) for m in data]
    return [i for i in ids if isinstance(i, str)]
