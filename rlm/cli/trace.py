"""`rlm trace ...`: read run traces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
