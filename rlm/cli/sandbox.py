"""`rlm sandbox ...`: build, check and clean the sandbox."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from rlm.cli.options import (
    ConfigOpt,
    DebugOpt,
    UnsafeSandboxOpt,
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
                  config: ConfigOpt = None, debug: DebugOpt = False, unsafe_sandbox: UnsafeSandboxOpt = False) -> None:
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


# ---------------------------------------------------------------------------- gvisor
gvisor_app = typer.Typer(no_args_is_help=True, help="gVisor (runsc): install and register it with the engine.")
sandbox_app.add_typer(gvisor_app, name="gvisor")


@gvisor_app.command("install")
def gvisor_install() -> None:
    """Install runsc (apt, as root), register it in daemon.json, reload dockerd; idempotent."""
    from rlm.sandbox.gvisor import install

    report = install(say=lambda line: typer.echo(f"  {line}", err=True))
    if not report.changed:
        typer.echo(f"nothing to do: {report.runsc_path} ({report.version}) is registered as runtime runsc")
        return
    typer.echo(f"runsc ready: {report.runsc_path} ({report.version}); the engine lists runtime runsc")


@gvisor_app.command("status")
def gvisor_status() -> None:
    """Is runsc installed, configured in daemon.json, and registered with the engine?"""
    from rlm.sandbox.engine import Engine
    from rlm.sandbox.gvisor import status

    engine = Engine()
    try:
        st = status(engine)
    finally:
        engine.close()
    typer.echo(f"runsc binary:  {st.runsc_path or 'not installed'}" + (f" ({st.version})" if st.version else ""))
    typer.echo(f"daemon.json:   {'runsc entry present' if st.configured else 'no (matching) runsc entry'}")
    typer.echo(f"engine:        {'runsc registered' if st.registered else 'runsc not registered'}"
               + (f", args {' '.join(st.runtime_args)} (platform {st.platform})" if st.registered else "")
               + f"; default runtime {st.default_runtime}")
    if not st.registered:
        typer.echo("to install and register it: sudo rlm sandbox gvisor install")
        raise typer.Exit(1)


@sandbox_app.command("runtimes")
def sandbox_runtimes(ctx: typer.Context, config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Measure each registered runtime (runc, runsc): session open, trivial cell, idle memory."""
    from rlm.bench.sandbox_speed import compare_runtimes
    from rlm.sandbox.runtime import available_runtimes

    loaded = _settings(ctx, config, debug)
    figures = compare_runtimes(loaded.settings.sandbox, available_runtimes(),
                               say=lambda line: typer.echo(f"  {line}", err=True))
    typer.echo(f"{'runtime':8} {'open s':>7} {'cell ms':>8} {'p95 ms':>7} {'idle MB':>8}")
    for name, f in figures.items():
        typer.echo(f"{name:8} {f['open_s']:7.2f} {f['cell_ms']:8.2f} {f['cell_p95_ms']:7.2f} "
                   f"{f['idle_mb'] if f['idle_mb'] is not None else '?':>8}")
