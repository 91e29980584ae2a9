"""`rlm trace ...`: read run traces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from rlm.cli.options import (
    ConfigOpt,
    DebugOpt,
)
from rlm.cli.options import load_cli_settings as _settings

trace_app = typer.Typer(no_args_is_help=True, help="Read run traces.")


# ---------------------------------------------------------------------------- trace
@trace_app.command("show")
def trace_show(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="A trace file (.jsonl).")],
               config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Render a run's trace readably."""
    from rlm.cli.trace_text import render_trace
    from rlm.core.trace import read_trace

    _settings(ctx, config, debug)
    render_trace(read_trace(file), Console())


@trace_app.command("view")
def trace_view(ctx: typer.Context,
               file: Annotated[Path, typer.Argument(help="A trace (.jsonl) or a batch results file.")],
               out: Annotated[Optional[Path], typer.Option("-o", "--output",
                                                           help="The page to write (default: FILE with .html).")] = None,
               open_it: Annotated[bool, typer.Option("--open", help="Open the page in a web browser.")] = False,
               config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Write a run's trace (or a batch's results) as one self-contained HTML page."""
    from rlm.viewer import write_view

    _settings(ctx, config, debug)
    page = write_view(file, out)
    typer.echo(str(page))
    if open_it:
        import webbrowser

        if not webbrowser.open(page.resolve().as_uri()):
            Console(stderr=True).print("no web browser found; open the file above yourself", style="yellow")
