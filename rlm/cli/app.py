"""The `rlm` command line (also `python cli.py ...`).

Thin: parse flags, load settings at the edge, call the library, print.  Errors are
mapped to exit codes in exactly one place, ``RLMGroup.invoke``:

    0 ok · 1 other failure · 2 usage/config/context · 3 sandbox/Docker · 4 model server ·
    5 no answer (the run ended without one: status no_answer, the trace kept) · 6 time_limit ·
    7 token_limit · 8 cost_limit (a budget ended the run) · 130 interrupted
"""

from __future__ import annotations

import signal

import typer

from rlm.cli.group import (  # noqa: F401 - the exit codes are part of this module's interface
    EXIT_FOR_STATUS,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_NO_ANSWER,
    EXIT_OTHER,
    EXIT_SANDBOX,
    EXIT_USAGE,
    RLMGroup,
    exit_code_for,
)

app = typer.Typer(cls=RLMGroup, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  help="Recursive Language Models over huge contexts; model code runs only in Docker sandboxes.")


def _print_version(value: bool) -> None:
    if value:
        from rlm import __version__

        typer.echo(f"rlm {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print rlm's version and exit.")) -> None:
    pass


from rlm.cli.batch import batch_app, benchmark_command  # noqa: E402 - registered beside the others
from rlm.cli.bench import bench_app  # noqa: E402
from rlm.cli.config_cmd import config_app  # noqa: E402
from rlm.cli.model import model_app  # noqa: E402
from rlm.cli.query import demo_app, interactive, query  # noqa: E402
from rlm.cli.sandbox import sandbox_app  # noqa: E402
from rlm.cli.serve import bench_serve, mcp, serve  # noqa: E402
from rlm.cli.trace import trace_app  # noqa: E402

app.command()(query)
app.command()(interactive)
app.command()(serve)
app.command()(mcp)
bench_app.command("serve")(bench_serve)
app.command("benchmark")(benchmark_command)
for _name, _sub in (("sandbox", sandbox_app), ("config", config_app), ("trace", trace_app), ("demo", demo_app),
                    ("bench", bench_app), ("batch", batch_app), ("model", model_app)):
    app.add_typer(_sub, name=_name, cls=RLMGroup)


def _sigterm_to_interrupt(signum, frame):  # so `with` blocks clean up on SIGTERM as on Ctrl-C
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    app()


if __name__ == "__main__":
    main()
