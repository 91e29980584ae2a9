"""Serving llm_query / llm_query_batched / rlm_query for one run, within its budgets.

This is the handler a session's bridge calls (on a worker thread) for each request from
the REPL.  Refusals (disabled, over budget, too long) raise ``BridgeRefusal``: the REPL
turns them into a ``SubCallError`` the model can read; the host never crashes.

Every model request runs as a task on the handler's one event loop, so that ``cancel()``
(the cell was interrupted or abandoned) and ``close()`` (the run is over) can stop the
requests still in flight: cancelling a task closes its HTTP request.  A cancelled call is
not counted (its budget is given back, no usage, no ``on_call`` event), and neither is a
call that finishes after its cell was abandoned.

Bounds (everything from the sandbox is hostile):

* every model request has a deadline (``deadline_s``: the run's ``sub_call_timeout_s``, by
  default the cell's timeout): past it the request is cancelled (its connection closed) and
  the REPL is told the sub-call timed out; ``deadline_for`` tells the bridge the same, so that
  the bridge answers on time even if this handler cannot;
* ``model=`` may name only the run's models (root, sub and ``allowed_models``), each at most
  ``MAX_MODEL_NAME`` characters; a refusal quotes a short, sanitised prefix of the name only;
* at most ``max_children`` ``rlm_query`` child runs (each with its own container) at once; a
  further call waits for a free slot up to the deadline, then is refused;
* errors shown to the model name no host URL, address or model list (``redact``);
* a prompt that cannot fit its model's context window (``WindowGuard``) is never sent: ``llm_query``
  is refused with the prompt's size and the window, a slot of ``llm_query_batched`` holds the same
  as an ``Error:`` string; the ``window`` op tells the REPL the sub-model's window (``map_chunks``
  sizes its pieces by it).

The memo: an identical sub-call (model, prompt, temperature) within a run is answered from memory,
not sent again and not counted against ``max_sub_calls``; it is counted as ``memoised`` in the
usage and marked so in its ``on_call`` event (identical prompts within one batch are sent once).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import math
import re
import threading
import time
from collections import defaultdict
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, Callable, TypeVar

from rlm.errors import LLMError, ModelAuthError, ModelNotFound, ModelUnreachable, RLMError
from rlm.llm.base import Completion, ModelClient, Usage
from rlm.llm.window import PROBE_TIMEOUT_S, WindowGuard
from rlm.sandbox.bridge import BridgeRefusal, redact
from rlm.sandbox.protocol import Op

_T = TypeVar("_T")
CLOSE_GRACE_S = 2.0  # at close, how long cancelled requests get to unwind before the loop stops
MAX_MODEL_NAME = 200  # characters of a model name llm_query(model=...) may send
NAME_SHOWN = 40       # characters of a refused model name quoted back
BRIDGE_GRACE_S = 2.0  # the bridge answers a request this long after its deadline if the handler has not
MAX_CHILDREN = 2      # rlm_query child runs at once per run (each starts a container)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._:/@+-]")


def shown_name(name: str) -> str:
    """A short, printable prefix of a model name from the sandbox, safe to quote back."""
    head = _SAFE_NAME.sub("?", name[:NAME_SHOWN])
    return head + (f"... ({len(name)} characters)" if len(name) > NAME_SHOWN else "")


def model_facing(exc: LLMError) -> str:
    """What the model is told about a failed model request: no host URL, address or model list."""
    if isinstance(exc, ModelNotFound):
        return "the model server does not offer that model"
    if isinstance(exc, ModelAuthError):
        return "the model server refused the credentials"
    if isinstance(exc, ModelUnreachable):
        return "the model server could not be reached"
    return redact(exc.message)


class SubCallTimeout(Exception):
    """A model request passed its deadline and was cancelled."""


class _Abandoned(Exception):
    """The call's cell was abandoned (or the run ended) before it finished."""

ChildRunner = Callable[[str, "str | None"], tuple[str, dict[str, Usage]]]
"""Runs a child RLM on (prompt, context text); returns its answer and its token usage per model."""


class SubCallHandler:
    def __init__(self, client: ModelClient, *, sub_model: str, temperature: float, enabled: bool,
                 max_calls: int, max_chars: int, concurrency: int, child: ChildRunner | None = None,
                 on_call: Callable[[dict], None] | None = None, deadline_s: float | None = None,
                 root_model: str | None = None, allowed_models: Iterable[str] = (),
                 max_children: int = MAX_CHILDREN, windows: WindowGuard | Mapping[str, int] | None = None,
                 memo: bool = False) -> None:
        self.client = client
        # None: prompts are not checked against a window; a mapping: the configured windows (model_windows)
        self.windows = WindowGuard(client, windows) if isinstance(windows, Mapping) else windows
        self.memo = memo
        self._memo: dict[str, str] = {}  # key of (model, prompt, temperature) -> answer
        self.memoised = 0
        self.sub_model = sub_model
        self.deadline_s = deadline_s if deadline_s and deadline_s > 0 else None
        self.allowed_models = frozenset(m for m in (sub_model, root_model, *allowed_models) if m)
        self.max_children = max(1, max_children)
        self._children = threading.BoundedSemaphore(self.max_children)
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
        self._loop: asyncio.AbstractEventLoop | None = None  # one loop for every request of this run
        self._loop_thread: threading.Thread | None = None
        self._epoch = 0  # bumped by cancel(): calls begun before it are abandoned
        self._closed = False
        self._futures: set[concurrent.futures.Future[Any]] = set()

    @property
    def in_flight(self) -> int:
        """Model requests still running."""
        with self._lock:
            return len(self._futures)

    def cancel(self) -> None:
        """Cancel every request in flight (its cell was interrupted or abandoned); none is counted."""
        with self._lock:
            self._epoch += 1
            futures = list(self._futures)
        for future in futures:
            future.cancel()  # cancels the task on the loop, which closes its HTTP request

    def close(self) -> None:
        """Cancel what is still in flight, stop the loop, release its connections (idempotent)."""
        with self._lock:
            self._closed = True
        self.cancel()
        with self._lock:
            loop, thread, self._loop, self._loop_thread = self._loop, self._loop_thread, None, None
        if loop is None or thread is None:
            return

        async def unwind() -> None:  # let the cancelled tasks close their connections, then release
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if tasks:
                await asyncio.wait(tasks, timeout=CLOSE_GRACE_S)
            await self.client.arelease()

        try:
            asyncio.run_coroutine_threadsafe(unwind(), loop).result(timeout=CLOSE_GRACE_S + 3)
        except Exception:  # noqa: BLE001 - best effort while shutting down
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()

    def _start(self, coro: Coroutine[Any, Any, _T]) -> tuple[concurrent.futures.Future[_T], int]:
        with self._lock:
            if self._closed:
                coro.close()
                raise BridgeRefusal("the run is over; no more sub-calls")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(target=self._loop.run_forever, name="rlm-subcalls",
                                                     daemon=True)
                self._loop_thread.start()
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            self._futures.add(future)
            return future, self._epoch

    def _run_async(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the loop and wait for it; ``_Abandoned`` if it was cancelled meanwhile."""
        future, epoch = self._start(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise _Abandoned() from None
        finally:
            with self._lock:
                self._futures.discard(future)
                if self._epoch != epoch:
                    future.cancel()

    def _current(self, epoch: int) -> bool:
        with self._lock:
            return self._epoch == epoch

    def _refund(self, n: int) -> None:
        with self._lock:
            self.calls -= n

    # -- budget --------------------------------------------------------------------------
    def _check_enabled(self) -> None:
        if not self.enabled:
            raise BridgeRefusal("sub-calls are disabled for this run (ENABLE_SUB_CALLS=false); "
                                "work with `context` directly in code")

    def _reserve(self, n: int) -> None:
        self._check_enabled()
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

    # -- window and memo ---------------------------------------------------------------
    def _too_big(self, model: str, prompt: str) -> str | None:
        """Why ``prompt`` is not sent to ``model`` (it cannot fit its window), traced; None when it fits."""
        if self.windows is None:
            return None
        why = self.windows.refusal(model, prompt)
        if why is not None:
            self.on_call({"model": model, "prompt_chars": len(prompt), "reply_chars": 0, "latency_s": 0.0,
                          "ok": False, "error": why, "refused": "window"})
        return why

    def _key(self, model: str, prompt: str) -> str:
        return hashlib.sha256(json.dumps([model, self.temperature, prompt]).encode("utf-8", "surrogatepass")
                              ).hexdigest()

    def _recall(self, model: str, prompt: str) -> str | None:
        """The answer an identical earlier sub-call got (counted as memoised), or None."""
        if not self.memo:
            return None
        with self._lock:
            text = self._memo.get(self._key(model, prompt))
        if text is not None:
            self._memo_hit(model, prompt, text)
        return text

    def _memo_hit(self, model: str, prompt: str, text: str) -> None:
        with self._lock:
            self.memoised += 1
            self.usage[model].memoised += 1
        self.on_call({"model": model, "prompt_chars": len(prompt), "reply_chars": len(text), "latency_s": 0.0,
                      "ok": True, "error": None, "memoised": True})

    def _remember(self, model: str, prompt: str, text: str) -> None:
        if self.memo:
            with self._lock:
                self._memo[self._key(model, prompt)] = text

    def _window(self, request: dict) -> dict:
        """The sub-model's window, for the REPL (``map_chunks``)."""
        model = self._model(request)
        if self.windows is None:
            raise BridgeRefusal("the sub-model's window is not known in this session")
        return {"model": model, **self.windows.window(model).to_dict()}

    def _model(self, request: dict) -> str:
        model = request.get("model")
        if model is None or model == "":
            return self.sub_model
        if not isinstance(model, str):
            raise BridgeRefusal(f"model must be a string naming a model, not {type(model).__name__}")
        if len(model) > MAX_MODEL_NAME:
            raise BridgeRefusal(f"model name {shown_name(model)!r} is too long (at most {MAX_MODEL_NAME} "
                                "characters); leave model out to use the sub-model")
        if model not in self.allowed_models:
            allowed = ", ".join(repr(m) for m in sorted(self.allowed_models))
            raise BridgeRefusal(f"model {shown_name(model)!r} is not one this run may use ({allowed}); "
                                "leave model out to use the sub-model")
        return model

    def deadline_for(self, request: dict) -> float | None:
        """Seconds after which the bridge answers ``request`` with a time-out, whatever happens here
        (a little later than this handler's own deadline, so the handler's answer normally wins)."""
        if self.deadline_s is None:
            return None
        op = request.get("op")
        if op == Op.LLM_QUERY:
            rounds = 1
        elif op == Op.LLM_QUERY_BATCHED:
            prompts = request.get("prompts")
            rounds = math.ceil(len(prompts) / self.concurrency) if isinstance(prompts, list) and prompts else 1
        elif op == Op.RLM_QUERY and self.child is None:
            rounds = 1
        elif op == Op.WINDOW:
            return 2 * PROBE_TIMEOUT_S + BRIDGE_GRACE_S
        else:  # a child run: bounded by its own budgets (iterations, cell and sub-call deadlines)
            return None
        return rounds * self.deadline_s + BRIDGE_GRACE_S

    async def _bounded(self, messages: list[dict], model: str) -> Completion:
        """One model request, cancelled at the deadline (``SubCallTimeout``)."""
        request = self.client.acomplete(messages, model=model, temperature=self.temperature)
        if self.deadline_s is None:
            return await request
        try:
            return await asyncio.wait_for(request, self.deadline_s)
        except asyncio.TimeoutError:
            raise SubCallTimeout() from None

    def _timed_out(self) -> str:
        return (f"the sub-call timed out after {self.deadline_s:g} s and was cancelled (the model server did "
                "not answer in time; sub_call_timeout_s)")

    def _record(self, model: str, prompt: str, text: str | None, usage: Usage | None, started: float,
                error: str | None, epoch: int | None = None) -> bool:
        """Count a finished call; False (and nothing counted) when its cell was abandoned meanwhile."""
        with self._lock:
            if epoch is not None and epoch != self._epoch:
                self.calls -= 1
                return False
            if usage is not None:
                self.usage[model].add(usage)
        self.on_call({"model": model, "prompt_chars": len(prompt), "reply_chars": len(text or ""),
                      "latency_s": round(time.perf_counter() - started, 4), "ok": error is None, "error": error})
        return True

    # -- the bridge handler --------------------------------------------------------------
    def __call__(self, request: dict) -> dict:
        op = request.get("op")
        try:
            if op == Op.LLM_QUERY:
                return {"text": self._one(request)}
            if op == Op.LLM_QUERY_BATCHED:
                return {"texts": self._batch(request)}
            if op == Op.RLM_QUERY:
                return {"text": self._rlm(request)}
            if op == Op.WINDOW:
                return self._window(request)
        except _Abandoned:
            raise BridgeRefusal("the sub-call was cancelled: its cell was interrupted or the run ended") from None
        raise BridgeRefusal(f"unknown operation {op!r}")

    def _messages(self, prompt: str) -> list[dict]:
        return [{"role": "user", "content": prompt}]

    def _one(self, request: dict) -> str:
        prompt = self._check_prompt(request.get("prompt"))
        model = self._model(request)
        self._check_enabled()
        known = self._recall(model, prompt)
        if known is not None:
            return known
        why = self._too_big(model, prompt)
        if why is not None:
            raise BridgeRefusal(why)
        self._reserve(1)
        with self._lock:
            epoch = self._epoch
        started = time.perf_counter()
        try:
            completion = self._run_async(self._complete_one(prompt, model))
        except _Abandoned:
            self._refund(1)
            raise
        except SubCallTimeout:
            if not self._record(model, prompt, None, None, started, self._timed_out(), epoch):
                raise _Abandoned() from None
            raise BridgeRefusal(self._timed_out()) from None
        except LLMError as exc:
            if not self._record(model, prompt, None, None, started, exc.message, epoch):
                raise _Abandoned() from None
            raise BridgeRefusal(f"the sub-model failed: {model_facing(exc)}") from exc
        if not self._record(model, prompt, completion.text, completion.usage, started, None, epoch):
            raise _Abandoned()
        self._remember(model, prompt, completion.text)
        return completion.text

    async def _complete_one(self, prompt: str, model: str) -> Completion:
        return await self._bounded(self._messages(prompt), model)

    def _batch(self, request: dict) -> list[str]:
        prompts = request.get("prompts")
        if not isinstance(prompts, list):
            raise BridgeRefusal("llm_query_batched needs a list of prompts")
        prompts = [self._check_prompt(p) for p in prompts]
        model = self._model(request)
        self._check_enabled()
        texts: list[str | None] = [None] * len(prompts)
        slots: dict[object, list[int]] = {}  # a prompt to send -> the slots that take its answer
        for i, prompt in enumerate(prompts):
            key: object = self._key(model, prompt) if self.memo else i
            if key in slots:  # the same prompt earlier in this batch: sent once
                slots[key].append(i)
                continue
            texts[i] = self._recall(model, prompt)
            if texts[i] is None:
                why = self._too_big(model, prompt)
                if why is None:
                    slots[key] = [i]
                else:
                    texts[i] = f"Error: {why}"
        sent = [group[0] for group in slots.values()]
        self._reserve(len(sent))
        with self._lock:
            epoch = self._epoch
        done = [False] * len(sent)
        try:
            answers = self._run_async(self._gather([prompts[i] for i in sent], model, epoch, done))
        except _Abandoned:
            self._refund(done.count(False))  # the finished ones gave theirs back already
            raise
        for group, (text, ok) in zip(slots.values(), answers, strict=True):
            for n, i in enumerate(group):
                texts[i] = text
                if n and ok:
                    self._memo_hit(model, prompts[i], text)
        return [t if t is not None else "Error: no answer" for t in texts]

    async def _gather(self, prompts: list[str], model: str, epoch: int,
                      done: list[bool]) -> list[tuple[str, bool]]:
        """Each prompt's answer (or ``Error:`` string) and whether it was answered."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(i: int, prompt: str) -> tuple[str, bool]:
            async with gate:
                started = time.perf_counter()
                try:
                    completion = await self._bounded(self._messages(prompt), model)
                except SubCallTimeout:
                    done[i] = self._record(model, prompt, None, None, started, self._timed_out(), epoch) or True
                    return f"Error: {self._timed_out()}", False
                except LLMError as exc:
                    done[i] = self._record(model, prompt, None, None, started, exc.message, epoch) or True
                    return f"Error: {model_facing(exc)}", False
                done[i] = self._record(model, prompt, completion.text, completion.usage, started, None, epoch) or True
                self._remember(model, prompt, completion.text)
                return completion.text, True

        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    def _rlm(self, request: dict) -> str:
        prompt = self._check_prompt(request.get("prompt"))
        context = request.get("context")
        if context is not None and not isinstance(context, str):
            raise BridgeRefusal("rlm_query's context must be text (or JSON-serialisable)")
        if self.child is None:  # at max_depth: a plain sub-call instead
            text = prompt if context is None else f"{prompt}\n\nContext:\n{context}"
            return self._one({"prompt": text})
        with self._lock:
            epoch = self._epoch
        waited = time.monotonic()
        if not self._children.acquire(timeout=self.deadline_s):
            raise BridgeRefusal(f"rlm_query: {self.max_children} child runs are already running (at most "
                                f"{self.max_children} at once); waited {time.monotonic() - waited:.0f} s for one "
                                "to finish; try again later, or use llm_query")
        try:
            if not self._current(epoch) or self._closed:  # the cell was abandoned while this call waited
                raise _Abandoned()
            self._reserve(1)
            started = time.perf_counter()
            try:
                answer, usage = self.child(prompt, context)
            except RLMError as exc:
                self._record(Op.RLM_QUERY, prompt, None, None, started, exc.message)
                raise BridgeRefusal(f"the child RLM failed: {redact(exc.message)}") from exc
        finally:
            self._children.release()
        with self._lock:
            for model, used in usage.items():
                self.usage[model].add(used)
        self._record(Op.RLM_QUERY, prompt, answer, None, started, None)
        return answer
