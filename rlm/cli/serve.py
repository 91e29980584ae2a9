"""`rlm serve` (an OpenAI-compatible HTTP endpoint, optionally with MCP at /mcp) and `rlm mcp` (MCP over stdio)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rlm.cli.options import (
    BaseUrlOpt,
    ConfigOpt,
    DebugOpt,
    MaxIterOpt,
    ModelOpt,
    NoSubOpt,
    SubModelOpt,
    UnsafeSandboxOpt,
    load_cli_settings,
    model_flags,
)
from rlm.errors import UsageError

ContextRootOpt = Annotated[Optional[Path], typer.Option(
    "--context-root", help="Folder under which requests may name context paths (none: paths are refused).")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, max=64, help="Runs at once (each in its own sandbox).")]
DataDirOpt = Annotated[Path, typer.Option("--data-dir", help="Where uploads and traces are kept.")]


def _root(path: Path | None) -> Path | None:
    if path is None:
        return None
    if not path.is_dir():
        raise UsageError(f"the context root {path} is not a folder", hint="give an existing folder to --context-root")
    return path.resolve()


def _logging(debug: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; any but loopback needs a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8000,
    context_root: ContextRootOpt = None,
    workers: WorkersOpt = 2,
    queue: Annotated[int, typer.Option("--queue", min=0, help="Requests that may wait for a worker; beyond: 429.")] = 32,
    token_file: Annotated[Optional[Path], typer.Option(
        "--token-file", help="File whose first line is the bearer token (or set RLM_SERVE_TOKEN).")] = None,
    request_timeout: Annotated[float, typer.Option("--request-timeout", min=1, help="Seconds one run may take (504 past it).")] = 600.0,
    grace: Annotated[float, typer.Option("--grace", min=0, help="On SIGTERM, seconds runs in flight may finish before they are cancelled.")] = 30.0,
    max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", min=1, help="Largest upload (POST /v1/files), in MB.")] = 100,
    data_dir: DataDirOpt = Path(".rlm-serve"),
    mcp: Annotated[bool, typer.Option("--mcp", help="Also serve MCP over streamable HTTP at /mcp.")] = False,
    no_warm_pool: Annotated[bool, typer.Option("--no-warm-pool", help="Start each run's sandbox cold.")] = False,
    base_url: BaseUrlOpt = None, model: ModelOpt = None, sub_model: SubModelOpt = None,
    max_iterations: MaxIterOpt = None, no_subcalls: NoSubOpt = False,
    config: ConfigOpt = None, debug: DebugOpt = False, unsafe_sandbox: UnsafeSandboxOpt = False,
) -> None:
    """Serve rlm as an OpenAI-compatible endpoint (/v1/chat/completions, /v1/models, /v1/files, /v1/traces)."""
    from rlm.serve.auth import check_bind, load_token
    from rlm.serve.runner import run_http
    from rlm.serve.service import ServeOptions

    loaded = load_cli_settings(ctx, config, debug, **model_flags(base_url, model, sub_model, max_iterations, no_subcalls))
    token = load_token(token_file)
    check_bind(host, token)
    _logging(debug)
    options = ServeOptions(host=host, port=port, context_root=_root(context_root), workers=workers, max_queue=queue,
                           request_timeout_s=request_timeout, grace_s=grace, data_dir=data_dir,
                           max_upload_bytes=max_upload_mb * 1024 * 1024, warm_pool=not no_warm_pool, token=token)
    run_http(loaded, options, mcp=mcp)


def mcp(
    ctx: typer.Context,
    context_root: Annotated[Optional[Path], typer.Option(
        "--context-root", help="Folder under which tools may name paths (default: the current folder).")] = None,
    workers: WorkersOpt = 1,
    data_dir: DataDirOpt = Path(".rlm-serve"),
    no_warm_pool: Annotated[bool, typer.Option("--no-warm-pool", help="Start each run's sandbox cold.")] = False,
    base_url: BaseUrlOpt = None, model: ModelOpt = None, sub_model: SubModelOpt = None,
    max_iterations: MaxIterOpt = None, no_subcalls: NoSubOpt = False,
    config: ConfigOpt = None, debug: DebugOpt = False, unsafe_sandbox: UnsafeSandboxOpt = False,
) -> None:
    """Serve rlm's tools (ask, open_session, ask_in_session, close_session) over MCP on stdio."""
    from rlm.serve.runner import run_stdio
    from rlm.serve.service import ServeOptions

    loaded = load_cli_settings(ctx, config, debug, **model_flags(base_url, model, sub_model, max_iterations, no_subcalls))
    _logging(debug)
    options = ServeOptions(context_root=_root(context_root or Path.cwd()), workers=workers, data_dir=data_dir,
                           warm_pool=not no_warm_pool)
    run_stdio(loaded, options)


def bench_serve(
    workers: WorkersOpt = 4,
    clients: Annotated[str, typer.Option("--clients", help="Concurrent clients per round, comma-separated.")] = "1,4,16",
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Throughput and p50/p95 latency of rlm serve with the scripted model, for 1, 4 and 16 concurrent clients."""
    import json

    from rlm.serve.bench import measure

    try:
        levels = tuple(int(x) for x in clients.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--clients takes numbers separated by commas, not {clients!r}") from None
    if not levels or min(levels) < 1:
        raise UsageError("--clients needs at least one positive number")
    figures = measure(levels, workers=workers, say=(lambda _line: None) if json_out else print)
    if json_out:
        print(json.dumps(figures))
