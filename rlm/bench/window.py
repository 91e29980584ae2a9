"""A fair base: as much of the context as the model's window takes, leaving room for the answer.

The window (tokens) comes from the server where it says (llama.cpp: ``GET /props``,
``default_generation_settings.n_ctx``, the window of one slot), else from ``--base-window-tokens``,
else :data:`DEFAULT_WINDOW_TOKENS`.  Tokens are counted with the server's own tokenizer where it
has one (llama.cpp: ``POST /tokenize``), else estimated at :data:`CHARS_PER_TOKEN` characters per
token, a conservative figure for English prose and code with BPE tokenizers (they average about
4), so that the estimate over-counts and the prompt fits.

:func:`fit` returns the longest prefix of the context, cut at a line break where one is near, such
that the whole prompt (system message, instructions, the cut note, the question) plus
:data:`ANSWER_TOKENS` for the reply plus :data:`TEMPLATE_MARGIN` for the chat template's tokens
fits in the window.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

DEFAULT_WINDOW_TOKENS = 32_768
CHARS_PER_TOKEN = 3.0
ANSWER_TOKENS = 256
TEMPLATE_MARGIN = 64
MAX_CHARS_PER_TOKEN = 12   # no tokenizer packs more characters per token: a longer context is over the window
PROPS_TIMEOUT_S = 5.0
TOKENIZE_TIMEOUT_S = 120.0


def server_root(base_url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port`` (llama.cpp's own endpoints live at the root)."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _request(url: str, payload: dict | None, api_key: str | None, timeout: float) -> Any:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the configured model server
        return json.loads(resp.read(64 * 1024 * 1024))


def server_props(base_url: str, api_key: str | None = None) -> dict | None:
    """llama.cpp's ``/props`` (None when the server has no such endpoint)."""
    try:
        props = _request(server_root(base_url) + "/props", None, api_key, PROPS_TIMEOUT_S)
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return props if isinstance(props, dict) else None


def props_n_ctx(props: dict | None) -> int | None:
    if not props:
        return None
    settings = props.get("default_generation_settings")
    for value in ((settings or {}).get("n_ctx") if isinstance(settings, dict) else None, props.get("n_ctx")):
        if isinstance(value, int) and value > 0:
            return value
    return None


@dataclass
class TokenCounter:
    """Counts tokens with the server's ``/tokenize`` when ``url`` is set, else estimates them."""

    url: str | None = None
    api_key: str | None = None
    chars_per_token: float = CHARS_PER_TOKEN

    @property
    def method(self) -> str:
        return "server /tokenize" if self.url else f"estimate: {self.chars_per_token:g} characters per token"

    def count(self, text: str) -> int:
        if self.url is None:
            return math.ceil(len(text) / self.chars_per_token)
        reply = _request(self.url, {"content": text, "add_special": False}, self.api_key, TOKENIZE_TIMEOUT_S)
        tokens = reply.get("tokens") if isinstance(reply, dict) else None
        if not isinstance(tokens, list):
            raise ValueError(f"the server's /tokenize answered without a token list: {str(reply)[:200]}")
        return len(tokens)


def probe_tokenizer(base_url: str, api_key: str | None = None) -> str | None:
    """The ``/tokenize`` URL when the server answers it with a token list, else None."""
    url = server_root(base_url) + "/tokenize"
    try:
        TokenCounter(url, api_key).count("probe")
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return url


@dataclass
class Window:
    """The base model's window and how its tokens are counted."""

    tokens: int
    source: str                    # "server /props" | "--base-window-tokens" | "default"
    counter: TokenCounter
    answer_tokens: int = ANSWER_TOKENS

    def describe(self) -> dict:
        return {"window_tokens": self.tokens, "window_source": self.source, "token_count": self.counter.method,
                "answer_tokens": self.answer_tokens, "template_margin": TEMPLATE_MARGIN}


def detect(base_url: str, api_key: str | None = None, *, tokens: int | None = None,
           chars_per_token: float = CHARS_PER_TOKEN) -> Window:
    """The window: ``tokens`` when given, else the server's, else the default; the server's tokenizer when it has one."""
    counter = TokenCounter(probe_tokenizer(base_url, api_key), api_key, chars_per_token)
    if tokens is not None:
        return Window(tokens, "--base-window-tokens", counter)
    n_ctx = props_n_ctx(server_props(base_url, api_key))
    if n_ctx is not None:
        return Window(n_ctx, "server /props", counter)
    return Window(DEFAULT_WINDOW_TOKENS, "default", counter)


@dataclass
class Fitted:
    shown: str               # the prefix of the context shown
    prompt: str              # the user message
    prompt_tokens: int       # tokens of system + user message, as counted
    full_prompt_tokens: int | None  # tokens of the prompt with the whole context (None: not counted, far over)


def fit(context: str, render: Callable[[str, int], str], system: str, window: Window) -> Fitted:
    """The longest prefix of ``context`` whose prompt ``render(prefix, cut_chars)`` fits ``window``."""
    budget = window.tokens - window.answer_tokens - TEMPLATE_MARGIN
    counter = window.counter
    fixed = counter.count(system)

    def size(prefix: str) -> int:
        return fixed + counter.count(render(prefix, len(context) - len(prefix)))

    if len(context) > MAX_CHARS_PER_TOKEN * budget:
        # certainly over the window: count from a prefix, not the whole (a 10M-character context)
        total = None
        chars = MAX_CHARS_PER_TOKEN * budget
        tokens = size(context[:chars])
    else:
        total = size(context)
        if total <= budget:
            return Fitted(context, render(context, 0), total, total)
        chars = len(context)
        tokens = total
    for _ in range(12):
        chars = max(0, min(chars - 1, int(chars * budget / max(tokens, 1) * 0.98)))
        cut = context.rfind("\n", 0, chars)
        prefix = context[: cut] if cut > 0.95 * chars else context[:chars]
        tokens = size(prefix)
        if tokens <= budget:
            return _grow(context, prefix, tokens, budget, size, render, total)
        chars = len(prefix)
    return Fitted("", render("", len(context)), size(""), total)


def _grow(context: str, prefix: str, tokens: int, budget: int, size: Callable[[str], int],
          render: Callable[[str, int], str], total: int | None) -> Fitted:
    """Try twice to take more of the context (the first cut aims 2% low), keeping what fits."""
    for _ in range(2):
        more = min(len(context) - 1, int(len(prefix) * budget / max(tokens, 1)))
        cut = context.rfind("\n", 0, more)
        bigger = context[:cut] if cut > 0.98 * more else context[:more]
        if len(bigger) <= len(prefix):
            break
        count = size(bigger)
        if count > budget:
            break
        prefix, tokens = bigger, count
    return Fitted(prefix, render(prefix, len(context) - len(prefix)), tokens, total)
