"""The OpenAI-compatible HTTP endpoint (FastAPI on uvicorn).

    GET  /v1/models                   rlm and rlm/<model> for each model the server knows
    POST /v1/chat/completions         the last user message is the question; the context is
                                      rlm.context {text | documents | path | file_id}, else the
                                      earlier messages; stream: true sends progress, then the answer
    POST /v1/files                    upload a context (multipart, field "file"), under a size cap
    GET  /v1/traces/{id}              the run's trace, JSON lines
    GET  /v1/traces/{id}/view         the trace viewer page
    GET  /health                      liveness (no token needed)

Every error is an OpenAI-style error object; no traceback reaches a client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlm.serve.auth import Authenticator
from rlm.serve.errors import APIError, internal
from rlm.serve.service import Service, summary, usage

log = logging.getLogger("rlm.serve")

DISCONNECT_POLL_S = 0.25
CHUNK_CHARS = 80  # characters of the answer per streamed delta
BODY_OVERHEAD = 1024 * 1024  # a chat request may carry its context inline: cap = the upload cap + this
FORM_OVERHEAD = 64 * 1024  # an upload's multipart framing and small fields, beyond the file's own cap


def _error(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class _Auth:
    """ASGI middleware: every HTTP request but ``/health`` needs the bearer token (when one is set)."""

    def __init__(self, app: Any, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") != "/health":
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization")
            if not self.auth.allows(given.decode("latin-1") if given is not None else None):
                response = _error(APIError(401, "a valid bearer token is required (Authorization: Bearer ...)",
                                           "invalid_api_key"))
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(service: Service, *, start_service: bool = True, mcp: bool = False) -> FastAPI:
    """The ASGI app over ``service`` (started and closed with the app's lifespan); with ``mcp``, the
    MCP server too, over streamable HTTP at ``/mcp`` (behind the same token)."""
    auth = Authenticator(service.options.token)
    mcp_server = None
    if mcp:
        from rlm.serve.mcp_server import build_mcp

        mcp_server = build_mcp(service)
        mcp_routes = mcp_server.streamable_http_app(streamable_http_path="/mcp", host=service.options.host).routes

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.bind_queue()
        if start_service:
            await asyncio.to_thread(service.start)
        try:
            if mcp_server is not None:
                async with mcp_server.session_manager.run():
                    yield
            else:
                yield
        finally:
            if start_service:
                await asyncio.to_thread(service.close)

    app = FastAPI(title="rlm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_Auth, auth=auth)
    if mcp_server is not None:
        app.router.routes.extend(mcp_routes)

    @app.exception_handler(APIError)
    async def on_api_error(_request: Request, err: APIError) -> JSONResponse:
        return _error(err)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        status = err.status_code
        message = {404: "no such route", 405: "method not allowed"}.get(status, "request refused")
        return _error(APIError(status, message, "not_found" if status == 404 else None))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        where = "; ".join(".".join(str(x) for x in e.get("loc", ())) + ": " + str(e.get("msg", ""))
                          for e in err.errors()[:5])
        return _error(APIError(400, f"invalid request: {where}"[:500], "invalid_request"))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, _err: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(internal())

    @app.get("/health")
    async def health() -> dict[str, Any]:
        queue = service.bind_queue()
        return {"status": "ok", "running": queue.running, "waiting": queue.waiting}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        names = ["rlm"] + [f"rlm/{m}" for m in service.models]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "rlm"}
                                           for n in names]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        cap = min(service.settings.run.max_context_bytes, service.files.max_bytes) + BODY_OVERHEAD
        body = await _json_body(request, cap)
        question, context, extra = _parse_chat(body, service)
        model = service.model_for(body.get("model"))
        max_iterations = extra.get("max_iterations")
        name = str(body.get("model") or "rlm")
        if body.get("stream") is True:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage")) \
                if isinstance(body.get("stream_options"), dict) else False
            return StreamingResponse(_stream(service, question, context, model, max_iterations, name, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        task = asyncio.ensure_future(service.run(question, context, model=model, max_iterations=max_iterations))
        result, trace_id = await _unless_disconnected(request, task)
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": name,
            "choices": [{"index": 0, "finish_reason": "stop" if result.status == "ok" else "length",
                         "message": {"role": "assistant", "content": result.answer or ""}}],
            "usage": usage(result), "rlm": summary(result, trace_id)})

    @app.post("/v1/files")
    async def upload(request: Request) -> JSONResponse:
        cap = service.files.max_bytes
        too_large = APIError(413, f"the upload is larger than the server's cap of {cap} bytes", "file_too_large")
        # the parser spools the file part to disk: it reads the body through the cap, so an endless
        # chunked upload (no Content-Length) stops at the cap instead of filling the disk
        form = await _capped(request, cap + FORM_OVERHEAD, too_large).form(max_files=1, max_fields=4,
                                                                           max_part_size=1024 * 1024)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise APIError(400, "send the file as multipart form data in the field 'file'", "invalid_request",
                           param="file")
        purpose = form.get("purpose")
        stored, part = service.files.new(upload.filename or "upload.txt",
                                         purpose if isinstance(purpose, str) else "user_data")
        size = 0
        try:
            with part.open("wb") as out:
                while chunk := await upload.read(1024 * 1024):
                    size += len(chunk)
                    if size > cap:
                        raise APIError(413, f"the upload is larger than the server's cap of {cap} bytes",
                                       "file_too_large")
                    out.write(chunk)
        except BaseException:
            service.files.discard(part)
            raise
        finally:
            await upload.close()
        return JSONResponse(service.files.commit(stored, part, size).to_openai())

    @app.get("/v1/files/{file_id}")
    async def file_info(file_id: str) -> dict[str, Any]:
        return service.files.get(file_id).to_openai()

    @app.delete("/v1/files/{file_id}")
    async def file_delete(file_id: str) -> dict[str, Any]:
        service.files.delete(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    @app.get("/v1/traces/{trace_id}")
    async def trace(trace_id: str) -> Response:
        path = service.trace_path(trace_id)
        return PlainTextResponse(path.read_bytes(), media_type="application/x-ndjson")

    @app.get("/v1/traces/{trace_id}/view")
    async def trace_view(trace_id: str) -> HTMLResponse:
        from rlm.errors import UsageError
        from rlm.viewer import load
        from rlm.viewer.trace_page import render_trace_page

        path = service.trace_path(trace_id)
        try:
            kind, events = load(path)
        except UsageError:
            raise APIError(404, "the trace holds no events yet", "trace_not_found") from None
        return HTMLResponse(render_trace_page(events, title=trace_id),
                            headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                                "script-src 'unsafe-inline'; img-src data:"})

    return app


def _capped(request: Request, cap: int, error: APIError) -> Request:
    """``request`` whose body raises ``error`` once more than ``cap`` bytes of it have been read;
    ``error`` at once when its Content-Length declares more."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise error
    receive = request.receive
    seen = 0

    async def capped_receive() -> Any:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise error
        return message

    return Request(request.scope, capped_receive)


async def _json_body(request: Request, cap: int) -> dict[str, Any]:
    data = await _capped(request, cap, APIError(
        413, f"the request body is larger than {cap} bytes; upload large contexts with POST /v1/files or name them "
             "by path", "request_too_large")).body()
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise APIError(400, "the request body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", "invalid_request")
    return body


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content
                         if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str))
    return ""


def _parse_chat(body: dict[str, Any], service: Service) -> tuple[str, Any, dict[str, Any]]:
    """(question, context, the rest of the ``rlm`` object) of a chat request."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise APIError(400, "messages must be a non-empty list of message objects", "invalid_request",
                       param="messages")
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        raise APIError(400, "no user message: the last user message is the question", "invalid_request",
                       param="messages")
    question = _text(messages[last_user].get("content")).strip()
    extra = body.get("rlm") or {}
    if not isinstance(extra, dict):
        raise APIError(400, "rlm must be an object", "invalid_request", param="rlm")
    if "context" in extra:
        context = service.context_for(extra["context"])
    else:
        earlier = [f"{m.get('role', 'user')}: {_text(m.get('content'))}" for m in messages[:last_user]
                   if _text(m.get("content")).strip()]
        context = "\n\n".join(earlier) if earlier else None
    return question, context, {k: v for k, v in extra.items() if k != "context"}


async def _unless_disconnected(request: Request, task: asyncio.Future[Any]) -> Any:
    """The task's result; if the client goes away first, the task (the run) is cancelled."""
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                log.info("client disconnected: cancelling its run")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise APIError(499, "client closed the request", "client_closed")
    except asyncio.CancelledError:
        task.cancel()
        raise


def _progress(kind: str, data: dict[str, Any]) -> str | None:
    """A line of progress for an event (no text from the sandbox beyond names and counts)."""
    if kind == "sandbox_ready":
        return f"sandbox ready in {float(data.get('seconds', 0.0)):.2f} s\n"
    if kind == "iteration":
        return f"iteration {data.get('iteration')}/{data.get('max')}\n"
    if kind == "cell":
        error = data.get("error")
        said = f" ({str(error)[:60]})" if error else ""
        return f"  ran a cell in {float(data.get('duration_s', 0.0)):.2f} s{said}\n"
    if kind == "sub_call":
        return f"  sub-call to {str(data.get('model', ''))[:60]}\n"
    return None


def _chunk(cid: str, name: str, delta: dict[str, Any] | None, *, finish: str | None = None,
           **extra: Any) -> str:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    payload = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": name,
               "choices": choices, **extra}
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _stream(service: Service, question: str, context: Any, model: str | None, max_iterations: Any,
                  name: str, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: progress per iteration as it happens (as ``reasoning_content`` deltas, with
    an ``rlm`` object), then the answer as content deltas, then ``[DONE]``.  The client going away
    cancels the generator, and so the run."""
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def on_event(kind: str, data: dict) -> None:  # called from the run's thread
        if kind in ("sandbox_ready", "iteration", "cell", "sub_call"):
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, dict(data)))
            except RuntimeError:
                pass

    task = asyncio.ensure_future(service.run(question, context, model=model, max_iterations=max_iterations,
                                             on_event=on_event))
    try:
        yield _chunk(cid, name, {"role": "assistant", "content": ""})
        while not task.done() or not events.empty():
            getter = asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                continue
            kind, data = getter.result()
            line = _progress(kind, data)
            if line is not None:
                info: dict[str, Any] = {"event": kind}
                info.update((k, data[k]) for k in ("iteration", "max", "duration_s", "seconds") if k in data)
                yield _chunk(cid, name, {"reasoning_content": line}, rlm=info)
        try:
            result, trace_id = task.result()
        except APIError as err:
            yield f"data: {json.dumps(err.body())}\n\n"
            yield "data: [DONE]\n\n"
            return
        except Exception:  # noqa: BLE001 - logged, never sent
            log.exception("internal error in a streamed run")
            yield f"data: {json.dumps(internal().body())}\n\n"
            yield "data: [DONE]\n\n"
            return
        answer = result.answer or ""
        for i in range(0, len(answer), CHUNK_CHARS):
            yield _chunk(cid, name, {"content": answer[i:i + CHUNK_CHARS]})
        yield _chunk(cid, name, {}, finish="stop" if result.status == "ok" else "length",
                     rlm=summary(result, trace_id))
        if include_usage:
            yield _chunk(cid, name, None, usage=usage(result))
        yield "data: [DONE]\n\n"
    finally:
        if not task.done():
            log.info("stream closed before its run ended: cancelling the run")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
