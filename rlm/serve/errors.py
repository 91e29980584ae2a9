"""OpenAI-style error objects, and which HTTP status each ``RLMError`` is.

No traceback and no exception text from a library outside rlm ever reaches a client: an error
rlm did not raise on purpose is "internal error" (its traceback goes to the server's log)."""

from __future__ import annotations

from dataclasses import dataclass

from rlm.errors import (
    ContextError,
    EmbeddedServerDied,
    Interrupted,
    LLMError,
    ModelAuthError,
    ModelNotFound,
    ModelUnreachable,
    RLMError,
    SandboxError,
    SandboxTimeout,
    UsageError,
)

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable",
          504: "timeout"}


@dataclass
class APIError(Exception):
    """An error to answer with: status, message (safe to show), code, extra headers."""

    status: int
    message: str
    code: str | None = None
    headers: dict[str, str] | None = None
    param: str | None = None

    def body(self) -> dict[str, object]:
        etype = _TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": etype, "param": self.param, "code": self.code}}


def from_rlm_error(exc: RLMError) -> APIError:
    """The HTTP answer for an rlm error (its message and hint are written for users)."""
    text = str(exc)
    if isinstance(exc, ContextError):
        return APIError(400, text, "invalid_context")
    if isinstance(exc, UsageError):
        return APIError(400, text, "invalid_request")
    if isinstance(exc, ModelNotFound):
        return APIError(404, text, "model_not_found")
    if isinstance(exc, (ModelUnreachable, EmbeddedServerDied)):
        return APIError(503, text, "model_server_unavailable")
    if isinstance(exc, ModelAuthError):
        return APIError(503, "the model server refused rlm's credentials", "model_server_auth")
    if isinstance(exc, SandboxTimeout):
        return APIError(504, text, "timeout")
    if isinstance(exc, LLMError):
        if "timed out" in text or "timeout" in text.lower():
            return APIError(504, text, "model_timeout")
        return APIError(502, text, "model_error")
    if isinstance(exc, Interrupted):
        return APIError(503, "the run was cancelled (the server is shutting down)", "cancelled")
    if isinstance(exc, SandboxError):
        return APIError(503, text, "sandbox_unavailable")
    return APIError(500, text, "rlm_error")


def internal() -> APIError:
    return APIError(500, "internal error (see the server's log)", "internal_error")
