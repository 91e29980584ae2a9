"""`rlm config show`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from rlm.cli.options import (
    ConfigOpt,
    DebugOpt,
)
from rlm.cli.options import load_cli_settings as _settings

config_app = typer.Typer(no_args_is_help=True, help="Show the effective settings.")


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
