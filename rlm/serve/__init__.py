"""rlm as a service: an OpenAI-compatible HTTP endpoint (``rlm serve``) and an MCP server (``rlm mcp``).

Thin adapters over the public API (``rlm.RLM``), like the CLI.  This package owns what a service
needs and the library must not do: signals, authentication, a bounded queue of runs over a warm
pool of sandboxes, and the translation of ``RLMError`` into OpenAI-style error objects.

    from rlm.serve import ServeOptions, Service, create_app
"""

from __future__ import annotations

from rlm.serve.service import ServeOptions, Service

__all__ = ["ServeOptions", "Service", "create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from rlm.serve.http import create_app

        return create_app
    raise AttributeError(f"module 'rlm.serve' has no attribute {name!r}")
