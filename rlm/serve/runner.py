"""Running the service: uvicorn for HTTP (``rlm serve``), stdio for MCP (``rlm mcp``).

The service owns the signals (the library installs none): on SIGTERM or Ctrl-C uvicorn stops
taking connections, lets the runs in flight finish for up to ``grace_s``, then cancels them (each
cancelled run removes its sandbox), and the warm pool is closed."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rlm import LoadedSettings
from rlm.serve.service import ServeOptions, Service

log = logging.getLogger("rlm.serve")


@contextmanager
def _signals_end_quietly() -> Iterator[None]:
    """uvicorn re-raises the signal that stopped it once it is done: let that end the command
    normally (exit 0) instead of the CLI's SIGTERM-as-Ctrl-C."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in saved:
        signal.signal(sig, lambda _signum, _frame: None)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def run_http(loaded: LoadedSettings, options: ServeOptions, *, mcp: bool = False) -> None:
    import uvicorn

    from rlm.serve.http import create_app

    service = Service(loaded, options)
    app = create_app(service, mcp=mcp)
    config = uvicorn.Config(app, host=options.host, port=options.port, lifespan="on", log_level="info",
                            timeout_graceful_shutdown=int(options.grace_s), server_header=False,
                            proxy_headers=False)
    log.info("rlm serve on http://%s:%d (token %s, %d workers, queue %d)", options.host, options.port,
             "required" if options.token else "not required", options.workers, options.max_queue)
    with _signals_end_quietly():
        uvicorn.Server(config).run()


def run_stdio(loaded: LoadedSettings, options: ServeOptions) -> None:
    """MCP over stdio until the client closes stdin; SIGTERM or Ctrl-C stop it too (exit 0), after
    the runs in flight are cancelled and every sandbox is removed."""
    from rlm.serve.mcp_server import serve_stdio

    service = Service(loaded, options)
    try:
        asyncio.run(serve_stdio(service))
    except KeyboardInterrupt:  # the CLI turns SIGTERM into this too
        service.close()  # idempotent: nothing is left open
        log.info("rlm mcp stopped")
        logging.shutdown()
        sys.stderr.flush()
        os._exit(0)  # a worker thread still blocks reading stdin; it would hold the exit until stdin closes
