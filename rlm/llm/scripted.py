"""An in-process scripted model client for unit tests of the loop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Union

from rlm.errors import LLMError
from rlm.llm.base import Completion, Message, ModelClient, Usage

Reply = Union[str, BaseException]
Responder = Callable[[list[Message], str], Union[str, BaseException]]


def _tokens(text: str) -> int:
    return len(text) // 4


class ScriptedClient(ModelClient):
    """Answers from a list of replies (consumed in order) or from a callable.

    A reply that is an exception instance is raised instead of returned.  Every call is
    recorded in ``.calls`` as ``(model, messages)``.  Safe to use from many threads.
    """

    def __init__(self, replies: Sequence[Reply] | Responder, *, models: Sequence[str] = ("scripted",)) -> None:
        self._responder: Responder | None = replies if callable(replies) else None
        self._replies: list[Reply] = [] if callable(replies) else list(replies)
        self._models = list(models)
        self._lock = threading.Lock()
        self.calls: list[tuple[str, list[Message]]] = []
        self.closed = False

    @property
    def remaining(self) -> int:
        """Scripted replies not consumed yet (0 for a callable)."""
        with self._lock:
            return len(self._replies)

    def complete(self, messages: list[Message], *, model: str, temperature: float | None = None,
                 max_tokens: int | None = None) -> Completion:
        snapshot = [dict(m) for m in messages]
        with self._lock:
            self.calls.append((model, snapshot))
            n = len(self.calls)
            if self._responder is None:
                if not self._replies:
                    raise LLMError(f"ScriptedClient ran out of replies at call {n} (model {model!r})",
                                   hint="add more replies to the script")
                reply: Reply | None = self._replies.pop(0)
            else:
                reply = None
        if self._responder is not None:
            reply = self._responder(snapshot, model)  # outside the lock: may be slow or re-entrant
        if isinstance(reply, BaseException):
            raise reply
        if not isinstance(reply, str):
            raise LLMError(f"ScriptedClient reply {n} is {type(reply).__name__}, not str")
        prompt = "".join(str(m.get("content") or "") for m in snapshot)
        usage = Usage(prompt_tokens=_tokens(prompt), completion_tokens=_tokens(reply), calls=1)
        return Completion(text=reply, model=model, usage=usage)

    async def acomplete(self, messages: list[Message], *, model: str, temperature: float | None = None,
                        max_tokens: int | None = None) -> Completion:
        return self.complete(messages, model=model, temperature=temperature, max_tokens=max_tokens)

    def list_models(self) -> list[str]:
        return list(self._models)

    def close(self) -> None:
        self.closed = True
