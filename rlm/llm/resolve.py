"""Which model server a run uses, and the client for it.

The configured server (a base URL from flags/kwargs, the environment, ``.env`` or YAML), else
Ollama at the default URL if it answers, else the embedded llama.cpp server (started or reused,
and watched by a guard).  ``open_models`` is what both the library and the CLI call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rlm.errors import ModelNotFound, RLMError
from rlm.llm.base import ModelClient

if TYPE_CHECKING:
    from rlm.config import Settings

__all__ = ["check_models", "embedded_model_needed", "make_client", "open_models", "slow_client"]


def make_client(settings: "Settings") -> ModelClient:
    from rlm.llm.openai_client import OpenAICompatibleClient

    return OpenAICompatibleClient(settings.model)


def slow_client(client: ModelClient, settings: "Settings", wait_s: float) -> ModelClient:
    """A second client to ``client``'s server whose requests may each take ``wait_s`` seconds (a
    whole window read by a small CPU), watched by the same guard when ``client`` talks to the
    embedded server (:func:`open_models`).  Close it when done."""
    from dataclasses import replace

    from rlm.llm.local.guard import GuardedClient

    wait = max(wait_s, settings.model.timeout_s)
    slow = make_client(replace(settings, model=replace(settings.model, timeout_s=wait, max_wait_s=wait)))
    return GuardedClient(slow, client.guard) if isinstance(client, GuardedClient) else slow


def check_models(client: ModelClient, settings: "Settings") -> None:
    """Fail early and clearly when the server is down or lacks a model (before any sandbox starts)."""
    offered = client.list_models()
    if not offered:
        return  # some servers list nothing; let the first call speak
    for name in dict.fromkeys([settings.model.root_model, settings.model.effective_sub_model]):
        if name not in offered and f"{name}:latest" not in offered:
            raise ModelNotFound(f"the server at {settings.model.base_url} does not offer the model '{name}'",
                                hint="models it offers: " + ", ".join(sorted(offered)[:20]))


def open_models(settings: "Settings", *, base_url_explicit: bool, say: Callable[[str], None],
                cache: Path | None = None) -> tuple["Settings", ModelClient]:
    """The settings to run with and a checked client for them (close it when done)."""
    from rlm.llm.local.fallback import resolve
    from rlm.llm.local.guard import EmbeddedGuard, GuardedClient

    resolved = resolve(settings, base_url_explicit=base_url_explicit, say=say, cache=cache)
    client = make_client(resolved.settings)
    if resolved.server is not None:
        client = GuardedClient(client, EmbeddedGuard(resolved.server, resolved.spec, cache=cache, say=say))
    try:
        check_models(client, resolved.settings)
    except BaseException:
        client.close()
        raise
    return resolved.settings, client


def embedded_model_needed(argv: list[str]) -> bool:
    """Whether ``rlm <argv>`` would fall back to the embedded model: no ``--base-url`` among the
    arguments, no base URL in the environment, ``.env`` or the YAML file (``--config`` honoured),
    and nothing answering at the default URL.  For the set-up scripts, before anything is installed;
    settings that do not load count as "not needed" (the command itself then reports them)."""
    from rlm.config import load_settings
    from rlm.llm.local.fallback import fallback_needed

    config = None
    for i, arg in enumerate(argv):
        if arg == "--base-url" or arg.startswith("--base-url="):
            return False
        if arg == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
    try:
        loaded = load_settings(config_file=config)
    except RLMError:
        return False
    return fallback_needed(loaded.settings.model, base_url_explicit=loaded.base_url_configured)
