"""The loop's policy (rlm/core/policy): rules as data, the general profile by default, ablation by id,
every firing in the trace and shown by `rlm trace show` and the viewer.  Scripted model, scripted session."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from rlm.cli.trace_text import render_trace
from rlm.config import Settings, settings_from_mapping
from rlm.core.orchestrator import Orchestrator
from rlm.core.policy import (
    PROFILES,
    AnswerForm,
    CellObservation,
    Observation,
    UnknownRule,
    all_rule_ids,
    make_policy,
)
from rlm.errors import ConfigError, LLMError
from rlm.llm.fake_server import repl
from rlm.llm.scripted import ScriptedClient
from rlm.sandbox import Execution
from rlm.viewer import write_view

ROOT = "root-m"
GENERAL_RULES = {"cell-error", "repeated-cell", "no-code-no-answer", "placeholder-answer", "iteration-limit"}


class Session:
    """A scripted session: ``outputs`` maps a substring of a cell to its Execution; FINAL('x') answers x."""

    def __init__(self, outputs: dict[str, Execution] | None = None, variables: dict | None = None) -> None:
        self.outputs = outputs or {}
        self.variables = variables or {}
        self.executed: list[str] = []
        self.context_path = None

    def open(self):
        return self

    def close(self) -> None:
        pass

    def set_handler(self, handler) -> None:
        pass

    def execute(self, code: str, timeout=None) -> Execution:
        if code == "_rlm_context_info()":
            return Execution(meta={"context_info": {"kind": "str", "total_chars": 100, "n_documents": 1,
                                                    "preview": "Day 1. Calm sea."}})
        self.executed.append(code)
        if code.startswith("FINAL_VAR("):
            name = code[len("FINAL_VAR('"):-2]
            return Execution(final=str(self.variables[name])) if name in self.variables else \
                Execution(error="NameError", error_name="NameError")
        final = re.fullmatch(r"FINAL\((.*)\)", code.strip())
        if final is not None:   # the kernel's FINAL(None) answers with the text None, as repr
            return Execution(final=final.group(1).strip("'\""))
        for needle, ex in self.outputs.items():
            if needle in code:
                return ex
        return Execution(stdout=f"ran {len(code)} chars\n")


def run(tmp_path: Path, replies: list[str], *, session: Session | None = None, question: str = "When?",
        **settings):
    script = list(replies)
    client = ScriptedClient(lambda messages, model: script.pop(0) if script else LLMError("script exhausted"),
                            models=[ROOT])
    values = {"root_model": ROOT, "trace_dir": str(tmp_path / "traces"), **settings}
    session = session or Session()
    orch = Orchestrator(settings_from_mapping(values), client, session_factory=lambda _p: session)
    trace = tmp_path / f"run-{len(list(tmp_path.glob('run-*.jsonl')))}.jsonl"
    result = orch.run(question, None, trace_path=trace)
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    asked = [[m for m in messages if m["role"] == "user"][-1]["content"] for _m, messages in client.calls]
    return result, events, asked, trace


def fired(events: list[dict]) -> list[str]:
    return [e["id"] for e in events if e["kind"] == "rule"]


# ------------------------------------------------------------------------------ profiles and ablation
def test_general_is_the_default_and_holds_only_the_rules_that_help_any_model():
    assert Settings().run.policy == "general"
    assert set(PROFILES["general"].ids()) == GENERAL_RULES | {"budget-limit"}   # tests/unit/test_budgets.py
    assert set(PROFILES["legacy"].ids()) > {"known-fix", "empty-result", "count-for-list", "question-name",
                                           "constant-value", "number-after-word", "csv-field"}


def test_an_unknown_policy_or_rule_id_is_a_configuration_error():
    with pytest.raises(UnknownRule) as info:
        make_policy("nope")
    assert isinstance(info.value, ConfigError) and "general" in (info.value.hint or "")
    with pytest.raises(ConfigError):
        make_policy("general", ablate=["no-such-rule"])
    assert make_policy("general", ablate=["known-fix"]).rules == PROFILES["general"].rules   # a rule of legacy only


def test_a_rule_fires_at_most_its_limit_and_an_ablated_rule_never():
    seen: list[str] = []
    policy = make_policy("legacy", on_fire=lambda f, _o: seen.append(f.rule))
    obs = Observation("List every pair of ids.", 1, 20, has_final=True, answer="12", answer_form=AnswerForm.VALUE)
    assert policy.decide(obs).refusal is not None and policy.decide(obs).refusal is None   # max 1
    assert seen.count("count-for-list") == 1
    ablated = make_policy("legacy", ablate=["count-for-list"])
    assert ablated.decide(obs).refusal is None and not ablated.enabled("count-for-list")


@pytest.mark.parametrize("rule", sorted(GENERAL_RULES))
def test_each_general_rule_fires_on_its_observation_and_not_when_ablated(rule):
    failed = CellObservation(1, "x", "Traceback", error_name="ValueError")
    repeated = CellObservation(1, "x", "7", repeat_of=1, reused=True)
    observations = {
        "cell-error": Observation("Q?", 2, 20, cells=(failed,), has_code=True),
        "repeated-cell": Observation("Q?", 2, 20, cells=(repeated,), has_code=True),
        "no-code-no-answer": Observation("Q?", 2, 20),
        "placeholder-answer": Observation("Q?", 2, 20, has_final=True, answer="None",
                                          answer_form=AnswerForm.PLACEHOLDER),
        "iteration-limit": Observation("Q?", 19, 20, cells=(CellObservation(1, "x", "7"),), has_code=True),
    }
    obs = observations[rule]
    assert rule in [f.rule for f in make_policy("general").decide(obs).firings]
    assert rule not in [f.rule for f in make_policy("general", ablate=[rule]).decide(obs).firings]
    quiet = Observation("Q?", 2, 20, cells=(CellObservation(1, "x", "7"),), has_code=True)
    assert make_policy("general").decide(quiet).firings == []   # a plain turn: no rule fires


# ------------------------------------------------------------------------------ effects in a run
@pytest.mark.parametrize("placeholder", ["FINAL(None)", "FINAL()", "FINAL(your answer)", "FINAL(answer)",
                                         "FINAL(best_value)", "FINAL_VAR(missing)", repl("FINAL(None)")])
def test_a_placeholder_is_never_an_answer(tmp_path, placeholder):
    result, events, asked, _ = run(tmp_path, [placeholder, "FINAL(Day 14)"])
    assert (result.answer, result.status, result.iterations) == ("Day 14", "ok", 2)
    assert fired(events) == ["placeholder-answer"] and "was not taken" in asked[1]
    ended, events, _, _ = run(tmp_path, [placeholder, placeholder], max_iterations=1)
    assert (ended.answer, ended.status) == (None, "no_answer")
    assert events[-1]["kind"] == "run_end" and events[-1]["answer"] is None


def test_a_name_the_run_bound_or_the_output_showed_is_an_answer(tmp_path):
    session = Session({"grep": Execution(stdout="pilot_log_7 holds it\n")}, variables={"best": "Edda"})
    result, _, _, _ = run(tmp_path, [repl("best = 'Edda'"), "FINAL(best)"], session=session)
    assert result.answer == "Edda"                        # FINAL(name) of a bound variable: its value
    shown, _, _, _ = run(tmp_path, [repl("print(grep('pilot'))"), "FINAL(pilot_log_7)"], session=session)
    assert shown.answer == "pilot_log_7"                  # a name the output showed is an answer


def test_the_general_policy_knows_no_question_type(tmp_path):
    """What the legacy rules refuse (a count where a list is asked, a name the question gives) is taken,
    and the first message holds no regular expression or field read from the preview."""
    count, events, asked, _ = run(tmp_path, ["FINAL(12)"], question="List every pair of ids, one per line.")
    assert (count.answer, fired(events)) == ("12", [])
    name, _, _, _ = run(tmp_path, ["FINAL(rotate_token)"], question="Which function calls rotate_token()?")
    assert name.answer == "rotate_token"
    legacy, events, _, _ = run(tmp_path, ["FINAL(12)", "FINAL(12)"], question="List every pair of ids, one per line.",
                               policy="legacy")
    assert (legacy.answer, legacy.iterations) == ("12", 2)
    assert fired(events)[0] == "first-turn-guide" and fired(events).count("count-for-list") == 1


def test_a_failed_and_a_repeated_cell_each_fire_their_rule_with_the_turn_in_the_trace(tmp_path):
    session = Session({"1/0": Execution(stdout="ZeroDivisionError: division by zero\n", error_name="ZeroDivisionError")})
    cell = repl("print(1/0)")
    result, events, asked, _ = run(tmp_path, [cell, cell, "FINAL(3)"], session=session)
    assert result.answer == "3" and session.executed.count("print(1/0)") == 1     # not run twice
    rules = [(e["iteration"], e["id"]) for e in events if e["kind"] == "rule"]
    assert rules == [(1, "cell-error"), (2, "repeated-cell")]
    firings = [e for e in events if e["kind"] == "rule"]
    assert firings[0]["message"] in asked[1] and firings[1]["message"] in asked[2]   # each said in the next turn
    ablated, events, _, _ = run(tmp_path, [cell, cell, "FINAL(3)"], session=Session(session.outputs),
                                ablate=["cell-error"])
    assert fired(events) == ["repeated-cell"]


def test_without_the_iteration_limit_rule_the_run_ends_at_the_limit_without_a_last_request(tmp_path):
    result, events, asked, _ = run(tmp_path, [repl("x = 1"), "FINAL(never asked)"], max_iterations=1,
                                   ablate=["iteration-limit"])
    assert (result.answer, result.status, len(asked)) == (None, "no_answer", 1)


def test_rule_firings_show_in_trace_show_and_the_viewer(tmp_path):
    _, _, _, trace = run(tmp_path, ["FINAL(None)", "FINAL(7)"])
    out = io.StringIO()
    render_trace([json.loads(line) for line in trace.read_text().splitlines()], Console(file=out, width=200))
    assert "rule: placeholder-answer:" in out.getvalue()
    page = write_view(trace, tmp_path / "page.html").read_text()
    assert "rule placeholder-answer:" in page


def test_every_rule_id_is_documented():
    text = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text()
    assert all(f"`{rid}`" in text for rid in all_rule_ids())


def test_a_snake_case_value_a_cell_computed_is_an_answer(tmp_path):
    """Only a name written as the answer can be unbound; a value the kernel gave never is."""
    session = Session({"best =": Execution(stdout="")}, variables={"best": "load_rows_v2"})
    by_cell, _, _, _ = run(tmp_path, [repl("FINAL('load_rows_v2')")])
    by_var, _, _, _ = run(tmp_path, [repl("best = pick()"), "FINAL_VAR(best)"], session=session)
    assert by_cell.answer == by_var.answer == "load_rows_v2"
