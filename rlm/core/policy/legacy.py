"""The ``legacy`` profile (opt-in, ``--policy legacy``): the loop's rules before the general policy,
kept for the ablation on the dev split (docs/policy.md).  Several read the question's words or
guess the context's format (a constant's value, the number after a word, comma-separated fields,
a count where a list is asked, a name the question gives); they stay out of ``general`` unless the
ablation shows they help.

* ``first-turn-guide``: the first message names a way to start for each kind of question;
* ``constant-value``: a question about an upper-case constant over a preview of code is told to run
  the code's assignments;
* ``number-after-word`` / ``csv-field``: the first message names the regular expression or field
  that takes the question's value from the preview's lines;
* ``echoed-output``: a block that copies an output is not run, and the model is told so;
* ``known-fix``: a first failure small models do not mend alone gets its fix;
* ``empty-result``: a cell that found nothing is shown lines its grep returns (and which of its
  regular expressions match none of them, computed in the sandbox);
* ``repeated-cell``: as in ``general``, with advice chosen from what the repeated cell did;
* ``count-for-list`` / ``question-name``: an answer that is a count where the question asks for a
  list, or only a name the question gives, is refused once;
* ``turn-endings``: the turn ends with one of several instructions (the variable built, a failure,
  the answer asked for outright);
* ``no-code-no-answer``, ``placeholder-answer``, ``iteration-limit``: as in ``general``.
"""

from __future__ import annotations

from rlm.core import hints
from rlm.core.answers import count_for_list, repeats_question_name
from rlm.core.policy import general
from rlm.core.policy.observation import AnswerForm, Observation
from rlm.core.policy.rules import Profile, Rule


def _guide(_obs: Observation) -> str:
    return ("Reply with a single ```repl block. For a fact: `grep` for a distinctive word of the question and "
            "read the lines around what it finds. For the file, function or section a line is in: print "
            "`h.before(pattern)` next to each line. For the value of a constant in code: run the code's "
            "assignments. To count, compute or list: code over all the matching lines.")


def _constant(obs: Observation) -> str:
    name = hints.constant_name(obs.question, obs.preview) or ""
    return (f"Reply with a single ```repl block. `{name}` is a constant of the code: run the code's assignment "
            f"lines (`exec` each line that assigns an upper-case name, a few passes) and print the value of `{name}`.")


def _number(obs: Observation) -> str:
    found = hints.number_regex(obs.question, obs.preview)
    assert found is not None
    return f"The preview writes `{found[0]}`: `re.search(r\"{found[1]}\", line)` takes that number from a line."


def _csv(obs: Observation) -> str:
    field = hints.csv_field(obs.question, obs.preview)
    assert field is not None
    return (f"The preview's lines are comma-separated fields, `{field[0]}`: `line.split(\",\")[{field[1]}]` is the "
            f"{field[2]} of a line.")


def _echo(obs: Observation) -> str:
    return " ".join(hints.echo_notice(c.block, len(obs.cells)) for c in obs.cells if c.echoed)


def _known_fixes(obs: Observation) -> list[str]:
    fixes = (hints.known_fix(c.error_name, c.output, obs.question) for c in obs.failed if c.error_name)
    return [f for f in fixes if f]


def _empty_cells(obs: Observation) -> list[str]:
    out = []
    for cell in obs.cells:
        if cell.first_run and not cell.failed:
            hint = hints.cell_hint(cell.code, cell.output, None, cell.samples, obs.question, sampled=cell.sampled,
                                   preview=obs.preview, unmatched=cell.unmatched)
            if hint:
                out.append(hint)
    return out


def _repeat(obs: Observation) -> str:
    notices = []
    for cell in obs.repeated:
        instruction = hints.repeat_instruction(error_name=cell.error_name, output=cell.output,
                                               timed_out=cell.timed_out, code=cell.code, question=obs.question,
                                               built=cell.built)
        notices.append(hints.repeat_notice(cell.block, len(obs.cells), cell.repeat_of or 0, reused=cell.reused,
                                           instruction=instruction))
    return "\n\n".join(notices)


def _count_for_list(obs: Observation) -> str:
    variable = obs.built
    where = (f"If `{variable}` holds the list, write FINAL_VAR({variable}); else build the list in a variable and "
             "answer with FINAL_VAR and its name." if variable else
             "Build the list in a variable, one item per line, and answer with FINAL_VAR and its name.")
    return (f"FINAL({(obs.answer or '').strip()}) was not taken: the question asks for the list itself, every "
            f"item, not how many there are. {where}")


def _question_name(obs: Observation) -> str:
    name = (obs.answer or "").strip()
    return (f"FINAL({name}) was not taken. The answer is not `{name}`: that is the name the question asks "
            "about. Which other name or value in this output answers the question?")


def _ending(obs: Observation) -> str:
    remaining = obs.turns_left
    if obs.repeated:
        return (f"Do what is said above: change the code, or answer with FINAL(...) if the output already shows "
                f"the answer. Never send the same code again. {remaining} turns left.")
    if obs.extra.get("seen_before"):
        return (f"This output is the same as before: running that code again will not help. Answer now with "
                "FINAL(...) holding the answer the output shows, or, if it does not show it, write different code. "
                f"{remaining} turns left.")
    search = ("`grep` for another word of the question, or compute the answer with code over all the matching "
              f"lines. {remaining} turns left.")
    if obs.built:
        return (f"Read the output above. If it states the answer to the question, reply with only FINAL(the "
                "answer) and no code; when the answer is a list or long text your code built in a variable, "
                f"FINAL_VAR({obs.built}). If it does not, write a new ```repl block: {search}")
    if any(c.failed for c in obs.cells):
        return (f"Read the output above. If it states the answer to the question, reply with only FINAL(the "
                f"answer) and no code. If it does not, write a new ```repl block: {search}")
    return (f"What is the answer, according to this output? Reply with only FINAL(the answer). If the output "
            f"does not hold it, write a new ```repl block instead: {search}")


def _value(obs: Observation) -> bool:
    return obs.answer_form is AnswerForm.VALUE and obs.answer is not None


RULES = (
    Rule("first-turn-guide", lambda _o: True, _guide, slot="ending", stage="first",
         doc="the first message names a way to start for each kind of question"),
    Rule("constant-value", lambda o: hints.constant_name(o.question, o.preview) is not None, _constant,
         slot="ending", stage="first", doc="a constant's value asked over code: run the code's assignments"),
    Rule("number-after-word", lambda o: hints.number_regex(o.question, o.preview) is not None
         and hints.constant_name(o.question, o.preview) is None, _number, stage="first",
         doc="the regular expression that takes the number after a word of the question"),
    Rule("csv-field", lambda o: hints.number_regex(o.question, o.preview) is None
         and hints.constant_name(o.question, o.preview) is None
         and hints.csv_field(o.question, o.preview) is not None, _csv, stage="first",
         doc="the comma-separated field that holds a word of the question"),
    Rule("echoed-output", lambda o: any(c.echoed for c in o.cells), _echo,
         doc="a block that copies an output is not run"),
    Rule("known-fix", lambda o: bool(_known_fixes(o)), lambda o: " ".join(_known_fixes(o)),
         doc="the fix of a first failure small models do not mend alone"),
    Rule("empty-result", lambda o: bool(_empty_cells(o)), lambda o: "\n\n".join(_empty_cells(o)),
         doc="a cell that found nothing is shown lines its grep returns"),
    Rule("repeated-cell", lambda o: bool(o.repeated), _repeat, doc="as in general, advice from what the cell did"),
    general.NO_CODE_NO_ANSWER,
    general.PLACEHOLDER_ANSWER,
    Rule("count-for-list", lambda o: _value(o) and count_for_list(o.answer or "", o.question), _count_for_list,
         slot="refusal", max_firings=1, doc="a count where the question asks for a list: refused once"),
    Rule("question-name", lambda o: _value(o) and repeats_question_name(o.answer or "", o.question),
         _question_name, slot="refusal", max_firings=1, reread=True,
         doc="an answer that only repeats a name the question gives: refused once"),
    Rule("turn-endings", lambda o: o.turns_left > 1 and (o.has_code or o.has_final), _ending, slot="ending",
         doc="the turn's closing instruction chosen from what the cells did"),
    general.LAST_TURN,
    general.AT_LIMIT,
    general.BUDGET_LIMIT,
)
LEGACY = Profile("legacy", RULES, doc="the loop's rules before the general policy (opt-in, for the ablation)")
