"""The one exception tree of rlm.

Infrastructure failures raise one of these; errors in model-written code are data
(``Execution.error``) and never raise.  Every message says what went wrong and, where
there is one, what to do next (``hint``).  Adapters (Docker, jupyter_client, openai,
YAML) translate their own exceptions into these with ``raise ... from``.
"""

from __future__ import annotations


class RLMError(Exception):
    """Root of every error rlm raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(RLMError):
    """The user asked for something that cannot work (bad flag, bad file, bad input)."""


class ConfigError(UsageError):
    """Settings could not be read or are invalid."""


class ContextError(UsageError):
    """The context given to a run is missing, unreadable, binary, empty or too large."""


class SandboxError(RLMError):
    """The sandbox (Docker engine, image, container, kernel) failed."""


class EngineUnavailable(SandboxError):
    """No Docker engine answers."""


class ImageMissing(SandboxError):
    """The sandbox image is not built (or is stale and may not be rebuilt)."""


class ImageBuildError(SandboxError):
    """The sandbox image (or its base, or its wheels) could not be built."""


class SandboxTimeout(SandboxError):
    """A sandbox operation (start-up, restart) did not finish in time."""


class SessionClosed(SandboxError):
    """The session was used after close()."""


class BridgeError(SandboxError):
    """The llm_query bridge failed on the host side."""


class LLMError(RLMError):
    """A model server failed or refused."""


class ModelUnreachable(LLMError):
    """The model server does not answer at its URL."""


class ModelNotFound(LLMError):
    """The server answers but does not offer the requested model."""


class ModelAuthError(LLMError):
    """The server refused the credentials."""


class EmptyReply(LLMError):
    """The model returned no content, even after a retry."""


class TruncatedReply(LLMError):
    """The model server answered, but its reply body was cut off before its end."""


class Interrupted(RLMError):
    """The user interrupted the run (Ctrl-C, SIGTERM)."""


class EmbeddedServerDied(LLMError):
    """The embedded model server that rlm started is gone (killed by a signal, or exited)."""
