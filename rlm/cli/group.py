"""The exit codes of ``rlm`` and the one place failures become them (:class:`RLMGroup`).

A leaf of :mod:`rlm.cli`: the app and every command module import it, it imports none of them.

    0 ok · 1 other failure · 2 usage/config/context · 3 sandbox/Docker · 4 model server ·
    5 no answer (the run ended without one: status no_answer, the trace kept) · 6 time_limit ·
    7 token_limit · 8 cost_limit (a budget ended the run) · 130 interrupted
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from rlm.errors import LLMError, RLMError, SandboxError, UsageError

EXIT_OTHER, EXIT_USAGE, EXIT_SANDBOX, EXIT_MODEL, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
EXIT_NO_ANSWER = 5   # the run ended without an answer (status no_answer); not an error of rlm
# a budget ended the run (its answer, if any, is printed): rlm.core.budget
EXIT_FOR_STATUS = {"no_answer": EXIT_NO_ANSWER, "time_limit": 6, "token_limit": 7, "cost_limit": 8}


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, SandboxError):
        return EXIT_SANDBOX
    if isinstance(exc, LLMError):
        return EXIT_MODEL
    return EXIT_OTHER


class RLMGroup(TyperGroup):
    """Maps every failure of every command to a short message, a hint and an exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (Exit, Abort, TyperException):
            raise
        except (RLMError, KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - the one place errors become exit codes
            debug = bool(ctx.meta.get("rlm_debug")) or "--debug" in sys.argv
            console = Console(stderr=True)
            if debug:
                console.print_exception(show_locals=False)
            from rlm.cli.views import print_error

            trace = ctx.meta.get("rlm_trace")
            kept = f"the partial trace is kept at {trace}" if trace and Path(trace).exists() else None
            if isinstance(exc, KeyboardInterrupt):
                print_error(console, "interrupted", f"the partial trace is kept at {trace}" if trace else None)
            elif isinstance(exc, RLMError):
                print_error(console, exc.message, "; ".join(h for h in (exc.hint, kept) if h) or None)
            else:
                print_error(console, f"{exc.__class__.__name__}: {exc}",
                            "this is a bug in rlm; run again with --debug and report the traceback")
            raise typer.Exit(exit_code_for(exc)) from None
