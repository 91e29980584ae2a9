"""Options shared by every command module of the CLI (one definition each)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML settings file (default: configs/default.yaml or $RLM_CONFIG).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible server URL (default: Ollama at http://localhost:11434/v1).")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Root model name.")]
SubModelOpt = Annotated[Optional[str], typer.Option("--sub-model", help="Model for llm_query (default: the root model).")]
MaxIterOpt = Annotated[Optional[int], typer.Option("--max-iterations", help="Iteration limit (default 20).")]
NoSubOpt = Annotated[bool, typer.Option("--no-subcalls", help="Disable llm_query and friends.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="Show no progress.")]
UnsafeSandboxOpt = Annotated[bool, typer.Option(
    "--unsafe-sandbox", help="Allow settings that weaken the sandbox (network_mode, user, cap_drop, seccomp, "
    "no_new_privileges, read_only_rootfs, a runtime chosen by a file); every run lists them.")]


FLAG_NAMES = {"base_url": "--base-url", "root_model": "--model", "sub_model": "--sub-model",
              "max_iterations": "--max-iterations", "enable_sub_calls": "--no-subcalls",
              "max_time_s": "--max-time", "max_tokens": "--max-tokens", "max_cost_usd": "--max-cost"}


def model_flags(base_url, model, sub_model, max_iterations, no_subcalls) -> dict:
    """The shared model options as setting keys (None: not given)."""
    return {"base_url": base_url, "root_model": model, "sub_model": sub_model, "max_iterations": max_iterations,
            "enable_sub_calls": False if no_subcalls else None}


def load_cli_settings(ctx: typer.Context, config: Path | None, debug: bool, **cli):
    """The one place the CLI loads settings: YAML, .env, environment, then the flags given.

    ``--unsafe-sandbox`` is read from the command's own parameters: a command that has the option
    refuses weakening settings without it; a command without it runs no sandbox, and such values are
    dropped with a notice.  Notices (untrusted files ignored, aliases read, the sandbox weakened) are
    printed here, one line each, on stderr.
    """
    from rlm.config import load_settings

    values = {k: v for k, v in cli.items() if v is not None}
    if debug:
        values["debug"] = True
    ctx.meta["rlm_debug"] = debug
    unsafe = bool(ctx.params["unsafe_sandbox"]) if "unsafe_sandbox" in ctx.params else None
    show_library_warnings()
    loaded = load_settings(config_file=config, cli=values, cli_flags={k: FLAG_NAMES.get(k, "--" + k) for k in values},
                           unsafe_sandbox=unsafe, warn=False)
    ctx.meta["rlm_debug"] = loaded.settings.run.debug
    ctx.obj = loaded
    for line in loaded.notices:
        print_notice(line)
    if loaded.weakened_notice:
        print_notice(loaded.weakened_notice, warning=True)
    if loaded.settings.run.debug:
        import logging
        import signal

        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("rlm.cli").debug(
            "Ctrl-C cannot reach rlm: SIGINT is ignored (started as a background job?); SIGTERM stops it cleanly"
            if signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            else "Ctrl-C reaches rlm: SIGINT stops the run cleanly (exit 130)")
    return loaded


def print_notice(text: str, *, warning: bool = False) -> None:
    """One line on stderr, control characters stripped (paths and values may come from files)."""
    from rich.console import Console
    from rich.text import Text

    from rlm.cli.views import safe_line

    label = Text("warning: ", style="bold yellow") if warning else Text("note: ", style="yellow")
    Console(stderr=True).print(label + safe_line(text), highlight=False, soft_wrap=True)


def show_library_warnings() -> None:
    """Settings warnings the library issues later (e.g. a batch spec that weakens the sandbox under
    --unsafe-sandbox) print as one ``warning:`` line, not Python's file:line format."""
    import warnings

    from rlm.config import RLMConfigWarning

    if getattr(warnings.showwarning, "_rlm", False):
        return
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if isinstance(category, type) and issubclass(category, RLMConfigWarning):
            print_notice(str(message), warning=True)
        else:
            original(message, category, filename, lineno, file, line)

    show._rlm = True  # type: ignore[attr-defined]
    warnings.showwarning = show
    warnings.simplefilter("always", RLMConfigWarning)


MAX_QUESTION_BYTES = 16 * 1024 * 1024


def read_question(question: str | None, question_file: Path | None) -> str:
    """The question from ``-q TEXT``, ``-q @FILE``, ``-q -`` (stdin) or ``--question-file FILE``."""
    import sys

    from rlm.errors import UsageError

    if (question is None) == (question_file is None):
        raise UsageError("give the question once: -q TEXT, -q @FILE, -q - (stdin) or --question-file FILE",
                         hint="e.g. rlm query -q 'What is the main topic?' -f report.txt")
    if question_file is None and question is not None and question.startswith("@") and len(question) > 1:
        question_file = Path(question[1:])
    if question_file is not None:
        try:
            if not question_file.is_file():
                raise UsageError(f"the question file {question_file} is not a regular file",
                                 hint="give a text file with --question-file or -q @FILE")
            data = question_file.read_bytes()[:MAX_QUESTION_BYTES + 1]
        except OSError as exc:
            raise UsageError(f"cannot read the question file {question_file}: {exc.strerror or exc}") from exc
    elif question == "-":
        data = sys.stdin.buffer.read(MAX_QUESTION_BYTES + 1)
    else:
        return _non_empty(question or "")
    if len(data) > MAX_QUESTION_BYTES:
        raise UsageError(f"the question is over {MAX_QUESTION_BYTES // (1024 * 1024)} MB",
                         hint="put the material in the context (-f) and ask about it")
    try:
        return _non_empty(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError("the question is not UTF-8 text", hint="save it as UTF-8") from exc


def _non_empty(question: str) -> str:
    from rlm.errors import UsageError

    if not question.strip():
        raise UsageError("the question is empty", hint="give one with -q 'your question' (or -q @FILE, -q -)")
    return question
