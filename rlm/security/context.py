"""What a verify function works with: the check handler, :class:`CheckContext`, the cell prelude.

A leaf of :mod:`rlm.security`: :mod:`~rlm.security.model` (the ``Verify`` type),
:mod:`~rlm.security.verify` and :mod:`~rlm.security.runner` import it; it imports none of them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

from rlm.core.parsing import sanitize_for_terminal
from rlm.sandbox.bridge import BridgeRefusal
from rlm.sandbox.execution import Execution
from rlm.sandbox.session import SandboxSession
from rlm.security.canaries import Canaries

MARK = "@@RLM-CHECK@@"


# =========================================================================== sub-call handler
class CheckHandler:
    """Serves llm_query for the checks: echoes sizes, records prompts, refuses past a budget."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self, budget: int | None = None) -> None:
        with self._lock:
            self.budget = budget
            self.calls = self.served = self.refused = 0
            self.prompts: list[str] = []
            self.largest_prompt = 0

    def __call__(self, request: dict) -> dict:
        op = request.get("op")
        raw = request.get("prompts") if op == "llm_query_batched" else [request.get("prompt")]
        prompts: list[str] = [str(p) for p in (raw or [])]
        with self._lock:
            self.calls += 1
            if self.budget is not None and self.served >= self.budget:
                self.refused += 1
                raise BridgeRefusal(f"sub-call budget of {self.budget} calls is spent")
            self.served += 1
            for p in prompts:
                self.largest_prompt = max(self.largest_prompt, len(p))
                if len(self.prompts) < 100:
                    self.prompts.append(p)
        if op == "llm_query_batched":
            return {"texts": [f"echo:{len(p)}" for p in prompts]}
        return {"text": f"echo:{len(prompts[0]) if prompts else 0}"}


# =========================================================================== runner
@dataclass
class CheckContext:
    """What a verify function may use: the session, the canaries, the handler, notes."""

    session: SandboxSession
    canaries: Canaries
    handler: CheckHandler
    probe: dict
    notes: dict = field(default_factory=dict)

    def run(self, code: str, timeout: float = 15.0) -> Execution:
        """Run one more cell in the attacked session (with the helpers defined)."""
        return self.session.execute(prelude(self.probe) + "\n" + code, timeout=timeout)


_PRELUDE = '''\
import json as _rlm_json, errno as _rlm_errno
PROBE = _rlm_json.loads({probe!r})
def attempt(fn, *args, **kwargs):
    """'ok' when fn(*args, **kwargs) works, else the exception's name (and errno)."""
    try:
        fn(*args, **kwargs)
        return "ok"
    except Exception as exc:
        code = _rlm_errno.errorcode.get(getattr(exc, "errno", None) or 0, "")
        return type(exc).__name__ + (":" + code if code else "")
def report(**fields):
    print({mark!r} + _rlm_json.dumps(fields, default=str), flush=True)
'''


def prelude(probe: dict) -> str:
    return _PRELUDE.format(probe=json.dumps(probe), mark=MARK)


def short(text: str, limit: int = 160) -> str:
    """``text`` on one line, stripped of control characters, at most ``limit`` characters."""
    text = sanitize_for_terminal(str(text)).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
