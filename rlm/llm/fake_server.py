"""A real OpenAI-compatible HTTP server with scripted answers, for tests.

Requests for the root model consume ``root`` steps in order; requests for any other
offered model are sub-calls answered by ``sub``.  A root step is a string (the content)
or a dict with optional ``content`` (str or None), ``think``, ``delay_s``,
``finish_reason``, ``status`` (+ ``message``) to answer with an HTTP error instead, and
``raw`` (a string sent as the body as it is, with ``content_type``, default JSON, and
``status``, default 200) to answer with a malformed reply.  ``sub_raw_when`` (a regex)
answers matching sub-call prompts with a malformed JSON body.

A context window like llama.cpp's: with ``n_ctx`` set, ``GET /props`` reports it (as
``default_generation_settings.n_ctx``), ``POST /tokenize`` counts tokens (``tokenize``; one token
per ``FAKE_CHARS_PER_TOKEN`` characters, rounded up), and a chat request whose messages have more
than ``n_ctx`` tokens is refused with HTTP 400 as llama.cpp does (``oversized`` counts them).
``show`` is the body of an Ollama-like ``POST /api/show``.  ``probes`` lists the paths of those
requests, in order.
One thread per request, so concurrent sub-calls overlap.  Also runnable as a process::

    python -m rlm.llm.fake_server --scenario FILE.json [--port N]

prints its base URL on the first stdout line and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

Step = Union[str, Mapping[str, Any]]
Reply = tuple[int, Union[dict[str, Any], "RawBody"]]
SubRule = Union[Callable[[str], str], Mapping[str, str]]

DEFAULT_ROOT_DEFAULT = "The script is exhausted.\nFINAL(out of script)"
MALFORMED_JSON = '{"id": "chatcmpl-x", "object": "chat.completion", "choices": [{"index": 0, "mess'

FAKE_CHARS_PER_TOKEN = 4
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
                404: "invalid_request_error", 429: "rate_limit_error"}


def repl(code: str) -> str:
    """A root step whose reply is one REPL block running ``code``."""
    return f"```repl\n{code}\n```"


class RawBody:
    """A reply body sent byte for byte (for malformed replies)."""

    def __init__(self, text: str, content_type: str = "application/json") -> None:
        self.data = text.encode()
        self.content_type = content_type


def _error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    etype = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def _prompt_text(messages: Any) -> str:
    """The text of all messages, joined (content may be a string or a list of parts)."""
    out: list[str] = []
    for m in messages if isinstance(messages, list) else []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n\n".join(out)


class _Server(ThreadingHTTPServer):
    """Threading server that can also drop its open keep-alive connections on close."""

    daemon_threads = True
    request_queue_size = 128  # many concurrent sub-calls: a deep listen queue refuses none

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeModelServer:
    """Scripted OpenAI-compatible server on 127.0.0.1; starts on construction."""

    def __init__(self, *, root_model: str = "root-model", models: Sequence[str] = ("sub-model",),
                 root: Sequence[Step] = (), root_default: str = DEFAULT_ROOT_DEFAULT,
                 sub: SubRule | None = None, sub_delay_s: float = 0.0, sub_fail_when: str | None = None,
                 sub_raw_when: str | None = None, api_key: str | None = None, port: int = 0,
                 n_ctx: int | None = None, tokenize: bool = True, show: Mapping[str, Any] | None = None) -> None:
        self.root_model = root_model
        self.n_ctx = n_ctx
        self.tokenize = tokenize
        self.show = show
        self.oversized = 0
        self.probes: list[str] = []
        self.models = [root_model] + [m for m in models if m != root_model]
        self.root_default = root_default
        self.sub = sub if sub is not None else {"default": "sub-answer"}
        self.sub_delay_s = sub_delay_s
        self.sub_fail_when = re.compile(sub_fail_when, re.DOTALL) if sub_fail_when else None
        self.sub_raw_when = re.compile(sub_raw_when, re.DOTALL) if sub_raw_when else None
        self.api_key = api_key
        self._steps = list(root)
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._closed = False
        self._httpd = _Server(("127.0.0.1", port), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="fake-model-server", daemon=True)
        self._thread.start()

    @classmethod
    def from_scenario(cls, scenario: Mapping[str, Any], *, port: int = 0) -> "FakeModelServer":
        """Build from a scenario mapping (the JSON file's keys are the constructor's)."""
        return cls(**dict(scenario), port=port)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of the received chat-completion request bodies, in arrival order."""
        with self._lock:
            return list(self._requests)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.drop_connections()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FakeModelServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- behaviour ----------------------------------------------------------------

    def _next_root_step(self) -> Mapping[str, Any]:
        with self._lock:
            step = self._steps.pop(0) if self._steps else self.root_default
        return {"content": step} if isinstance(step, str) else step

    def _sub_reply(self, prompt: str) -> str:
        if callable(self.sub):
            return self.sub(prompt)
        for pattern, reply in self.sub.items():
            if pattern != "default" and re.search(pattern, prompt, re.DOTALL):
                return reply
        return self.sub.get("default", "(no rule matched)")

    @staticmethod
    def tokens(text: str) -> int:
        """This server's token count of ``text``."""
        return -(-len(text) // FAKE_CHARS_PER_TOKEN)

    def probe(self, method: str, path: str, body: Any) -> Reply:
        """``GET /props``, ``POST /tokenize`` and ``POST /api/show``."""
        with self._lock:
            self.probes.append(path)
        if method == "GET" and path == "/props" and self.n_ctx is not None:
            return 200, {"default_generation_settings": {"n_ctx": self.n_ctx, "params": {}},
                         "total_slots": 1, "model_path": "fake.gguf"}
        if method == "POST" and path == "/tokenize" and self.n_ctx is not None and self.tokenize:
            content = body.get("content") if isinstance(body, dict) else None
            if not isinstance(content, str):
                return 400, _error_body(400, "'content' must be a string")
            return 200, {"tokens": list(range(self.tokens(content)))}
        if method == "POST" and path == "/api/show" and self.show is not None:
            return 200, dict(self.show)
        return 404, _error_body(404, f"no route {path}")

    def chat(self, body: Mapping[str, Any]) -> Reply:
        """Status and reply (JSON, or a raw body) for one chat-completion request body."""
        with self._lock:
            self._requests.append(dict(body))
        model = body.get("model")
        prompt = _prompt_text(body.get("messages"))
        finish = "stop"
        cost = None   # a root step's "cost": the server reports the call's price in usage.cost (as OpenRouter does)
        if self.n_ctx is not None and self.tokens(prompt) > self.n_ctx:
            with self._lock:
                self.oversized += 1
            return 400, {"error": {"message": f"the request exceeds the available context size, try increasing "
                                              f"it ({self.tokens(prompt)} > {self.n_ctx} tokens)",
                                   "type": "exceed_context_size_error", "param": None, "code": 400}}
        if model == self.root_model:
            step = self._next_root_step()
            time.sleep(float(step.get("delay_s", 0) or 0))
            if step.get("raw") is not None:
                return int(step.get("status") or 200), RawBody(str(step["raw"]),
                                                               step.get("content_type", "application/json"))
            if step.get("status"):
                status = int(step["status"])
                return status, _error_body(status, step.get("message", f"scripted HTTP {status}"))
            content = step.get("content")
            if step.get("think") is not None:
                content = f"<think>{step['think']}</think>{content or ''}"
            finish = step.get("finish_reason", finish)
            cost = step.get("cost")
        elif model in self.models:
            time.sleep(self.sub_delay_s)
            if self.sub_fail_when and self.sub_fail_when.search(prompt):
                return 500, _error_body(500, "scripted sub-call failure")
            if self.sub_raw_when and self.sub_raw_when.search(prompt):
                return 200, RawBody(MALFORMED_JSON)
            content = self._sub_reply(prompt)
        else:
            return 404, _error_body(404, f"The model `{model}` does not exist or you do not have access "
                                         "to it.", code="model_not_found")
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(content or "") // 4,
                      "total_tokens": len(prompt) // 4 + len(content or "") // 4,
                      **({"cost": cost} if cost is not None else {})},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

            def _send(self, status: int, payload: dict[str, Any] | RawBody) -> None:
                if isinstance(payload, RawBody):
                    data, content_type = payload.data, payload.content_type
                else:
                    data, content_type = json.dumps(payload).encode(), "application/json"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout); nothing to tell it

            def _authorized(self) -> bool:
                if server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}":
                    return True
                self._send(401, _error_body(401, "Incorrect API key provided.", code="invalid_api_key"))
                return False

            def do_GET(self) -> None:  # noqa: N802
                if not self._authorized():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in server.models]})
                elif self.path.rstrip("/") == "/props":
                    self._send(*server.probe("GET", "/props", None))
                else:
                    self._send(404, _error_body(404, f"no route {self.path}"))

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if not self._authorized():
                    return
                path = self.path.rstrip("/")
                if path not in ("/v1/chat/completions", "/tokenize", "/api/show"):
                    self._send(404, _error_body(404, f"no route {self.path}"))
                    return
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError as exc:
                    self._send(400, _error_body(400, f"invalid JSON: {exc}"))
                    return
                self._send(*(server.chat(body) if path == "/v1/chat/completions" else server.probe("POST", path, body)))

        return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a scripted OpenAI-compatible model API.")
    parser.add_argument("--scenario", required=True, help="JSON file with the FakeModelServer keys")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args(argv)
    with open(args.scenario, encoding="utf-8") as fh:
        scenario = json.load(fh)
    with FakeModelServer.from_scenario(scenario, port=args.port) as server:
        print(server.url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
