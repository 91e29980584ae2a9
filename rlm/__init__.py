"""rlm: Recursive Language Models over contexts of any size, with model-written code confined
to hardened Docker sandboxes.

    from pathlib import Path
    from rlm import RLM

    result = RLM(max_iterations=10).run("What does the report conclude?", Path("report.txt"))
    print(result.answer)

Names are imported on first use, so ``import rlm`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rlm")
    except PackageNotFoundError:   # run from a source tree that is not installed
        return "0.2.0"


__version__ = _version()

if TYPE_CHECKING:
    from rlm._api import RLM, ContextLike, IterationEvent, SubCallEvent
    from rlm.config import LoadedSettings, Settings
    from rlm.core.result import RunResult
    from rlm.errors import (
        ConfigError,
        ContextError,
        EmbeddedServerDied,
        LLMError,
        ModelAuthError,
        ModelNotFound,
        ModelUnreachable,
        RLMError,
        SandboxError,
        SandboxTimeout,
        UsageError,
    )
    from rlm.llm.base import Usage

__all__ = [
    "RLM",
    "ConfigError",
    "ContextError",
    "ContextLike",
    "EmbeddedServerDied",
    "IterationEvent",
    "LLMError",
    "LoadedSettings",
    "ModelAuthError",
    "ModelNotFound",
    "ModelUnreachable",
    "RLMError",
    "RunResult",
    "SandboxError",
    "SandboxTimeout",
    "Settings",
    "SubCallEvent",
    "Usage",
    "UsageError",
    "__version__",
]

_WHERE = {
    "RLM": "rlm._api", "ContextLike": "rlm._api", "IterationEvent": "rlm._api", "SubCallEvent": "rlm._api",
    "LoadedSettings": "rlm.config", "Settings": "rlm.config", "RunResult": "rlm.core.result",
    "Usage": "rlm.llm.base",
    **{name: "rlm.errors" for name in ("ConfigError", "ContextError", "EmbeddedServerDied", "LLMError",
                                       "ModelAuthError", "ModelNotFound", "ModelUnreachable", "RLMError",
                                       "SandboxError", "SandboxTimeout", "UsageError")},
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'rlm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
