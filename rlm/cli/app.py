"""The `rlm` command line (also `python cli.py ...`).

Thin: parse flags, load settings at the edge, call the library, print.  Errors are
mapped to exit codes in exactly one place, ``RLMGroup.invoke``:

    0 ok · 1 other failure · 2 usage/config/context · 3 sandbox/Docker · 4 model server · 130 interrupted
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from rlm.errors import LLMError, RLMError, SandboxError, UsageError

EXIT_OTHER, EXIT_USAGE, EXIT_SANDBOX, EXIT_MODEL, EXIT_INTERRUPTED = 1, 2, 3, 4, 130


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, SandboxError):
        return EXIT_SANDBOX
    if isinstance(exc, LLMError):
        return EXIT_MODEL
    return EXIT_OTHER


class RLMGroup(TyperGroup):
    """Maps every failure of every command to a short message, a hint and an exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (Exit, Abort, TyperException):
            raise
        except (RLMError, KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - the one place errors become exit codes
            debug = bool(ctx.meta.get("rlm_debug")) or "--debug" in sys.argv
            console = Console(stderr=True)
            if debug:
                console.print_exception(show_locals=False)
            from rlm.cli.views import print_error

            if isinstance(exc, KeyboardInterrupt):
                trace = ctx.meta.get("rlm_trace")
                print_error(console, "interrupted", f"the partial trace is kept at {trace}" if trace else None)
            elif isinstance(exc, RLMError):
                print_error(console, exc.message, exc.hint)
            else:
                print_error(console, f"{exc.__class__.__name__}: {exc}",
                            "this is a bug in rlm; run again with --debug and report the traceback")
            raise typer.Exit(exit_code_for(exc)) from None


app = typer.Typer(cls=RLMGroup, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  help="Recursive Language Models over huge contexts; model code runs only in Docker sandboxes.")
sandbox_app = typer.Typer(cls=RLMGroup, no_args_is_help=True, help="Build, check and clean the sandbox.")
config_app = typer.Typer(cls=RLMGroup, no_args_is_help=True, help="Show the effective settings.")
trace_app = typer.Typer(cls=RLMGroup, no_args_is_help=True, help="Read run traces.")
demo_app = typer.Typer(cls=RLMGroup, no_args_is_help=True, help="Generated documents with a known answer.")
bench_app = typer.Typer(cls=RLMGroup, no_args_is_help=True, help="Measure the sandbox's speed and footprint.")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(config_app, name="config")
app.add_typer(trace_app, name="trace")
app.add_typer(demo_app, name="demo")
app.add_typer(bench_app, name="bench")

from rlm.cli.batch import batch_app, benchmark_command  # noqa: E402 - registered beside the others
from rlm.cli.model import model_app  # noqa: E402

app.add_typer(batch_app, name="batch", cls=RLMGroup)
app.command("benchmark")(benchmark_command)
app.add_typer(model_app, name="model", cls=RLMGroup)

from rlm.cli.options import (BaseUrlOpt, ConfigOpt, DebugOpt, MaxIterOpt, ModelOpt,  # noqa: E402
                             NoSubOpt, SubModelOpt)


def _settings(ctx: typer.Context, config: Path | None, debug: bool, **cli):
    from rlm.config import load_settings

    flags = {"base_url": "--base-url", "root_model": "--model", "sub_model": "--sub-model",
             "max_iterations": "--max-iterations", "enable_sub_calls": "--no-subcalls"}
    values = {k: v for k, v in cli.items() if v is not None}
    if debug:
        values["debug"] = True
    ctx.meta["rlm_debug"] = debug
    loaded = load_settings(config_file=config, cli=values, cli_flags={k: flags.get(k, "--" + k) for k in values})
    ctx.meta["rlm_debug"] = loaded.settings.run.debug
    if loaded.settings.run.debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    return loaded


def _console(quiet: bool = False) -> Console:
    return Console(stderr=True, quiet=quiet)


def _model_flags(base_url, model, sub_model, max_iterations, no_subcalls) -> dict:
    return {"base_url": base_url, "root_model": model, "sub_model": sub_model, "max_iterations": max_iterations,
            "enable_sub_calls": False if no_subcalls else None}


# ---------------------------------------------------------------------------- query
@app.command()
def query(
    ctx: typer.Context,
    question: Annotated[str, typer.Option("-q", "--question", help="The question to answer.")],
    file: Annotated[Optional[Path], typer.Option("-f", "--file", help="Context file (text, .json, .jsonl).")] = None,
    text: Annotated[Optional[str], typer.Option("-c", "--context", help="Context given inline.")] = None,
    context_dir: Annotated[Optional[Path], typer.Option("--context-dir", help="A folder of documents as context.")] = None,
    base_url: BaseUrlOpt = None, model: ModelOpt = None, sub_model: SubModelOpt = None,
    max_iterations: MaxIterOpt = None, no_subcalls: NoSubOpt = False,
    stats: Annotated[bool, typer.Option("--stats", help="Print a statistics table.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    trace: Annotated[Optional[Path], typer.Option("--trace", help="Where to write the JSONL trace.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Show no progress.")] = False,
    config: ConfigOpt = None, debug: DebugOpt = False,
) -> None:
    """Answer QUESTION over a context with the RLM loop."""
    from rlm.cli.run import answer_question

    loaded = _settings(ctx, config, debug, **_model_flags(base_url, model, sub_model, max_iterations, no_subcalls))
    given = [x for x in (file, text, context_dir) if x is not None]
    if len(given) != 1:
        raise UsageError("give exactly one context: -f FILE, -c TEXT or --context-dir DIR",
                         hint="e.g. rlm query -q 'What is the main topic?' -f report.txt")
    answer_question(ctx, loaded, question, file=file, text=text, context_dir=context_dir, stats=stats,
                    json_out=json_out, trace=trace, quiet=quiet)


@app.command()
def interactive(
    ctx: typer.Context,
    file: Annotated[Optional[Path], typer.Option("-f", "--file", help="Context file.")] = None,
    context_dir: Annotated[Optional[Path], typer.Option("--context-dir", help="A folder of documents.")] = None,
    base_url: BaseUrlOpt = None, model: ModelOpt = None, sub_model: SubModelOpt = None,
    max_iterations: MaxIterOpt = None, no_subcalls: NoSubOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Show no progress.")] = False,
    config: ConfigOpt = None, debug: DebugOpt = False,
) -> None:
    """Ask many questions over one context; the sandbox (and its variables) stays between them.

    Commands: :reset (new sandbox), :stats, :quit.  With piped stdin, each line is a question.
    """
    from rlm.cli.run import interactive_loop

    loaded = _settings(ctx, config, debug, **_model_flags(base_url, model, sub_model, max_iterations, no_subcalls))
    if (file is None) == (context_dir is None):
        raise UsageError("give one context: -f FILE or --context-dir DIR")
    interactive_loop(ctx, loaded, file=file, context_dir=context_dir, quiet=quiet)


# ---------------------------------------------------------------------------- demo
@demo_app.command("simple")
def demo_simple(ctx: typer.Context, base_url: BaseUrlOpt = None, model: ModelOpt = None,
                sub_model: SubModelOpt = None, max_iterations: MaxIterOpt = None,
                quiet: Annotated[bool, typer.Option("--quiet")] = False,
                config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """A short report and a question about it."""
    from rlm.bench.demo import simple_case
    from rlm.cli.run import run_demo

    loaded = _settings(ctx, config, debug, **_model_flags(base_url, model, sub_model, max_iterations, False))
    raise typer.Exit(run_demo(ctx, loaded, simple_case(), quiet=quiet))


@demo_app.command("needle")
def demo_needle(ctx: typer.Context,
                size: Annotated[int, typer.Option("--size", min=100, help="Document size in characters.")] = 100_000,
                seed: Annotated[int, typer.Option("--seed")] = 0,
                base_url: BaseUrlOpt = None, model: ModelOpt = None, sub_model: SubModelOpt = None,
                max_iterations: MaxIterOpt = None, quiet: Annotated[bool, typer.Option("--quiet")] = False,
                config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """A generated document of SIZE characters with one hidden number to find."""
    from rlm.bench.demo import needle_case
    from rlm.cli.run import run_demo

    loaded = _settings(ctx, config, debug, **_model_flags(base_url, model, sub_model, max_iterations, False))
    raise typer.Exit(run_demo(ctx, loaded, needle_case(size, seed), quiet=quiet))


# ---------------------------------------------------------------------------- config
@config_app.command("show")
def config_show(ctx: typer.Context, json_out: Annotated[bool, typer.Option("--json", help="One JSON object, snake_case keys.")] = False,
                config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """The effective settings and where each value came from."""
    import json

    from rich.table import Table

    from rlm.config import describe_settings

    loaded = _settings(ctx, config, debug)
    if json_out:
        typer.echo(json.dumps(loaded.settings.to_flat_dict(), indent=2))
        return
    table = Table(show_header=True, header_style="bold")
    for column in ("setting", "value", "source"):
        table.add_column(column)
    for key, value, source, _help in describe_settings(loaded):
        table.add_row(key, str(value), source)
    Console().print(table)


# ---------------------------------------------------------------------------- trace
@trace_app.command("show")
def trace_show(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="A trace file (.jsonl).")],
               config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Render a run's trace readably."""
    from rlm.cli.trace_text import render_trace
    from rlm.core.trace import read_trace

    _settings(ctx, config, debug)
    render_trace(read_trace(file), Console())


# ---------------------------------------------------------------------------- sandbox
@sandbox_app.command("build")
def sandbox_build(ctx: typer.Context, base_image: Annotated[Optional[str], typer.Option("--base-image", help="Base image (default python:3.11-slim, else a local Debian base).")] = None,
                  force: Annotated[bool, typer.Option("--force", help="Rebuild even when current.")] = False,
                  config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Build the sandbox image (offline); does nothing when it is current."""
    from rlm.sandbox.engine import Engine
    from rlm.sandbox.image import build_image, repo_root_default

    loaded = _settings(ctx, config, debug)
    console = _console()
    engine = Engine()
    result = build_image(engine, repo_root_default(), image=loaded.settings.sandbox.image, base_image=base_image,
                         force=force, progress=lambda line: console.print(f"  {line}", highlight=False, markup=False))
    verb = "built" if result.built else "is current:"
    typer.echo(f"{result.image} {verb} {result.hash_tag} (base {result.base_image}, {result.seconds:.1f} s)")


@sandbox_app.command("check")
def sandbox_check(ctx: typer.Context, security: Annotated[bool, typer.Option("--security", help="Also run the fast attack subset.")] = False,
                  config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Engine, image, runtime, a smoke session and its speed; --security adds attacks."""
    from rlm.cli.sandbox_check import run_check

    loaded = _settings(ctx, config, debug)
    raise typer.Exit(run_check(loaded.settings.sandbox, Console(), security=security))


@sandbox_app.command("prune")
def sandbox_prune(ctx: typer.Context, config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Remove rlm containers and run folders whose owner process is gone."""
    from rlm.sandbox.engine import Engine
    from rlm.sandbox.reaper import reap_orphans

    loaded = _settings(ctx, config, debug)
    report = reap_orphans(Engine(), loaded.settings.sandbox.resolved_run_root)
    typer.echo(f"removed {len(report.containers)} container(s) and {len(report.run_dirs)} run folder(s)")
    for name in report.containers + report.run_dirs:
        typer.echo(f"  {name}")


# ---------------------------------------------------------------------------- bench
@bench_app.command("sandbox")
def bench_sandbox_cmd(ctx: typer.Context, json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
                      context_mb: Annotated[int, typer.Option("--context-mb", min=1, help="Context size to load (MB).")] = 100,
                      sessions: Annotated[int, typer.Option("--sessions", min=1, help="Concurrent sessions.")] = 16,
                      config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Cold/warm open, cell latency vs docker exec, context load, bridge, batching, memory, concurrency."""
    import json

    from rich.table import Table

    from rlm.bench.sandbox_speed import bench_sandbox

    loaded = _settings(ctx, config, debug)
    console = _console()
    figures = bench_sandbox(loaded.settings.sandbox, context_mb=context_mb, sessions=sessions,
                            say=lambda m: console.print(m, style="dim"))
    if json_out:
        typer.echo(json.dumps(figures))
        return
    table = Table(title="sandbox benchmark", header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, str(value))
    Console().print(table)


def _sigterm_to_interrupt(signum, frame):  # so `with` blocks clean up on SIGTERM as on Ctrl-C
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    app()


if __name__ == "__main__":
    main()
