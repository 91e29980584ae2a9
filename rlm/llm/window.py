"""Each model's context window, and whether a prompt fits in it.

Where a window comes from, first found wins:

1. the setting ``model_windows: {name: tokens}`` (the user's word);
2. the model's server: llama.cpp's ``GET /props`` or Ollama's ``POST /api/show``
   (``ModelClient.context_window``), asked once per run and model;
3. ``DEFAULT_WINDOW_TOKENS`` (8,192 tokens).

A prompt's size is counted by the server's tokenizer where it has one (``POST /tokenize``),
else estimated conservatively: ``CHARS_PER_TOKEN`` (3) ASCII characters per token, and every
other character a token of its own.  The estimate is taken first: a prompt it says fits is not
sent to the tokenizer.  A prompt fits when its tokens, plus ``TEMPLATE_TOKENS`` for the chat
template and a reserve for the answer (``COMPLETION_RESERVE_TOKENS``, at most a quarter of the
window), are within the window.  Nothing here raises: a failed probe means the next source.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from rlm.llm.base import ModelClient

DEFAULT_WINDOW_TOKENS = 8192     # a model whose window neither the settings nor its server tell
CHARS_PER_TOKEN = 3.0            # ASCII characters per token when estimating (most tokenizers give 3.5-4.5)
COMPLETION_RESERVE_TOKENS = 1024  # kept free for the answer (at most a quarter of the window)
TEMPLATE_TOKENS = 64             # the chat template around a prompt
CHUNK_FILL = 0.5                 # map_chunks pieces fill this share of what the window leaves for text
MIN_CHUNK_CHARS = 500
PROBE_TIMEOUT_S = 5.0            # a server's window or tokenizer endpoint is asked with this timeout, once


def estimate_tokens(text: str) -> int:
    """A conservative token count: ``CHARS_PER_TOKEN`` ASCII characters a token, any other character one."""
    ascii_chars = len(text) if text.isascii() else len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / CHARS_PER_TOKEN) + (len(text) - ascii_chars)


@dataclass(frozen=True)
class Window:
    tokens: int
    source: str  # "setting model_windows", "server", "default"

    @property
    def reserve(self) -> int:
        """Tokens kept for the answer."""
        return min(COMPLETION_RESERVE_TOKENS, self.tokens // 4)

    @property
    def for_prompt(self) -> int:
        """Tokens a prompt may have."""
        return max(0, self.tokens - self.reserve - TEMPLATE_TOKENS)

    def to_dict(self) -> dict[str, object]:
        return {"tokens": self.tokens, "source": self.source, "prompt_tokens": self.for_prompt,
                "chunk_chars": self.chunk_chars()}

    def chunk_chars(self, overhead_chars: int = 0) -> int:
        """Characters of text per ``map_chunks`` piece: ``CHUNK_FILL`` of what the window leaves for a
        prompt, at the estimate's rate, less the instruction's own characters."""
        chars = int(self.for_prompt * CHUNK_FILL * CHARS_PER_TOKEN) - overhead_chars
        return max(MIN_CHUNK_CHARS, chars)


class WindowGuard:
    """The windows of one run's models (each found once) and the check of a prompt against them."""

    def __init__(self, client: ModelClient, configured: Mapping[str, int] | None = None,
                 default: int = DEFAULT_WINDOW_TOKENS) -> None:
        self.client = client
        self.configured = dict(configured or {})
        self.default = default
        self._windows: dict[str, Window] = {}
        self._lock = threading.Lock()
        self._probing: dict[str, threading.Lock] = {}

    def window(self, model: str) -> Window:
        with self._lock:
            known = self._windows.get(model)
            if known is not None:
                return known
            gate = self._probing.setdefault(model, threading.Lock())
        with gate:  # one probe per model, however many threads ask at once
            with self._lock:
                known = self._windows.get(model)
            if known is not None:
                return known
            found = self._find(model)
            with self._lock:
                self._windows[model] = found
            return found

    def _find(self, model: str) -> Window:
        if model in self.configured:
            return Window(self.configured[model], "setting model_windows")
        try:
            tokens = self.client.context_window(model)
        except Exception:  # noqa: BLE001 - a failed probe never fails a run
            tokens = None
        if isinstance(tokens, int) and tokens > 0:
            return Window(tokens, "server")
        return Window(self.default, "default")

    def count(self, model: str, prompt: str, limit: int) -> tuple[int, bool]:
        """Tokens of ``prompt`` and whether the server's tokenizer counted them (only asked when
        the estimate exceeds ``limit``)."""
        estimate = estimate_tokens(prompt)
        if estimate <= limit:
            return estimate, False
        try:
            exact = self.client.count_tokens(model, prompt)
        except Exception:  # noqa: BLE001 - the estimate then stands
            exact = None
        if isinstance(exact, int) and exact >= 0:
            return exact, True
        return estimate, False

    def refusal(self, model: str, prompt: str) -> str | None:
        """None when ``prompt`` fits ``model``'s window; else what the model's code is told."""
        window = self.window(model)
        tokens, counted = self.count(model, prompt, window.for_prompt)
        if tokens <= window.for_prompt:
            return None
        how = "counted by the server's tokenizer" if counted else \
            f"estimated at {CHARS_PER_TOKEN:g} characters a token"
        return (f"the prompt does not fit the sub-model's context window: {len(prompt):,} characters, about "
                f"{tokens:,} tokens ({how}), but the window of {model!r} is {window.tokens:,} tokens "
                f"({window.source}), of which {window.reserve + TEMPLATE_TOKENS:,} are kept for the answer, so "
                f"at most {window.for_prompt:,} tokens (about {int(window.for_prompt * CHARS_PER_TOKEN):,} "
                "characters) for the prompt. It was not sent. Split the text into smaller pieces and ask about "
                "each, or use map_chunks(instruction, text), which cuts pieces that fit")
