"""What the user-facing commands do, between the CLI's flags and the orchestrator."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from rlm.bench.demo import DemoCase
from rlm.cli.views import StepView, stats_table
from rlm.config import LoadedSettings, Settings
from rlm.core.context import ContextSource, check_file, inline_text
from rlm.core.orchestrator import Orchestrator, RunResult
from rlm.core.parsing import sanitize_for_terminal
from rlm.errors import ModelNotFound
from rlm.llm.base import ModelClient


def with_model_server(loaded: "LoadedSettings") -> Settings:
    """The settings to run with: as configured, or, when no base URL was configured anywhere and
    nothing answers at the default one, pointing at the embedded llama.cpp server (started or
    reused; said on stderr).  A configured but unreachable URL stays the user's choice (an error later)."""
    from rlm.llm.local.server import resolve_settings

    return resolve_settings(loaded.settings, base_url_explicit=loaded.base_url_configured, console=Console(stderr=True))


def embedded_model_needed(argv: list[str]) -> bool:
    """Whether ``rlm <argv>`` would fall back to the embedded model: no ``--base-url`` among the
    arguments, no base URL in the environment, ``.env`` or the YAML file (``--config`` honoured),
    and nothing answering at the default URL.  For the set-up scripts, before anything is installed;
    settings that do not load count as "not needed" (the command itself then reports them)."""
    from rlm.config import load_settings
    from rlm.errors import RLMError
    from rlm.llm.local.server import fallback_needed

    config = None
    for i, arg in enumerate(argv):
        if arg == "--base-url" or arg.startswith("--base-url="):
            return False
        if arg == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
    try:
        loaded = load_settings(config_file=config)
    except RLMError:
        return False
    return fallback_needed(loaded.settings.model, base_url_explicit=loaded.base_url_configured)


def make_client(settings: Settings) -> ModelClient:
    from rlm.llm.openai_client import OpenAICompatibleClient

    return OpenAICompatibleClient(settings.model)


def check_models(client: ModelClient, settings: Settings) -> None:
    """Fail early and clearly when the server is down or lacks a model (before any sandbox starts)."""
    offered = client.list_models()
    if not offered:
        return  # some servers list nothing; let the first call speak
    for name in dict.fromkeys([settings.model.root_model, settings.model.effective_sub_model]):
        if name not in offered and f"{name}:latest" not in offered:
            raise ModelNotFound(f"the server at {settings.model.base_url} does not offer the model '{name}'",
                                hint="models it offers: " + ", ".join(sorted(offered)[:20]))


def _context(settings: Settings, *, file=None, text=None, context_dir=None) -> ContextSource:
    limit = settings.run.max_context_bytes
    if text is not None:
        return inline_text(text, max_bytes=limit)
    if context_dir is not None:
        return check_file(context_dir, max_bytes=limit, allow_dir=True)
    return check_file(file, max_bytes=limit)


def _orchestrator(settings: Settings, client: ModelClient, quiet: bool) -> Orchestrator:
    return Orchestrator(settings, client, progress=StepView(Console(stderr=True), quiet=quiet))


def answer_question(ctx: typer.Context, loaded: LoadedSettings, question: str, *, file=None, text=None,
                    context_dir=None, stats=False, json_out=False, trace=None, quiet=False) -> RunResult:
    if not question.strip():
        from rlm.errors import UsageError

        raise UsageError("the question is empty", hint="give one with -q 'your question'")
    with _context(loaded.settings, file=file, text=text, context_dir=context_dir) as source:
        settings = with_model_server(loaded)  # only once the input is known to be good
        result = _answer(ctx, settings, question, source, json_out=json_out, trace=trace, quiet=quiet)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        typer.echo(sanitize_for_terminal(result.answer or "(no answer)"))
        if result.status != "ok" and not quiet:
            Console(stderr=True).print(f"status: {result.status}", style="yellow")
    if stats:
        Console(stderr=True).print(stats_table(result))
    return result


def _answer(ctx: typer.Context, settings: Settings, question: str, source: ContextSource, *, json_out: bool,
            trace, quiet: bool) -> RunResult:
    with make_client(settings) as client:
        check_models(client, settings)
        orch = _orchestrator(settings, client, quiet or json_out and not sys.stderr.isatty())
        trace_path = Path(trace) if trace else orch.default_trace_path()
        ctx.meta["rlm_trace"] = str(trace_path)
        return orch.run(question, source.path, trace_path=trace_path)


def run_demo(ctx: typer.Context, loaded: LoadedSettings, case: DemoCase, *, quiet: bool = False) -> int:
    """Run one generated case; print answer, expected and whether they match; 0 when matched."""
    console = Console(stderr=True)
    settings = with_model_server(loaded)
    with inline_text(case.document, max_bytes=settings.run.max_context_bytes) as source, \
            make_client(settings) as client:
        check_models(client, settings)
        if not quiet:
            console.print(f"demo {case.name}: {len(case.document):,} characters; question: {case.question}")
        orch = _orchestrator(settings, client, quiet)
        trace_path = orch.default_trace_path()
        ctx.meta["rlm_trace"] = str(trace_path)
        result = orch.run(case.question, source.path, trace_path=trace_path)
    matched = case.matches(result.answer)
    typer.echo(f"answer:   {sanitize_for_terminal(result.answer or '(no answer)')}")
    typer.echo(f"expected: {case.expected}")
    typer.echo(f"matched:  {'yes' if matched else 'no'}  ({result.iterations} iterations, "
               f"{result.sub_calls} sub-calls, {result.duration_s:.1f} s, status {result.status})")
    return 0 if matched else 1


def _questions(console: Console):
    """Questions from a prompt with history on a terminal, else one per line of stdin."""
    if sys.stdin.isatty():
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory

        history = Path.home() / ".rlm_history"
        prompt = PromptSession(history=FileHistory(str(history)))
        while True:
            try:
                yield prompt.prompt("rlm> ")
            except EOFError:
                return
    else:
        for line in sys.stdin:
            yield line.rstrip("\n")


def interactive_loop(ctx: typer.Context, loaded: LoadedSettings, *, file=None, context_dir=None,
                     quiet: bool = False) -> None:
    console = Console(stderr=True)
    totals = {"questions": 0, "iterations": 0, "sub_calls": 0, "seconds": 0.0}
    with _context(loaded.settings, file=file, context_dir=context_dir) as source:
        settings = with_model_server(loaded)
        _interact(ctx, settings, source, console, totals, quiet)


def _interact(ctx: typer.Context, settings: Settings, source: ContextSource, console: Console, totals: dict,
              quiet: bool) -> None:
    from rlm.sandbox.pool import SandboxPool

    with make_client(settings) as client, \
            SandboxPool(max(1, settings.pool_size), settings.sandbox) as pool:  # a warm spare makes :reset instant
        check_models(client, settings)
        orch = _orchestrator(settings, client, quiet)
        session = pool.acquire(source.path)
        try:
            if not quiet:
                console.print("sandbox ready; ask a question (:reset, :stats, :quit)")
            for line in _questions(console):
                question = line.strip()
                if not question:
                    continue
                if question in (":quit", ":q", ":exit"):
                    break
                if question == ":stats":
                    typer.echo(json.dumps(totals))
                    continue
                if question == ":reset":
                    session.close()
                    session = pool.acquire(source.path)
                    typer.echo("(new sandbox: variables cleared)")
                    continue
                trace_path = orch.default_trace_path()
                ctx.meta["rlm_trace"] = str(trace_path)
                result = orch.run(question, trace_path=trace_path, session=session)
                typer.echo(sanitize_for_terminal(result.answer or "(no answer)"))
                totals["questions"] += 1
                totals["iterations"] += result.iterations
                totals["sub_calls"] += result.sub_calls
                totals["seconds"] = round(totals["seconds"] + result.duration_s, 3)
        finally:
            session.close()
