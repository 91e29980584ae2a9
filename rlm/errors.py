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
    """Settings (or a spec) could not be read or are invalid; ``problems`` lists each problem.

    ``ConfigError(problems=[...], one="invalid configuration", many="{n} configuration problems")``
    builds the message from the list: the first ``MAX_LISTED`` problems, each cut to ``MAX_PROBLEM_CHARS``,
    then "... and N more problems".  Code reads ``problems``, never the message text.
    """

    MAX_LISTED = 20
    MAX_PROBLEM_CHARS = 500

    def __init__(self, message: str | None = None, *, hint: str | None = None, problems: list[str] | None = None,
                 one: str = "invalid configuration", many: str = "{n} configuration problems") -> None:
        self.problems = [str(p) for p in problems] if problems else ([message] if message else [])
        if message is None:
            message = self.listing(self.problems, one=one, many=many)
        super().__init__(message, hint=hint)

    @classmethod
    def listing(cls, problems: list[str], *, one: str, many: str) -> str:
        """``one: problem`` or ``many:`` and a capped list, one problem a line."""
        def cut(text: str) -> str:
            text = " ".join(text.split("\n"))
            return text if len(text) <= cls.MAX_PROBLEM_CHARS else text[:cls.MAX_PROBLEM_CHARS] + " ..."

        if len(problems) == 1:
            return f"{one}: {cut(problems[0])}"
        shown = [f"  - {cut(p)}" for p in problems[:cls.MAX_LISTED]]
        rest = len(problems) - len(shown)
        if rest:
            shown.append(f"  ... and {rest} more problem{'s' if rest != 1 else ''}")
        return f"{many.format(n=len(problems))}:\n" + "\n".join(shown)


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
