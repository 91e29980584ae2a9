"""`rlm query`, `rlm interactive`, `rlm demo`: questions over a context."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rlm.cli.options import (
    BaseUrlOpt,
    ConfigOpt,
    DebugOpt,
    MaxIterOpt,
    ModelOpt,
    NoSubOpt,
    SubModelOpt,
    UnsafeSandboxOpt,
)
from rlm.cli.options import load_cli_settings as _settings
from rlm.cli.options import model_flags as _model_flags
from rlm.cli.policy_opts import AblateOpt, PolicyOpt, policy_flags
from rlm.errors import UsageError

demo_app = typer.Typer(no_args_is_help=True, help="Generated documents with a known answer.")


# ---------------------------------------------------------------------------- query

def query(
    ctx: typer.Context,
    question: Annotated[Optional[str], typer.Option("-q", "--question", help="The question; @FILE reads it from a file, - from stdin.")] = None,
    question_file: Annotated[Optional[Path], typer.Option("--question-file", help="Read the question from this file.")] = None,
    file: Annotated[Optional[Path], typer.Option("-f", "--file", help="Context file (text, .json, .jsonl).")] = None,
    text: Annotated[Optional[str], typer.Option("-c", "--context", help="Context given inline.")] = None,
    context_dir: Annotated[Optional[Path], typer.Option("--context-dir", help="A folder of documents as context.")] = None,
    base_url: BaseUrlOpt = None, model: ModelOpt = None, sub_model: SubModelOpt = None,
    max_iterations: MaxIterOpt = None, no_subcalls: NoSubOpt = False,
    stats: Annotated[bool, typer.Option("--stats", help="Print a statistics table.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    trace: Annotated[Optional[Path], typer.Option("--trace", help="Where to write the JSONL trace.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Show no progress.")] = False,
    view: Annotated[bool, typer.Option("--view", help="Also write the trace as an HTML page next to it.")] = False,
    config: ConfigOpt = None, debug: DebugOpt = False, unsafe_sandbox: UnsafeSandboxOpt = False,
    policy: PolicyOpt = None, ablate: AblateOpt = None,
    max_time: Annotated[Optional[float], typer.Option("--max-time", min=0, help="Seconds the run may take; then its best answer (exit 6).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", min=0, help="Tokens the run may use, root and sub-calls, prompt and completion (exit 7).")] = None,
    max_cost: Annotated[Optional[float], typer.Option("--max-cost", min=0, help="USD the run may spend, from the prices table or the server's reports (exit 8).")] = None,
) -> None:
    """Answer QUESTION over a context with the RLM loop (exit 5 when the run ends without an answer;
    6, 7, 8 when a budget ended it)."""
    from rlm.cli.options import read_question
    from rlm.cli.run import answer_question, view_page
    from rlm.core.text import one_line
    from rlm.core.trace import trace_failure

    loaded = _settings(ctx, config, debug, **_model_flags(base_url, model, sub_model, max_iterations, no_subcalls),
                       **policy_flags(policy, ablate),
                       max_time_s=max_time, max_tokens=max_tokens, max_cost_usd=max_cost)
    given = [x for x in (file, text, context_dir) if x is not None]
    if len(given) != 1:
        raise UsageError("give exactly one context: -f FILE, -c TEXT or --context-dir DIR",
                         hint="e.g. rlm query -q 'What is the main topic?' -f report.txt")
    result = answer_question(ctx, loaded, read_question(question, question_file), file=file, text=text,
                             context_dir=context_dir, stats=stats, json_out=json_out, trace=trace, quiet=quiet)
    if view:
        try:
            typer.echo(view_page(result.trace), err=True)
        except UsageError as exc:  # the page of an incomplete trace (a full disk) is not worth an error
            if trace_failure(result.trace) is None:
                raise
            typer.echo(f"no trace page: {one_line(exc.message)}", err=True)
    from rlm.cli.group import EXIT_FOR_STATUS

    if result.status in EXIT_FOR_STATUS:
        raise typer.Exit(EXIT_FOR_STATUS[result.status])



def interactive(
    ctx: typer.Context,
    file: Annotated[Optional[Path], typer.Option("-f", "--file", help="Context file.")] = None,
    context_dir: Annotated[Optional[Path], typer.Option("--context-dir", help="A folder of documents.")] = None,
    base_url: BaseUrlOpt = None, model: ModelOpt = None, sub_model: SubModelOpt = None,
    max_iterations: MaxIterOpt = None, no_subcalls: NoSubOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Show no progress.")] = False,
    config: ConfigOpt = None, debug: DebugOpt = False, unsafe_sandbox: UnsafeSandboxOpt = False,
) -> None:
    """Ask many questions over one context; the sandbox (and its variables) stays between them.

    Commands: :load FILE (another context, as context_1, context_2, ...; nothing is lost), :reset (new
    sandbox), :stats, :view (the last trace as an HTML page), :quit.
    With piped stdin, each line is a question.
    """
    from rlm.cli.run import interactive_loop

    loaded = _settings(ctx, config, debug, **_model_flags(base_url, model, sub_model, max_iterations, no_subcalls))
    if (file is None) == (context_dir is None):
        raise UsageError("give one context: -f FILE or --context-dir DIR")
    interactive_loop(ctx, loaded, file=file, context_dir=context_dir, quiet=quiet)


@demo_app.command("simple")
def demo_simple(ctx: typer.Context, base_url: BaseUrlOpt = None, model: ModelOpt = None,
                sub_model: SubModelOpt = None, max_iterations: MaxIterOpt = None,
                quiet: Annotated[bool, typer.Option("--quiet")] = False,
                config: ConfigOpt = None, debug: DebugOpt = False, unsafe_sandbox: UnsafeSandboxOpt = False) -> None:
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
                config: ConfigOpt = None, debug: DebugOpt = False, unsafe_sandbox: UnsafeSandboxOpt = False) -> None:
    """A generated document of SIZE characters with one hidden number to find."""
    from rlm.bench.demo import needle_case
    from rlm.cli.run import run_demo

    loaded = _settings(ctx, config, debug, **_model_flags(base_url, model, sub_model, max_iterations, False))
    raise typer.Exit(run_demo(ctx, loaded, needle_case(size, seed), quiet=quiet))
