"""The MCP server: ``rlm mcp`` (stdio) and ``rlm serve --mcp`` (streamable HTTP at /mcp), on the
official ``mcp`` SDK.  Tools:

* ``ask(question, path | text, max_iterations?)``: the answer and a short run summary;
* ``open_session(path)`` / ``ask_in_session(session_id, question)`` / ``close_session(session_id)``:
  follow-up questions in one sandbox (variables kept).

Paths are confined to the context root as for HTTP.  Each iteration goes out as an MCP progress
notification (when the client asked for progress)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from rlm import RunResult
from rlm.serve.errors import APIError
from rlm.serve.service import Service, summary

log = logging.getLogger("rlm.serve")

INSTRUCTIONS = ("rlm answers questions over documents far larger than a model's window: a model writes Python "
                "over the document in a sandbox and may call models again from that code. Give a path under the "
                "server's context root, or the text itself.")


def _summary_line(result: RunResult, trace_id: str) -> str:
    s = summary(result, trace_id)
    return (f"[rlm: {s['status']}, {s['iterations']} iterations, {s['sub_calls']} sub-calls, "
            f"{s['duration_s']:.1f} s, trace {trace_id}]")


class _Reporter:
    """An ``on_event`` sink (called from the run's thread) that sends each iteration as a progress
    notification; ``flush`` waits until they are sent (before the tool's result goes out)."""

    def __init__(self, ctx: Context | None) -> None:
        self.ctx = ctx
        self.loop = asyncio.get_running_loop()
        self.sent: list[concurrent.futures.Future[None]] = []

    def __call__(self, kind: str, data: dict) -> None:
        if kind != "iteration" or self.ctx is None:
            return
        n, total = int(data.get("iteration", 0)), int(data.get("max", 0)) or None
        try:
            self.sent.append(asyncio.run_coroutine_threadsafe(
                self.ctx.report_progress(n, total, f"iteration {n}/{total}"), self.loop))
        except RuntimeError:  # the loop is gone
            pass

    async def flush(self) -> None:
        await asyncio.gather(*(asyncio.wrap_future(f) for f in self.sent), return_exceptions=True)


async def _tool(call: Any) -> Any:
    """Run a tool's body; errors become a ToolError with a message fit for the client."""
    try:
        return await call
    except APIError as err:
        raise ToolError(err.message) from None
    except ToolError:
        raise
    except Exception:  # noqa: BLE001 - logged here, never sent
        log.exception("internal error in an MCP tool")
        raise ToolError("internal error (see the server's log)") from None


def build_mcp(service: Service) -> MCPServer:
    mcp: MCPServer = MCPServer(name="rlm", instructions=INSTRUCTIONS)

    def context_of(path: str | None, text: str | None) -> Any:
        if (path is None) == (text is None):
            raise APIError(400, "give exactly one of path or text", "invalid_request")
        return service.context_for({"path": path} if path is not None else {"text": text})

    @mcp.tool(description="Answer a question over a document or folder (path under the server's context root) "
                          "or over the given text; returns the answer and a short run summary.")
    async def ask(question: str, path: str | None = None, text: str | None = None,
                  max_iterations: int | None = None, ctx: Context | None = None) -> str:
        async def body() -> str:
            progress = _Reporter(ctx)
            result, trace_id = await service.run(question, context_of(path, text), max_iterations=max_iterations,
                                                 on_event=progress)
            await progress.flush()
            return f"{result.answer or ''}\n\n{_summary_line(result, trace_id)}"

        return await _tool(body())

    @mcp.tool(description="Open a session over a document or folder (path under the context root): one sandbox "
                          "for several questions, variables kept. Returns the session id.")
    async def open_session(path: str) -> str:
        async def body() -> str:
            return await service.open_session(service.context_for({"path": path}))

        return await _tool(body())

    @mcp.tool(description="Ask a question in an open session (its sandbox and variables are kept).")
    async def ask_in_session(session_id: str, question: str, ctx: Context | None = None) -> str:
        async def body() -> str:
            progress = _Reporter(ctx)
            result, trace_id = await service.ask_in_session(session_id, question, on_event=progress)
            await progress.flush()
            return f"{result.answer or ''}\n\n{_summary_line(result, trace_id)}"

        return await _tool(body())

    @mcp.tool(description="Close a session: its sandbox is removed.")
    async def close_session(session_id: str) -> str:
        async def body() -> str:
            await service.close_session(session_id)
            return f"closed {session_id}"

        return await _tool(body())

    return mcp


async def serve_stdio(service: Service) -> None:
    """``rlm mcp``: the service over stdio until the client closes it."""
    service.bind_queue()
    await asyncio.to_thread(service.start)
    try:
        server = build_mcp(service)
        log.info("rlm mcp ready on stdio (context root %s, %d workers)", service.options.context_root,
                 service.options.workers)
        await server.run_stdio_async()
    finally:
        await asyncio.to_thread(service.close)
