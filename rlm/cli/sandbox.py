"""`rlm sandbox ...`: build, check and clean the sandbox."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from rlm.cli.options import (
    ConfigOpt,
    DebugOpt,
)
from rlm.cli.options import load_cli_settings as _settings

sandbox_app = typer.Typer(no_args_is_help=True, help="Build, check and clean the sandbox.")


# ---------------------------------------------------------------------------- sandbox
@sandbox_app.command("build")
def sandbox_build(ctx: typer.Context, base_image: Annotated[Optional[str], typer.Option("--base-image", help="Base image (default python:3.11-slim, else a local Debian base).")] = None,
                  force: Annotated[bool, typer.Option("--force", help="Rebuild even when current.")] = False,
                  config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Build the sandbox image (offline); does nothing when it is current."""
    from rlm.sandbox.engine import Engine
    from rlm.sandbox.image import build_image, repo_root_default

    loaded = _settings(ctx, config, debug)
    console = Console(stderr=True)
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
