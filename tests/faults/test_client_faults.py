"""Fault round 2 at the model client (issue 33: D6, D13), end to end through ``python -m rlm query``.

A front server on 127.0.0.1 stands before a scripted model server: it answers the first chat request
itself (HTTP 429 with ``Retry-After``, or a body cut short) and passes every other request through.  Marker ``docker``."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .conftest import ROOT, SUB, cli_env, run_cli

pytestmark = pytest.mark.docker   # a run opens its sandbox before it asks the model

RETRY_AFTER_S = 9            # above the client's own backoff cap of 8 s: the wait must not be capped
REPLY = "The answer is here.\nFINAL(forty-two)"
CUT_BODY = b'{"id": "chatcmpl-x", "object": "chat.completion", "choices": [{"index": 0, "mess'

FirstReply = Callable[[BaseHTTPRequestHandler], None]


class FrontServer:
    """Answers the first POST to .../chat/completions with ``first``; forwards everything else to ``upstream``."""

    def __init__(self, upstream: str, first: FirstReply) -> None:
        self.chat_requests = 0
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self, body: bytes | None) -> None:
                request = urllib.request.Request(upstream.rstrip("/") + self.path.removeprefix("/v1"),
                                                 data=body, method=self.command,
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        status, data = answer.status, answer.read()
                except urllib.error.HTTPError as exc:
                    status, data = exc.code, exc.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/chat/completions"):
                    front.chat_requests += 1
                    if front.chat_requests == 1:
                        first(self)
                        return
                self._forward(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def front(scripted) -> Iterator[Callable[[FirstReply], FrontServer]]:
    fronts: list[FrontServer] = []

    def start(first: FirstReply) -> FrontServer:
        server = FrontServer(scripted([REPLY]).url, first)
        fronts.append(server)
        return server

    yield start
    for server in fronts:
        server.close()


def _rate_limited(handler: BaseHTTPRequestHandler) -> None:
    data = b'{"error": {"message": "slow down", "type": "rate_limit_error", "code": null}}'
    handler.send_response(429)
    handler.send_header("Retry-After", str(RETRY_AFTER_S))
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _cut_short(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(CUT_BODY) + 500))   # promises more than it sends
    handler.end_headers()
    handler.wfile.write(CUT_BODY)
    handler.wfile.flush()
    handler.close_connection = True


def _env(server: FrontServer, **extra: str) -> dict[str, str]:
    env = cli_env()
    env.update(RLM_BASE_URL=server.url, RLM_ROOT_MODEL=ROOT, RLM_SUB_MODEL=SUB, **extra)
    return env


def _query_timed(server: FrontServer, tmp_path: Path, max_wait_s: str):
    """``rlm query`` against ``server`` with two retries and ``max_wait_s``: the result and its wall time."""
    started = time.monotonic()
    result = run_cli("query", "-q", "what is it?", "-c", "some context", env=_env(
        server, RLM_MAX_RETRIES="2", RLM_MAX_WAIT_S=max_wait_s), cwd=tmp_path)
    return result, time.monotonic() - started


def test_retry_after_is_honoured_past_the_backoff_cap_and_the_wait_is_shown(front, tmp_path: Path) -> None:
    server = front(_rate_limited)
    result, took = _query_timed(server, tmp_path, "60")
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "forty-two" in result.stdout
    assert f"asked to retry after {RETRY_AFTER_S:g} s" in result.stderr, result.stderr
    assert server.chat_requests == 2
    assert took >= RETRY_AFTER_S, took      # the wait was the server's, not cut to the 8 s backoff cap


def test_retry_after_beyond_max_wait_gives_up_without_waiting_it_out(front, tmp_path: Path) -> None:
    server = front(_rate_limited)
    result, took = _query_timed(server, tmp_path, "3")
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "bug in rlm" not in result.stderr
    assert server.chat_requests == 1
    assert took < RETRY_AFTER_S, took


def test_a_reply_body_cut_short_is_named_a_truncated_reply(front, tmp_path: Path) -> None:
    server = front(_cut_short)
    result = run_cli("query", "-q", "what is it?", "-c", "some context", env=_env(server), cwd=tmp_path)
    assert result.returncode == 4, (result.returncode, result.stdout, result.stderr)
    err = result.stderr.lower()
    assert "truncated" in err or "cut off" in err, result.stderr
    assert "cannot reach" not in err and "ollama" not in err, result.stderr
    assert "Traceback" not in result.stderr and "bug in rlm" not in result.stderr
