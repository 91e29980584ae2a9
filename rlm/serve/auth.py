"""Who may call the service: nobody needs a token on a loopback address; any other address needs
a bearer token, without which the server refuses to start.  Tokens are compared in constant time
and never logged, traced or passed to a sandbox (the variable is removed from the environment)."""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from rlm.errors import UsageError

TOKEN_ENV = "RLM_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_token(token_file: Path | None, *, environ: dict[str, str] | None = None) -> str | None:
    """The token from ``token_file`` (first line) or ``RLM_SERVE_TOKEN`` (then removed from the
    environment, so no child process inherits it); None when neither is given."""
    env = os.environ if environ is None else environ
    from_env = env.pop(TOKEN_ENV, None)
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the token file {token_file}: {getattr(exc, 'strerror', None) or exc}",
                             hint="give a readable UTF-8 file whose first line is the token") from exc
        lines = text.splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise UsageError(f"the token file {token_file} is empty", hint="write the token on its first line")
        return token
    if from_env is not None and from_env.strip():
        return from_env.strip()
    return None


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve off loopback without a token."""
    if token is None and not is_loopback(host):
        raise UsageError(f"refusing to listen on {host} without a token: anyone who can reach it could run code "
                         "in rlm's sandboxes and spend its model budget",
                         hint=f"give --token-file FILE or set {TOKEN_ENV}, or bind to 127.0.0.1")
    if token is not None and len(token) < 16:
        raise UsageError("the token is too short (fewer than 16 characters)",
                         hint="use a long random token, e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`")


class Authenticator:
    """Checks an ``Authorization`` header against the token (None: everything passes)."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token is not None else None

    @property
    def required(self) -> bool:
        return self._token is not None

    def allows(self, authorization: str | None) -> bool:
        if self._token is None:
            return True
        if not authorization:
            return False
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self._token)

    def __repr__(self) -> str:  # never the token itself
        return f"Authenticator(required={self.required})"
