"""`rlm config show`, `rlm config trust [FILE...]`, `rlm config untrust FILE...`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from rlm.cli.options import (
    ConfigOpt,
    DebugOpt,
    UnsafeSandboxOpt,
)
from rlm.cli.options import load_cli_settings as _settings

config_app = typer.Typer(no_args_is_help=True, help="Show the effective settings; trust the settings files of a folder.")

FilesArg = Annotated[Optional[list[Path]], typer.Argument(
    help="Settings files (.env or YAML); default: ./.env and ./configs/default.yaml, those that exist.")]


# ---------------------------------------------------------------------------- config
@config_app.command("show")
def config_show(ctx: typer.Context, json_out: Annotated[bool, typer.Option("--json", help="One JSON object, snake_case keys.")] = False,
                config: ConfigOpt = None, debug: DebugOpt = False, unsafe_sandbox: UnsafeSandboxOpt = False) -> None:
    """The effective settings and where each value came from; then the trusted files."""
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
    console = Console()
    console.print(table)
    _print_trusted(console)


def _print_trusted(console: Console) -> None:
    from rlm.config.trust import TrustStore, digest
    from rlm.errors import ConfigError

    store = TrustStore.for_environ()
    try:
        entries = store.entries()
    except ConfigError as exc:
        console.print(f"trusted files: {exc.problems[0]}", highlight=False, markup=False, soft_wrap=True)
        return
    console.print(f"trusted files ({store.path}): {len(entries) or 'none'}", highlight=False, markup=False,
                  soft_wrap=True)
    for name, entry in sorted(entries.items()):
        path = Path(name)
        try:
            state = "ok" if digest(path.read_bytes()) == entry["sha256"] else "changed: trust it again"
        except OSError:
            state = "missing"
        console.print(f"  {name}  ({state})", highlight=False, markup=False, soft_wrap=True)


def _found_here() -> list[Path]:
    from rlm.config.settings import DEFAULT_CONFIG_PATH, DOTENV_NAME

    return [p for p in (Path(DOTENV_NAME), DEFAULT_CONFIG_PATH) if p.is_file()]


@config_app.command("trust")
def config_trust(files: FilesArg = None) -> None:
    """Let rlm read these settings files (found in a working folder) as they are now.

    rlm records each file's absolute path and sha256; a changed file is ignored until trusted again.
    Even a trusted file cannot weaken the sandbox: that takes --unsafe-sandbox on each command.
    """
    from rlm.config.settings import check_file
    from rlm.config.trust import TrustStore, digest
    from rlm.errors import UsageError

    paths = list(files or []) or _found_here()
    if not paths:
        raise UsageError("nothing to trust: there is no .env or configs/default.yaml in this folder",
                         hint="give the file: rlm config trust FILE")
    store = TrustStore.for_environ()
    out = Console()
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{path} is not a file", hint="give a .env or YAML settings file")
        data = path.read_bytes()
        check_file(path)  # a file rlm cannot read is refused now, not ignored later
        key = store.trust(path, data)
        out.print(f"trusted {key} (sha256 {digest(data)[:12]}) in {store.path}", highlight=False, markup=False,
                  soft_wrap=True)


@config_app.command("untrust")
def config_untrust(files: Annotated[list[Path], typer.Argument(help="Files to forget.")]) -> None:
    """Forget files trusted with `rlm config trust`: rlm ignores them again."""
    from rlm.config.trust import TrustStore

    store = TrustStore.for_environ()
    out = Console()
    for path in files:
        done = store.untrust(path)
        out.print(f"{'untrusted' if done else 'was not trusted:'} {path.absolute()}", highlight=False, markup=False,
                  soft_wrap=True)
