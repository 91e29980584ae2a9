"""Serving llm_query / llm_query_batched / rlm_query for one run, within its budgets.

This is the handler a session's bridge calls (on a worker thread) for each request from
the REPL.  Refusals (disabled, over budget, too long) raise ``BridgeRefusal``: the REPL
turns them into a ``SubCallError`` the model can read; the host never crashes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from typing import Callable

from rlm.errors import LLMError, RLMError
from rlm.llm.base import ModelClient, Usage
from rlm.sandbox.bridge import BridgeRefusal

ChildRunner = Callable[[str, "str | None"], tuple[str, dict[str, Usage]]]
"""Runs a child RLM on (prompt, context text); returns its answer and its token usage per model."""


class SubCallHandler:
    def __init__(self, client: ModelClient, *, sub_model: str, temperature: float, enabled: bool,
                 max_calls: int, max_chars: int, concurrency: int, child: ChildRunner | None = None,
                 on_call: Callable[[dict], None] | None = None) -> None:
        self.client = client
        self.sub_model = sub_model
        self.temperature = temperature
        self.enabled = enabled
        self.max_calls = max_calls
        self.max_chars = max_chars
        self.concurrency = max(1, concurrency)
        self.child = child
        self.on_call = on_call or (lambda _event: None)
        self.calls = 0
        self.usage: dict[str, Usage] = defaultdict(Usage)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # one loop for every batch of this run
        self._loop_thread: threading.Thread | None = None

    def close(self) -> None:
        """Stop the batch loop and release the connections it holds (idempotent)."""
        with self._lock:
            loop, thread, self._loop, self._loop_thread = self._loop, self._loop_thread, None, None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.client.arelease(), loop).result(timeout=10)
        except Exception:  # noqa: BLE001 - best effort while shutting down
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

    def _run_async(self, coro):
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(target=self._loop.run_forever, name="rlm-subcalls",
                                                     daemon=True)
                self._loop_thread.start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    # -- budget --------------------------------------------------------------------------
    def _reserve(self, n: int) -> None:
        if not self.enabled:
            raise BridgeRefusal("sub-calls are disabled for this run (ENABLE_SUB_CALLS=false); "
                                "work with `context` directly in code")
        with self._lock:
            left = self.max_calls - self.calls
            if n > left:
                raise BridgeRefusal(f"sub-call budget exceeded: {n} call(s) asked, {max(left, 0)} of "
                                    f"MAX_SUB_CALLS={self.max_calls} left; aggregate with code instead")
            self.calls += n

    def _check_prompt(self, prompt: object) -> str:
        if not isinstance(prompt, str):
            raise BridgeRefusal("prompts must be strings")
        if len(prompt) > self.max_chars:
            raise BridgeRefusal(f"prompt of {len(prompt)} characters exceeds MAX_SUB_CALL_CHARS={self.max_chars}; "
                                "split it into chunks")
        return prompt

    def _model(self, request: dict) -> str:
        model = request.get("model")
        return model if isinstance(model, str) and model else self.sub_model

    def _record(self, model: str, prompt: str, text: str | None, usage: Usage | None, started: float,
                error: str | None) -> None:
        if usage is not None:
            with self._lock:
                self.usage[model].add(usage)
        self.on_call({"model": model, "prompt_chars": len(prompt), "reply_chars": len(text or ""),
                      "latency_s": round(time.perf_counter() - started, 4), "ok": error is None, "error": error})

    # -- the bridge handler --------------------------------------------------------------
    def __call__(self, request: dict) -> dict:
        op = request.get("op")
        if op == "llm_query":
            return {"text": self._one(request)}
        if op == "llm_query_batched":
            return {"texts": self._batch(request)}
        if op == "rlm_query":
            return {"text": self._rlm(request)}
        raise BridgeRefusal(f"unknown operation {op!r}")

    def _messages(self, prompt: str) -> list[dict]:
        return [{"role": "user", "content": prompt}]

    def _one(self, request: dict) -> str:
        prompt = self._check_prompt(request.get("prompt"))
        model = self._model(request)
        self._reserve(1)
        started = time.perf_counter()
        try:
            completion = self.client.complete(self._messages(prompt), model=model, temperature=self.temperature)
        except LLMError as exc:
            self._record(model, prompt, None, None, started, exc.message)
            raise BridgeRefusal(f"the sub-model failed: {exc.message}") from exc
        self._record(model, prompt, completion.text, completion.usage, started, None)
        return completion.text

    def _batch(self, request: dict) -> list[str]:
        prompts = request.get("prompts")
        if not isinstance(prompts, list):
            raise BridgeRefusal("llm_query_batched needs a list of prompts")
        prompts = [self._check_prompt(p) for p in prompts]
        model = self._model(request)
        self._reserve(len(prompts))
        return self._run_async(self._gather(prompts, model))

    async def _gather(self, prompts: list[str], model: str) -> list[str]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(prompt: str) -> str:
            async with gate:
                started = time.perf_counter()
                try:
                    completion = await self.client.acomplete(self._messages(prompt), model=model,
                                                             temperature=self.temperature)
                except LLMError as exc:
                    self._record(model, prompt, None, None, started, exc.message)
                    return f"Error: {exc.message}"
                self._record(model, prompt, completion.text, completion.usage, started, None)
                return completion.text

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    def _rlm(self, request: dict) -> str:
        prompt = self._check_prompt(request.get("prompt"))
        context = request.get("context")
        if context is not None and not isinstance(context, str):
            raise BridgeRefusal("rlm_query's context must be text (or JSON-serialisable)")
        if self.child is None:  # at max_depth: a plain sub-call instead
            text = prompt if context is None else f"{prompt}\n\nContext:\n{context}"
            return self._one({"prompt": text})
        self._reserve(1)
        started = time.perf_counter()
        try:
            answer, usage = self.child(prompt, context)
        except RLMError as exc:
            self._record("rlm_query", prompt, None, None, started, exc.message)
            raise BridgeRefusal(f"the child RLM failed: {exc.message}") from exc
        with self._lock:
            for model, used in usage.items():
                self.usage[model].add(used)
        self._record("rlm_query", prompt, answer, None, started, None)
        return answer
