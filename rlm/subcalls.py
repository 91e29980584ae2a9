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

ChildRunner = Callable[[str, "str | None"], str]
"""Runs a child RLM on (prompt, context text) and returns its answer."""


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
        return asyncio.run(self._gather(prompts, model))

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
            answer = self.child(prompt, context)
        except RLMError as exc:
            self._record("rlm_query", prompt, None, None, started, exc.message)
            raise BridgeRefusal(f"the child RLM failed: {exc.message}") from exc
        self._record("rlm_query", prompt, answer, None, started, None)
        return answer
