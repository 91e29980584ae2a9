"""When no model server is configured: the embedded one stands in.

``resolve`` is what the library (``rlm.RLM``) and the CLI call once the input is known to be
good: with no base URL configured anywhere and nothing answering at the default URL, it starts
(or reuses) the embedded server, proves a fresh one with one real completion, and returns the
settings pointed at it with the budgets of a small CPU model, plus the server's record so the
client can be guarded (``rlm.llm.local.guard``).  A configured URL is kept, answering or not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rlm.errors import ModelUnreachable
from rlm.llm.base import ModelSettings
from rlm.llm.local.runtime import installed_runtime
from rlm.llm.local.server import INSTALL_HINT, ServerInfo, probe_url, prove, running_server, start_server
from rlm.llm.local.weights import MODELS, ModelSpec, installed_path

if TYPE_CHECKING:
    from rlm.config import Settings

__all__ = ["Resolved", "adapt_settings", "ensure_server", "fallback_needed", "pick_spec", "resolve"]

# Budgets that suit a small model on a CPU: a sub-call prompt of ~24k characters is ~6k tokens,
# about a minute of prompt processing on 2 cores; cells that make sub-calls need more than 30 s.
EMBEDDED_MAX_SUB_CALL_CHARS = 24_000
EMBEDDED_CELL_TIMEOUT_S = 600.0
EMBEDDED_MAX_OUTPUT_CHARS = 2_500   # ~900 tokens per turn (~30 s of prompt reading on 2 cores); 20 turns fit the window
EMBEDDED_REQUEST_TIMEOUT_S = 900.0

Say = Callable[[str], None]


def _quiet(_text: str) -> None:
    pass


@dataclass(frozen=True)
class Resolved:
    settings: "Settings"
    server: ServerInfo | None = None     # the embedded server in use, if any
    spec: ModelSpec | None = None


def pick_spec(cache: Path | None = None) -> ModelSpec | None:
    """The model to start: the largest one installed (better answers), else None."""
    for size in reversed(list(MODELS)):
        if installed_path(MODELS[size], cache) is not None:
            return MODELS[size]
    return None


def fallback_needed(model: ModelSettings, *, base_url_explicit: bool) -> bool:
    """Whether the embedded server stands in: no base URL configured and nothing answering at the default."""
    return not base_url_explicit and not probe_url(model.base_url)


def ensure_server(spec: ModelSpec, *, cache: Path | None = None, port: int | None = None,
                  say: Say = _quiet) -> tuple[ServerInfo, bool]:
    """Start (or reuse) the server for ``spec``; a freshly started one must answer a real completion."""
    info, reused = start_server(spec, cache=cache, port=port)
    if not reused:
        say(f"embedded server up (CPU backend {info.backend or 'unknown'}); sending a test completion ...")
        prove(info)
    return info, reused


def adapt_settings(settings: "Settings", model: ModelSettings) -> "Settings":
    """``settings`` with ``model`` and the budgets of a small CPU model."""
    run = dataclasses.replace(
        settings.run,
        max_sub_call_chars=min(settings.run.max_sub_call_chars, EMBEDDED_MAX_SUB_CALL_CHARS),
        max_output_chars=min(settings.run.max_output_chars, EMBEDDED_MAX_OUTPUT_CHARS))
    sandbox = dataclasses.replace(settings.sandbox, cell_timeout_s=max(settings.sandbox.cell_timeout_s,
                                                                       EMBEDDED_CELL_TIMEOUT_S))
    return dataclasses.replace(settings, model=model, run=run, sandbox=sandbox)


def for_server(settings: "Settings", info: ServerInfo) -> "Settings":
    """``settings`` pointed at the embedded server ``info``, with a small model's budgets."""
    model = dataclasses.replace(settings.model, base_url=info.base_url, root_model=info.alias, sub_model=info.alias,
                                temperature=0.0, timeout_s=max(settings.model.timeout_s, EMBEDDED_REQUEST_TIMEOUT_S))
    return adapt_settings(settings, model)


def resolve(settings: "Settings", *, base_url_explicit: bool, say: Say = _quiet,
            cache: Path | None = None) -> Resolved:
    """The settings to run with: as configured, or pointed at the embedded server (said with ``say``)."""
    model = settings.model
    if not fallback_needed(model, base_url_explicit=base_url_explicit):
        return Resolved(settings)
    info = running_server(cache)
    reused = info is not None
    if info is None:
        spec = pick_spec(cache)
        if spec is None or installed_runtime(cache) is None:
            what = ("llama.cpp's server is not built" if installed_runtime(cache) is None
                    else "the embedded model is not installed")
            raise ModelUnreachable(f"no model server answers at {model.base_url}, and {what}", hint=INSTALL_HINT)
        say(f"no model server at {model.base_url}: starting the embedded {spec.alias} (llama.cpp, CPU) ...")
        info, reused = ensure_server(spec, cache=cache, say=say)
    say(f"using the embedded model {info.alias} at {info.base_url}"
        f"{' (already running)' if reused else ''}; stop it with: rlm model stop")
    return Resolved(for_server(settings, info), server=info, spec=MODELS.get(info.size))
