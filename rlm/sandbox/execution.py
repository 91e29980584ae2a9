"""What one cell produced, and the streaming cap that keeps output bounded on the host."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlm.sandbox.protocol import State


@dataclass
class Execution:
    stdout: str = ""
    stderr: str = ""
    error: str | None = None        # exception type, message and traceback as text; None when the cell succeeded
    error_name: str | None = None   # e.g. "NameError"
    timed_out: bool = False
    duration_s: float = 0.0
    truncated: bool = False         # some output was dropped by the cap
    restarted: str | None = None    # None | "kernel" | "container": what had to be restarted after this cell
    state_lost: bool = False        # variables defined before this cell are gone
    final: str | None = None        # the answer if the cell called FINAL(...) / FINAL_VAR(...)
    context_restored: bool = False  # the cell rebound `context` and it was restored
    display: list[str] = field(default_factory=list)  # text/plain of results and displays
    notice: str | None = None       # what the sandbox did about this cell (timeout, restart), for the model
    meta: dict = field(default_factory=dict)  # other per-cell state the REPL published

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out

    @property
    def output(self) -> str:
        """Everything the cell showed, in the order a person would read it."""
        parts = [p for p in (self.stdout, "\n".join(self.display), self.stderr) if p]
        if self.error:
            parts.append(self.error)
        if self.notice:
            parts.append(f"[sandbox] {self.notice}")
        return "\n".join(parts)


class OutputCap:
    """Keeps at most ``limit`` bytes of a stream: the head and a rolling tail.

    Memory held is bounded by ``limit`` whatever arrives.  ``text()`` joins head and
    tail with a marker saying how many bytes were dropped.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def add(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        self.total += len(data)
        room = self.head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            if len(data) >= self.tail_limit:
                self._tail = bytearray(data[-self.tail_limit:])
            else:
                self._tail += data
                excess = len(self._tail) - self.tail_limit
                if excess > 0:
                    del self._tail[:excess]

    @property
    def dropped(self) -> int:
        return self.total - len(self._head) - len(self._tail)

    def text(self) -> str:
        head = self._head.decode("utf-8", "replace")
        tail = self._tail.decode("utf-8", "replace")
        if self.dropped:
            return f"{head}\n[... {self.dropped} bytes of output dropped ...]\n{tail}"
        return head + tail


def checked_state(state: dict, final_limit: int) -> tuple[str | None, dict]:
    """The REPL's per-cell state message comes from the sandbox: keep known keys, within bounds."""
    final = state.get(State.FINAL)
    if not isinstance(final, str):
        final = None
    elif len(final) > final_limit + 200:
        final = final[:final_limit] + f"\n[... answer truncated: {len(final) - final_limit} characters dropped ...]"
    meta: dict = {}
    dropped = state.get(State.OUTPUT_DROPPED)
    if isinstance(dropped, int):
        meta[State.OUTPUT_DROPPED] = dropped
    failure = state.get(State.CONTEXT_ERROR)
    if isinstance(failure, str):
        meta[State.CONTEXT_ERROR] = failure[:2000]
    info = state.get(State.CONTEXT_INFO)
    if isinstance(info, dict):
        clean = {k: info[k] for k in ("kind", "total_chars", "n_documents") if isinstance(info.get(k), (str, int))}
        if isinstance(info.get("preview"), str):
            clean["preview"] = info["preview"][:2000]
        if isinstance(clean.get("kind"), str):
            clean["kind"] = clean["kind"][:50]
        if isinstance(info.get("others"), list):  # later contexts: checked item by item in contexts.described
            clean["others"] = info["others"][:100]
        meta[State.CONTEXT_INFO] = clean
    return final, meta
