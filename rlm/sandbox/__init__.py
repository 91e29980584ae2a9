"""Sandboxed REPL sessions: one hardened container with a Jupyter kernel per session."""

from rlm.sandbox.execution import Execution
from rlm.sandbox.session import SandboxSession
from rlm.sandbox.settings import SandboxSettings

__all__ = ["Execution", "SandboxSession", "SandboxSettings"]
