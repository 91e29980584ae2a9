"""What `rlm query`, `rlm interactive` and `rlm demo` do: the library's ``RLM``, shown on a terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console

from rlm._api import RLM, ContextLike
from rlm.bench.demo import DemoCase
from rlm.cli.views import StepView, print_warning, safe, safe_line, stats_table
from rlm.config import LoadedSettings
from rlm.core.result import RunResult
from rlm.core.text import json_line, terminal_text
from rlm.core.trace import trace_failure
from rlm.errors import ContextError, UsageError


def notice(text: str) -> None:
    """A notice from the library (the embedded model starting, a restart) on stderr."""
    Console(stderr=True).print(safe(text, style="yellow"), highlight=False, soft_wrap=True)


def make_rlm(ctx: typer.Context, loaded: LoadedSettings, *, quiet: bool, header: str | None = None) -> RLM:
    """The library object for this command: progress on stderr, the trace path kept for error messages;
    ``header`` is printed once the model server is known to answer."""
    view = StepView(Console(stderr=True), quiet=quiet)

    def on_event(kind: str, data: dict) -> None:
        nonlocal header
        if kind == "trace":
            ctx.meta["rlm_trace"] = data["path"]
            if header and not quiet:
                Console(stderr=True).print(safe(header), highlight=False, soft_wrap=True)
            header = None
            return
        view(kind, data)

    return RLM(settings=loaded, on_event=on_event, on_notice=notice)


def context_of(loaded: LoadedSettings, *, file: Path | None = None, text: str | None = None,
               context_dir: Path | None = None) -> ContextLike:
    """The context the flags give (checked by ``RLM.run``); ``-f`` on a folder is refused here, with
    the hint to use ``--context-dir``, since the library accepts a folder as a path."""
    from rlm.core.context import check_file

    if text is not None:
        return text
    if context_dir is not None:
        return Path(context_dir)
    path = Path(file)  # type: ignore[arg-type]
    if path.is_dir():
        check_file(path, max_bytes=loaded.settings.run.max_context_bytes)  # raises: a folder, not a file
    return path


def answer_question(ctx: typer.Context, loaded: LoadedSettings, question: str, *, file: Path | None = None,
                    text: str | None = None, context_dir: Path | None = None, stats: bool = False,
                    json_out: bool = False, trace: Path | None = None, quiet: bool = False) -> RunResult:
    rlm = make_rlm(ctx, loaded, quiet=quiet or (json_out and not sys.stderr.isatty()))
    result = rlm.run(question, context_of(loaded, file=file, text=text, context_dir=context_dir),
                     trace_path=trace)
    if json_out:
        typer.echo(json_line(result.to_dict()))  # exact JSON on one line: U+2028 and controls escaped
    else:
        typer.echo(terminal_text(result.answer or "(no answer)"))
        if result.status != "ok" and not quiet:
            Console(stderr=True).print(safe_line(f"status: {result.status}", style="yellow"), highlight=False)
    say_if_trace_incomplete(result)
    if stats:
        Console(stderr=True).print(stats_table(result))
    return result


def say_if_trace_incomplete(result: RunResult) -> bool:
    """One line on stderr when the run's trace could not be written whole (a full disk); True then."""
    why = trace_failure(result.trace)
    if why is None:
        return False
    print_warning(Console(stderr=True), f"the trace {result.trace} is incomplete: {why} (the run itself went on)")
    return True


def run_demo(ctx: typer.Context, loaded: LoadedSettings, case: DemoCase, *, quiet: bool = False) -> int:
    """Run one generated case; print answer, expected and whether they match; 0 when matched."""
    from rlm.bench.demo import matches

    header = f"demo {case.meta.get('case', case.id)}: {len(case.context):,} characters; question: {case.question}"
    result = make_rlm(ctx, loaded, quiet=quiet, header=header).run(case.question, case.context)
    matched = matches(case, result.answer)
    say_if_trace_incomplete(result)
    typer.echo(f"answer:   {terminal_text(result.answer or '(no answer)')}")
    typer.echo(f"expected: {case.expected}")
    typer.echo(f"matched:  {'yes' if matched else 'no'}  ({result.iterations} iterations, "
               f"{result.sub_calls} sub-calls, {result.duration_s:.1f} s, status {result.status})")
    return 0 if matched else 1


def _questions() -> Iterator[str]:
    """Questions from a prompt with history on a terminal, else one per line of stdin."""
    if sys.stdin.isatty():
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory

        history = Path.home() / ".rlm_history"
        prompt: PromptSession[str] = PromptSession(history=FileHistory(str(history)))
        while True:
            try:
                yield prompt.prompt("rlm> ")
            except EOFError:
                return
    else:
        for line in sys.stdin:
            yield line.rstrip("\n")


def interactive_loop(ctx: typer.Context, loaded: LoadedSettings, *, file: Path | None = None,
                     context_dir: Path | None = None, quiet: bool = False) -> None:
    console = Console(stderr=True)
    totals = {"questions": 0, "iterations": 0, "sub_calls": 0, "seconds": 0.0}
    context = context_of(loaded, file=file, context_dir=context_dir)
    with make_rlm(ctx, loaded, quiet=quiet) as rlm:
        rlm.open_sandbox(context)  # the context is checked before the model server and the sandbox start
        if not quiet:
            console.print("sandbox ready; ask a question (:load FILE, :reset, :stats, :view, :quit)")
        for line in _questions():
            question = line.strip()
            if not question:
                continue
            if question in (":quit", ":q", ":exit"):
                break
            if question == ":stats":
                typer.echo(json.dumps(totals))
                continue
            if question == ":reset":
                rlm.reset()
                rlm.open_sandbox(context)
                typer.echo("(new sandbox: variables cleared)")
                continue
            if question == ":load" or question.startswith(":load "):
                load_context(rlm, loaded, question[len(":load"):].strip(), console)
                continue
            if question == ":view":
                try:
                    typer.echo(view_page(rlm.last_trace))
                except UsageError as exc:  # an unreadable or incomplete trace ends no session
                    print_warning(console, f"no trace page: {exc.message}")
                continue
            result = rlm.run(question, context)
            typer.echo(terminal_text(result.answer or "(no answer)"))
            say_if_trace_incomplete(result)
            totals["questions"] += 1
            totals["iterations"] += result.iterations
            totals["sub_calls"] += result.sub_calls
            totals["seconds"] = round(totals["seconds"] + result.duration_s, 3)


def load_context(rlm: RLM, loaded: LoadedSettings, argument: str, console: Console) -> str | None:
    """``:load FILE`` (or a folder): another context in the session's sandbox, beside the others; its
    variable is printed (``context_1``, ``context_2``, ...).  A bad file is a warning, not the end."""
    if not argument:
        print_warning(console, "give a file or folder to load: :load FILE")
        return None
    path = Path(argument).expanduser()
    try:
        name = rlm.add_context(Path(path) if path.is_dir() else context_of(loaded, file=path))
    except (ContextError, UsageError) as exc:
        print_warning(console, f"could not load {argument}: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
        return None
    typer.echo(terminal_text(f"(loaded {path.name or argument} as {name})"))
    return name


def view_page(trace: Path | str | None) -> str:
    """Write the trace's HTML page next to it; the line to print."""
    if trace is None:
        return "(no run yet: ask a question first)"
    try:
        from rlm.viewer import write_view
    except ImportError as exc:  # pragma: no cover - the viewer ships with rlm
        raise UsageError("the trace viewer is not available in this installation") from exc
    return f"trace page: {write_view(Path(trace))}"

