"""Answer attacks: huge or forged FINAL, state floods, huge errors, escape sequences."""

from __future__ import annotations

import json

from rlm.core.parsing import sanitize_for_terminal
from rlm.sandbox.execution import Execution
from rlm.security.model import attack
from rlm.security.runner import CheckContext
from rlm.security.verify import _CONTROL_CHARS


# --------------------------------------------------------------------------- the answer
def _verify_final_cap(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    limit = ctx.session.settings.final_limit_chars
    final = execution.final or ""
    ok = 0 < len(final) <= limit + 200 and "truncated" in final[-100:]
    return ok, f"FINAL of 20M characters kept as {len(final)} (final_limit_chars {limit})"


attack("answer_huge_final", "answer", "a huge FINAL is cut at final_limit_chars", r"""
    FINAL("A" * 20_000_000)
""", _verify_final_cap)


def _verify_forged_state(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    limit = ctx.session.settings.final_limit_chars
    final = execution.final or ""
    ok = len(final) <= limit + 200
    return ok, f"forged state message: final of {len(final)} characters reached the host (limit {limit})"


attack("answer_forged_final", "answer", "the host caps FINAL itself (a forged state message)", r"""
    from IPython.display import publish_display_data
    publish_display_data({"application/vnd.rlm.state+json": {"final": "F" * 5_000_000}})
""", _verify_forged_state)


def _verify_state_flood(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    size = len(json.dumps(execution.meta))
    limit = ctx.session.settings.output_limit_bytes
    ok = size <= limit
    return ok, f"forged state keys: {len(execution.meta)} keys, {size} bytes kept on the host (cap {limit})"


attack("answer_state_flood", "answer", "forged state messages cannot grow host memory (meta capped)", r"""
    from IPython.display import publish_display_data
    for i in range(12):
        publish_display_data({"application/vnd.rlm.state+json": {f"key{i}": "M" * 2_000_000}})
""", _verify_state_flood)


def _verify_error_cap(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    limit = ctx.session.settings.output_limit_bytes
    size = len((execution.error or "").encode())
    ok = execution.error_name == "ValueError" and size <= limit + 1024
    return ok, f"exception message of 5 MB: error text of {size} bytes reached the host (cap {limit})"


attack("answer_huge_error", "answer", "a huge exception message is capped like output", r"""
    raise ValueError("E" * 5_000_000)
""", _verify_error_cap)


def _verify_ansi_output(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    raw = execution.output
    clean = sanitize_for_terminal(raw)
    ok = "\x1b" in raw and not _CONTROL_CHARS.search(clean) and all(w in clean for w in ("red", "bell", "boom"))
    return ok, (f"{sum(raw.count(c) for c in chr(27) + chr(7) + chr(13) + chr(0x9b))} control characters "
                f"arrive as data; none left after sanitize_for_terminal" if ok else f"sanitised: {clean[:80]!r}")


attack("answer_ansi_output", "answer", "escape sequences in output/errors are removed before printing", r"""
    import sys
    from IPython.display import display
    E = "\x1b"
    print(E + "[2J" + E + "[31mred" + E + "]0;pwned title\x07 over\rwrite \x9b31m" + E + "P1;2|x" + E + "\\")
    sys.stderr.write(E + "[1;1H\x08\x08\x07bell\n")
    display({"text/plain": E + "]52;c;Y2xpcGJvYXJk\x07clip"}, raw=True)
    raise RuntimeError(E + "[41mboom" + E + "]8;;http://evil.example\x07link" + E + "]8;;\x07")
""", _verify_ansi_output)


def _verify_ansi_final(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    final = execution.final or ""
    clean = sanitize_for_terminal(final)
    ok = "\x1b" in final and not _CONTROL_CHARS.search(clean) and "answer 42" in clean
    return ok, f"FINAL with escapes sanitised to {clean!r}"


attack("answer_ansi_final", "answer", "escape sequences in FINAL are removed before printing", r"""
    FINAL("\x1b]0;pwned\x07\x1b[2J\x1b[1;1Hanswer 42\r\x1b[1A\x1b[Kfake line\x9b2J")
""", _verify_ansi_final)


def _verify_final_var_missing(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    ok = (execution.error_name == "NameError" and execution.final is None
          and "no_such_variable" in (execution.error or ""))
    return ok, f"error as data: {execution.error_name}; final {execution.final!r}"


attack("answer_final_var_missing", "answer", "FINAL_VAR of a missing variable: NameError as data, no answer",
       r"""
    FINAL_VAR("no_such_variable")
""", _verify_final_var_missing)
