"""The ``general`` profile: the few rules that help any model on any material.

* ``cell-error``: a cell that ran for the first time failed or ran out of time;
* ``repeated-cell``: a block repeats earlier code (not run again, or run and printed the same);
* ``no-code-no-answer``: a reply with neither a code block nor FINAL;
* ``placeholder-answer``: an answer that is a stand-in, empty, or a name the run never bound (never
  taken, whatever the rules: this rule only says why);
* ``iteration-limit``: the last turn says so, and at the limit the model is asked once more;
* ``budget-limit``: a budget (time, tokens, cost) is reached: the model is asked once more.

None of them reads the question's words or the context's format.
"""

from __future__ import annotations

from rlm.core.policy.observation import AnswerForm, CellObservation, Observation
from rlm.core.policy.rules import Profile, Rule


def _which(cell: CellObservation, n_cells: int) -> str:
    return f"Block {cell.block}" if n_cells > 1 else "Your code"


def _cell_error(obs: Observation) -> str:
    parts = []
    for cell in obs.failed:
        which = _which(cell, len(obs.cells))
        if cell.timed_out:
            parts.append(f"{which} ran out of time: do less in one block (a part of the text, one pass over it, "
                         "fewer sub-calls).")
        else:
            parts.append(f"{which} failed with {cell.error_name}: the traceback shows the line; fix it, or find "
                         "another way, before you answer.")
    return " ".join(parts)


def _repeated_cell(obs: Observation) -> str:
    parts = []
    for cell in obs.repeated:
        which = _which(cell, len(obs.cells))
        done = ("so it was not run again: its output is the one shown then" if cell.reused
                else "and it printed the same output again")
        parts.append(f"{which} is the code of turn {cell.repeat_of} again, {done}. Sending it again changes "
                     "nothing: answer from what the outputs show with FINAL(...), or write different code.")
    return " ".join(parts)


def _placeholder(obs: Observation) -> str:
    shown = (obs.answer or "").strip()[:80]
    if obs.answer_form is AnswerForm.EMPTY:
        return ("The answer was empty, so it was not taken. If the code found nothing, look at a few passages "
                "of the text first, then search again.")
    if obs.answer_form is AnswerForm.UNBOUND:
        return (f"{obs.answer_source or shown} was not taken: `{shown}` names a value the run never made. Build "
                "it in code first, or write the answer itself inside FINAL(...).")
    return (f"{obs.answer_source or shown} was not taken: `{shown}` stands for an answer, it is not one. Write "
            "the answer itself inside the parentheses, as the output shows it.")


def _no_code_no_answer(_obs: Observation) -> str:
    return ("Your reply had no ```repl block and no FINAL(...). The context is reachable only through code: "
            "write a ```repl block to go on, or give the answer as FINAL(...).")


def _last_turn(_obs: Observation) -> str:
    return "This is your last turn: reply with FINAL(...) holding the answer."


CELL_ERROR = Rule("cell-error", lambda o: bool(o.failed), _cell_error, max_firings=8,
                  doc="a cell that ran for the first time failed or timed out: fix that line")
REPEATED_CELL = Rule("repeated-cell", lambda o: bool(o.repeated), _repeated_cell, max_firings=8,
                     doc="a block repeats earlier code: answer from its output or write different code")
NO_CODE_NO_ANSWER = Rule("no-code-no-answer", lambda o: not o.has_code and not o.has_final, _no_code_no_answer,
                         slot="ending", doc="a reply with neither code nor FINAL: asked for one of them")
PLACEHOLDER_ANSWER = Rule("placeholder-answer",
                          lambda o: o.answer_form in (AnswerForm.PLACEHOLDER, AnswerForm.EMPTY, AnswerForm.UNBOUND),
                          _placeholder, slot="refusal",
                          doc="an answer that is a stand-in, empty or an unbound name: not taken, told why")
LAST_TURN = Rule("iteration-limit", lambda o: o.turns_left == 1, _last_turn,
                 slot="ending", doc="the last turn says so; at the limit the model is asked once more")
AT_LIMIT = Rule("iteration-limit", lambda o: not o.extra.get("budget"), lambda _o: "asked once more for the answer",
                stage="limit")
BUDGET_LIMIT = Rule("budget-limit", lambda o: bool(o.extra.get("budget")),
                    lambda o: f"{o.extra.get('budget')}: asked once more for the answer", stage="limit",
                    doc="a budget (max_time_s, max_tokens, max_cost_usd) is reached: the model is asked once more")

RULES = (CELL_ERROR, REPEATED_CELL, NO_CODE_NO_ANSWER, PLACEHOLDER_ANSWER, LAST_TURN, AT_LIMIT, BUDGET_LIMIT)
GENERAL = Profile("general", RULES, doc="the rules that help any model (the default)")
