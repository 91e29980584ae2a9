"""The RLM loop with a scripted model and a scripted sandbox session (no Docker, no network)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import pytest

from rlm.config import settings_from_mapping
from rlm.core import prompts
from rlm.core.orchestrator import Orchestrator
from rlm.core.result import RunResult
from rlm.core.text import json_line
from rlm.errors import LLMError
from rlm.llm.fake_server import repl
from rlm.llm.scripted import ScriptedClient
from rlm.sandbox import Execution
from rlm.sandbox.bridge import BridgeRefusal

ROOT, SUB = "root-m", "sub-m"
MARKER = "CTX-PREVIEW-MARKER-7f3a9c"
CONTEXT_INFO = {"kind": "str", "total_chars": 123_456, "n_documents": 1,
                "preview": f"{MARKER} the first words of the context"}
_FINAL_CALL = re.compile(r"(?<![\w])FINAL\((['\"])(.*?)\1\)")
_FINAL_VAR_CALL = re.compile(r"FINAL_VAR\((['\"])(\w+)\1\)")


class FakeSession:
    """Stands in for SandboxSession: records cells and answers them from simple rules.

    * ``_rlm_context_info()`` publishes CONTEXT_INFO;
    * ``FINAL('x')`` in a cell sets ``final``; ``FINAL_VAR('name')`` resolves ``variables``
      or fails with a NameError;
    * ``llm_query`` / ``llm_query_batched`` / ``rlm_query`` in a cell call the attached handler
      like the bridge would (a refusal becomes a SubCallError in the cell);
    * ``rules`` maps a substring of the code to a ready Execution.
    """

    def __init__(self, *, variables: dict | None = None, rules: dict[str, Execution] | None = None,
                 context_path: Path | None = None, on_execute: Callable[[str], None] | None = None) -> None:
        self.variables = dict(variables or {})
        self.rules = dict(rules or {})
        self.context_path = context_path
        self.on_execute = on_execute
        self.executed: list[str] = []
        self.timeouts: list[float | None] = []
        self.handler = None
        self.handlers_seen: list = []
        self.opened = 0
        self.closed = 0

    def open(self) -> "FakeSession":
        self.opened += 1
        return self

    def close(self) -> None:
        self.closed += 1

    def set_handler(self, handler) -> None:
        self.handler = handler
        self.handlers_seen.append(handler)

    def _call(self, request: dict) -> dict | str:
        try:
            return self.handler(request)
        except BridgeRefusal as exc:
            return f"SubCallError: {exc}"

    def execute(self, code: str, timeout: float | None = None) -> Execution:
        if code == "_rlm_context_info()":
            return Execution(meta={"context_info": dict(CONTEXT_INFO)})
        self.executed.append(code)
        self.timeouts.append(timeout)
        if self.on_execute is not None:
            self.on_execute(code)
        for needle, ex in self.rules.items():
            if needle in code:
                return ex
        out = []
        if "llm_query_batched" in code:
            reply = self._call({"op": "llm_query_batched", "prompts": ["p1", "p2"]})
            if isinstance(reply, str):
                return Execution(error=reply, error_name="SubCallError")
            out.append(repr(reply["texts"]))
        elif "llm_query" in code:
            reply = self._call({"op": "llm_query", "prompt": "a sub question"})
            if isinstance(reply, str):
                return Execution(error=reply, error_name="SubCallError")
            out.append(reply["text"])
        elif "rlm_query" in code:
            reply = self._call({"op": "rlm_query", "prompt": "a sub problem", "context": "child text"})
            if isinstance(reply, str):
                return Execution(error=reply, error_name="SubCallError")
            out.append(reply["text"])
        m = _FINAL_VAR_CALL.search(code)
        if m:
            name = m.group(2)
            if name not in self.variables:
                return Execution(error=f"NameError: FINAL_VAR: no variable named {name!r}", error_name="NameError")
            return Execution(final=str(self.variables[name]))
        m = _FINAL_CALL.search(code)
        if m:
            return Execution(stdout="\n".join(out), final=m.group(2))
        return Execution(stdout="\n".join(out + [f"ran {len(code)} chars"]) + "\n")


def make_settings(tmp_path: Path, **overrides) -> object:
    return settings_from_mapping({"root_model": ROOT, "sub_model": SUB, "trace_dir": str(tmp_path / "traces"),
                                  "policy": "legacy", **overrides})


def scripted(root_replies: list, sub_reply: str | Callable[[str], str] = "sub says hi") -> ScriptedClient:
    """Root replies in order; sub-model calls answered by ``sub_reply``."""
    replies = list(root_replies)

    def respond(messages, model):
        if model == ROOT:
            if not replies:
                return LLMError("script exhausted")
            return replies.pop(0)
        prompt = messages[-1]["content"]
        return sub_reply(prompt) if callable(sub_reply) else sub_reply

    return ScriptedClient(respond, models=[ROOT, SUB])


def run(tmp_path: Path, replies: list, *, session: FakeSession | None = None, events: list | None = None,
        sub_reply: str | Callable[[str], str] = "sub says hi", question: str = "What is the code?",
        **overrides) -> tuple[RunResult, ScriptedClient,
                                                                                     FakeSession, list[dict]]:
    session = session or FakeSession()
    client = scripted(replies, sub_reply)
    progress = (lambda kind, data: events.append((kind, data))) if events is not None else None
    orch = Orchestrator(make_settings(tmp_path, **overrides), client, progress=progress,
                        session_factory=lambda path: session)
    trace = tmp_path / "run.jsonl"
    result = orch.run(question, None, trace_path=trace)
    return result, client, session, read_events(trace)


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def root_calls(client: ScriptedClient) -> list[list[dict]]:
    return [messages for model, messages in client.calls if model == ROOT]


def last_user(messages: list[dict]) -> str:
    return [m for m in messages if m["role"] == "user"][-1]["content"]


def fired(events: list[dict], rule: str) -> list[dict]:
    """The trace's firings of the policy rule ``rule``."""
    return [e for e in events if e["kind"] == "rule" and e["id"] == rule]


# ------------------------------------------------------------------------------ answers
def test_final_in_text_ends_the_run(tmp_path):
    result, client, session, _ = run(tmp_path, ["The answer is FINAL(42)"])
    assert (result.answer, result.status, result.iterations) == ("42", "ok", 1)
    assert session.executed == []
    assert len(root_calls(client)) == 1


def test_final_called_in_code_ends_after_that_cell_and_later_blocks_do_not_run(tmp_path):
    reply = repl("a = 1") + "\n" + repl("FINAL('from code')") + "\n" + repl("b = 2") + "\nFINAL(from text)"
    result, client, session, events = run(tmp_path, [reply])
    assert result.answer == "from code"
    assert result.status == "ok"
    assert session.executed == ["a = 1", "FINAL('from code')"]
    assert [e["code"] for e in events if e["kind"] == "cell"] == ["a = 1", "FINAL('from code')"]
    assert len(root_calls(client)) == 1


def test_code_and_final_in_one_reply_runs_the_code_first(tmp_path):
    order: list[str] = []
    session = FakeSession(on_execute=lambda code: order.append(f"cell:{code}"))
    reply = "Let me save it.\n" + repl("saved = 1") + "\nFINAL(done)"
    result, _, _, events = run(tmp_path, [reply], session=session)
    assert result.answer == "done"
    assert order == ["cell:saved = 1"]
    kinds = [e["kind"] for e in events]
    assert kinds.index("cell") < kinds.index("run_end")


def test_final_var_is_resolved_through_the_session(tmp_path):
    session = FakeSession(variables={"result": "forty-two"})
    result, _, session, _ = run(tmp_path, ["FINAL_VAR(result)"], session=session)
    assert result.answer == "forty-two"
    assert result.status == "ok"
    assert session.executed == ["FINAL_VAR('result')"]


def test_final_naming_a_variable_the_code_built_answers_with_its_value(tmp_path):
    session = FakeSession(variables={"answer": "(1, 2)\n(1, 3)", "code": "5"})
    result, _, session, events = run(tmp_path, [repl("answer = '\\n'.join(pairs)"), "FINAL(answer)"], session=session)
    assert result.answer == "(1, 2)\n(1, 3)" and session.executed[-1] == "FINAL_VAR('answer')"
    assert any("FINAL(answer) names a variable the code built" in e.get("text", "") for e in events)
    never_assigned, _, _, _ = run(tmp_path, ["FINAL(answer)", "FINAL(7)"], session=FakeSession(variables={"answer": "x"}))
    assert (never_assigned.answer, never_assigned.iterations) == ("7", 2)   # a stand-in, never the answer
    asked, _, _, _ = run(tmp_path, [repl("code = 5"), "FINAL(code)"], session=FakeSession(variables={"code": "5"}))
    assert asked.answer == "code"                         # a word of the question ("What is the code?") is an answer


def test_missing_final_var_is_explained_and_the_loop_continues(tmp_path):
    session = FakeSession(variables={"real": "7"})
    result, client, _, events = run(tmp_path, ["FINAL_VAR(missing)", "FINAL_VAR(real)"], session=session)
    assert (result.answer, result.status, result.iterations) == ("7", "ok", 2)
    firing = fired(events, "placeholder-answer")
    assert len(firing) == 1 and firing[0]["message"] in last_user(root_calls(client)[1])


def test_reply_with_neither_code_nor_final_gets_a_nudge(tmp_path):
    result, client, session, events = run(tmp_path, ["Hmm, I should think about this.", "FINAL(ok)"])
    assert result.answer == "ok"
    assert result.iterations == 2
    assert session.executed == []
    firing = fired(events, "no-code-no-answer")
    assert len(firing) == 1 and last_user(root_calls(client)[1]) == firing[0]["message"]


def test_non_code_fence_is_not_run_and_gets_a_nudge(tmp_path):
    result, client, session, events = run(tmp_path, ["```text\nprint('no')\n```", "FINAL(ok)"])
    assert session.executed == [] and result.answer == "ok"
    assert len(fired(events, "no-code-no-answer")) == 1


def test_python_fence_is_run_like_repl(tmp_path):
    result, _, session, _ = run(tmp_path, ["```python\nx = 3\n```", "FINAL(3)"])
    assert session.executed == ["x = 3"]


def test_rebound_context_is_reported_to_the_model(tmp_path):
    session = FakeSession(rules={"context = ": Execution(stdout="", context_restored=True)})
    result, client, _, events = run(tmp_path, [repl("context = 'mine'"), "FINAL(ok)"], session=session)
    assert result.answer == "ok"
    feedback = last_user(root_calls(client)[1])
    assert prompts.context_restored_note() in feedback
    assert any(e["kind"] == "note" and "rebound" in e["text"] for e in events)


def test_cell_errors_go_back_to_the_model_as_data(tmp_path):
    session = FakeSession(rules={"1/0": Execution(error="Traceback ...\nZeroDivisionError: division by zero",
                                                   error_name="ZeroDivisionError")})
    result, client, _, events = run(tmp_path, [repl("1/0"), "FINAL(recovered)"], session=session)
    assert result.answer == "recovered"
    assert "ZeroDivisionError: division by zero" in last_user(root_calls(client)[1])
    cell = next(e for e in events if e["kind"] == "cell")
    assert cell["error"] == "ZeroDivisionError"


def test_cell_output_is_truncated_for_the_model_head_and_tail_kept(tmp_path):
    big = "HEAD" + "x" * 5000 + "TAIL"
    session = FakeSession(rules={"print(big)": Execution(stdout=big)})
    result, client, _, events = run(tmp_path, [repl("print(big)"), "FINAL(ok)"], session=session,
                                    max_output_chars=200)
    feedback = last_user(root_calls(client)[1])
    assert "HEAD" in feedback and "TAIL" in feedback
    assert "characters truncated" in feedback
    assert "x" * 1000 not in feedback
    cell = next(e for e in events if e["kind"] == "cell")
    assert cell["truncated_chars"] == len(big) - 200


def test_cell_timeout_setting_is_passed_to_the_session(tmp_path):
    session = FakeSession()
    run(tmp_path, [repl("x = 1"), "FINAL(ok)"], session=session, cell_timeout_s=7)
    assert session.timeouts == [7.0]


# ------------------------------------------------------------------------------ limits
def test_iteration_limit_asks_once_for_a_final_answer(tmp_path):
    result, client, session, events = run(tmp_path, [repl("a = 1"), repl("b = 2"), "My best guess: FINAL(best)"],
                                          max_iterations=2)
    assert result.status == "max_iterations"
    assert result.answer == "best"
    assert result.iterations == 2
    calls = root_calls(client)
    assert len(calls) == 3
    ask = last_user(calls[2])
    assert ask.startswith("You have reached the turn limit") and "your answer" not in ask
    assert [e["iteration"] for e in fired(events, "iteration-limit")] == [1, 2]   # the last turn, then the limit
    assert session.executed == ["a = 1", "b = 2"]
    assert events[-1]["kind"] == "run_end" and events[-1]["status"] == "max_iterations"


def test_the_final_request_shows_the_question_and_the_last_short_output(tmp_path):
    session = FakeSession(rules={"look()": Execution(stdout="Order 7 was shipped to Lisbon.\n")})
    result, client, _, _ = run(tmp_path, [repl("look()")] * 3 + ["FINAL(Lisbon)"], session=session)
    assert result.answer == "Lisbon"
    request = root_calls(client)[-1]
    ask = last_user(request)
    assert "Order 7 was shipped to Lisbon." in ask and "Question:" in ask and "No code block" in ask
    # a new, short conversation: the stuck one (three identical replies) is not sent again
    assert [m["role"] for m in request] == ["system", "user"]
    assert "look()" not in str(request)


def test_the_final_request_shows_the_last_short_outputs_oldest_first(tmp_path):
    session = FakeSession(rules={"a()": Execution(stdout="first finding\n"), "b()": Execution(stdout="x" * 1500),
                                 "c()": Execution(stdout="second finding\n")})
    _, client, _, _ = run(tmp_path, [repl("a()"), repl("b()"), repl("c()"), "FINAL(done)"], session=session,
                          max_iterations=3)
    ask = last_user(root_calls(client)[-1])
    assert ask.index("first finding") < ask.index("second finding")
    assert "x" * 1500 not in ask   # a long output is left out


def test_iteration_limit_final_var_answer_is_resolved(tmp_path):
    session = FakeSession(variables={"acc": "12"})
    result, _, _, _ = run(tmp_path, [repl("acc = 12"), "FINAL_VAR(acc)"], session=session, max_iterations=1)
    assert (result.status, result.answer) == ("max_iterations", "12")


def test_the_last_chance_request_names_the_variables_the_code_built_latest_first(tmp_path):
    session = FakeSession(variables={"answer": "(1, 2)"})
    result, client, _, _ = run(tmp_path, [repl("ids = {1, 2}\nn = 2"), repl("answer = '(1, 2)'"), "FINAL(answer)"],
                               session=session, max_iterations=2)
    assert (result.status, result.answer) == ("max_iterations", "(1, 2)")    # FINAL(answer): the variable's value
    request = last_user(root_calls(client)[-1])
    assert "Variables your code built, latest first: `answer`, " in request and "`ids`" in request and "`n`" in request


def test_iteration_limit_without_final_keeps_the_plain_reply(tmp_path):
    result, _, _, _ = run(tmp_path, [repl("a = 1"), "  probably 12  "], max_iterations=1)
    assert (result.status, result.answer) == ("max_iterations", "probably 12")


def test_last_turn_is_announced(tmp_path):
    result, client, _, _ = run(tmp_path, [repl("a = 1"), repl("b = 1"), "FINAL(x)"], max_iterations=3)
    assert "2 turns left" in last_user(root_calls(client)[1])
    assert "last turn" in last_user(root_calls(client)[2])


# ------------------------------------------------------------------------------ prompt and trace
def test_system_prompt_has_context_metadata_and_budgets(tmp_path):
    result, client, _, _ = run(tmp_path, ["FINAL(x)"], max_sub_calls=17)
    system = root_calls(client)[0][0]
    assert system["role"] == "system"
    assert "123,456 characters" in system["content"]
    assert MARKER in system["content"]  # the short preview
    assert "17 sub-calls" in system["content"]
    assert "What is the code?" in root_calls(client)[0][1]["content"]


def test_trace_events_are_written_and_hold_no_context(tmp_path):
    session = FakeSession(variables={"v": "7"})
    result, _, _, events = run(tmp_path, [repl("x = llm_query('q')"), "FINAL_VAR(v)"], session=session)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    for kind in ("model_reply", "cell", "sub_call"):
        assert kind in kinds
    start = events[0]
    assert start["question"] == "What is the code?"
    assert start["context"]["total_chars"] == 123_456
    assert start["root_model"] == ROOT and start["sub_model"] == SUB
    reply = next(e for e in events if e["kind"] == "model_reply")
    assert reply["iteration"] == 1 and reply["model"] == ROOT and reply["usage"]["prompt_tokens"] > 0
    cell = next(e for e in events if e["kind"] == "cell")
    assert cell["code"] == "x = llm_query('q')" and "duration_s" in cell
    end = events[-1]
    assert (end["answer"], end["status"], end["iterations"], end["sub_calls"]) == ("7", "ok", 2, 1)
    text = (tmp_path / "run.jsonl").read_text()
    assert MARKER not in text
    assert result.trace == str(tmp_path / "run.jsonl")


def test_default_trace_path_is_under_trace_dir(tmp_path):
    orch = Orchestrator(make_settings(tmp_path), scripted(["FINAL(1)"]), session_factory=lambda p: FakeSession())
    result = orch.run("q", None)
    assert Path(result.trace).parent == tmp_path / "traces"
    assert Path(result.trace).suffix == ".jsonl"
    assert read_events(Path(result.trace))[-1]["kind"] == "run_end"


def test_progress_reports_each_step(tmp_path):
    events: list = []
    run(tmp_path, [repl("a = 1"), "FINAL(ok)"], events=events)
    kinds = [k for k, _ in events]
    assert kinds[0] == "sandbox_ready"
    assert kinds.count("iteration") == 2
    assert "model_reply" in kinds and "cell" in kinds
    assert kinds[-1] == "done"
    assert events[-1][1]["answer"] == "ok"


# ------------------------------------------------------------------------------ usage and sub-calls
def test_usage_is_summed_per_model(tmp_path):
    replies = [repl("r = llm_query('x')"), repl("r2 = llm_query('y')"), "FINAL(ok)"]
    result, client, _, _ = run(tmp_path, replies, memo=False)  # the fake session sends one prompt
    assert result.sub_calls == 2
    assert set(result.usage) == {ROOT, SUB}
    assert result.usage[ROOT].calls == 3
    assert result.usage[SUB].calls == 2
    expected_root_prompt = sum(len("".join(str(m.get("content") or "") for m in msgs)) // 4
                               for msgs in root_calls(client))
    assert result.usage[ROOT].prompt_tokens == expected_root_prompt
    assert result.usage[SUB].completion_tokens == 2 * (len("sub says hi") // 4)
    data = json.loads(json_line(result.to_dict()))
    assert data["usage"][SUB]["calls"] == 2
    assert set(data) >= {"answer", "status", "iterations", "sub_calls", "usage", "duration_s", "trace"}


def test_sub_call_reply_reaches_the_model(tmp_path):
    result, client, _, _ = run(tmp_path, [repl("r = llm_query('x')"), "FINAL(ok)"], sub_reply="SUB-ANSWER-99")
    assert "SUB-ANSWER-99" in last_user(root_calls(client)[1])


def test_disabled_sub_calls_are_refused_inside_the_cell(tmp_path):
    result, client, _, _ = run(tmp_path, [repl("r = llm_query('x')"), "FINAL(ok)"], enable_sub_calls=False)
    assert result.sub_calls == 0
    feedback = last_user(root_calls(client)[1])
    assert "SubCallError" in feedback and "disabled" in feedback
    assert SUB not in result.usage
    assert "disabled" in root_calls(client)[0][0]["content"]


def test_sub_call_budget_is_per_run(tmp_path):
    replies = [repl("a = llm_query('x')"), repl("b = llm_query('y')"), "FINAL(ok)"]
    result, client, _, _ = run(tmp_path, replies, max_sub_calls=1, memo=False)
    assert result.sub_calls == 1
    assert "sub-call budget exceeded" in last_user(root_calls(client)[2])


def test_a_repeated_sub_call_is_memoised_in_the_result_and_the_trace(tmp_path):
    replies = [repl("a = llm_query('x')"), repl("b = llm_query('x') # again"), "FINAL(ok)"]
    result, client, _, _ = run(tmp_path, replies, max_sub_calls=1)  # the fake session sends one prompt
    assert result.sub_calls == 1  # the second is no new call: within a budget of one
    assert result.usage[SUB].calls == 1 and result.usage[SUB].memoised == 1
    assert json.loads(json_line(result.to_dict()))["usage"][SUB]["memoised"] == 1
    assert len([c for c in client.calls if c[0] == SUB]) == 1
    events = [json.loads(line) for line in Path(result.trace or "").read_text().splitlines()]
    subs = [e for e in events if e.get("kind") == "sub_call"]
    assert [bool(e.get("memoised")) for e in subs] == [False, True]
    end = [e for e in events if e.get("kind") == "run_end"][0]
    assert end["usage"][SUB]["memoised"] == 1


def test_rlm_query_runs_a_child_in_its_own_session(tmp_path):
    parent, child = FakeSession(), FakeSession()
    sessions = [parent, child]
    client = scripted([repl("r = rlm_query('sub problem')"), "FINAL(child answer)", "FINAL(parent done)"])
    orch = Orchestrator(make_settings(tmp_path), client, session_factory=lambda path: sessions.pop(0))
    result = orch.run("q", None, trace_path=tmp_path / "run.jsonl")
    assert result.answer == "parent done"
    assert result.sub_calls == 1
    assert child.opened == 1 and child.closed == 1
    assert "child answer" in last_user(root_calls(client)[2])
    assert list(tmp_path.glob("child-*.jsonl")), "the child run writes its own trace next to the parent's"


def test_rlm_query_child_usage_is_counted_in_the_run(tmp_path):
    sessions = [FakeSession(), FakeSession()]
    client = scripted([repl("r = rlm_query('sub problem')"), "FINAL(child answer)", "FINAL(parent done)"])
    orch = Orchestrator(make_settings(tmp_path), client, session_factory=lambda path: sessions.pop(0))
    result = orch.run("q", None, trace_path=tmp_path / "run.jsonl")
    assert sum(u.calls for u in result.usage.values()) == len(client.calls) == 3


# ------------------------------------------------------------------------------ session lifecycle and failures
def test_own_session_is_opened_closed_and_detached(tmp_path):
    result, _, session, _ = run(tmp_path, ["FINAL(x)"])
    assert session.opened == 1 and session.closed == 1
    assert session.handlers_seen[0] is not None and session.handler is None


def test_given_session_is_kept_open_and_keeps_serving(tmp_path):
    session = FakeSession(variables={"kept": "v1"})
    client = scripted(["FINAL_VAR(kept)", "FINAL(second)"])
    orch = Orchestrator(make_settings(tmp_path), client, session_factory=lambda p: pytest.fail("no new session"))
    first = orch.run("q1", trace_path=tmp_path / "a.jsonl", session=session)
    second = orch.run("q2", trace_path=tmp_path / "b.jsonl", session=session)
    assert (first.answer, second.answer) == ("v1", "second")
    assert session.opened == 0 and session.closed == 0
    assert first.phases["sandbox_start_s"] == 0.0


def test_model_error_propagates_and_the_trace_and_session_are_closed(tmp_path):
    session = FakeSession()
    client = ScriptedClient([LLMError("server exploded")], models=[ROOT])
    orch = Orchestrator(make_settings(tmp_path), client, session_factory=lambda p: session)
    with pytest.raises(LLMError, match="server exploded"):
        orch.run("q", None, trace_path=tmp_path / "run.jsonl")
    assert session.closed == 1
    end = read_events(tmp_path / "run.jsonl")[-1]
    assert end["kind"] == "run_end" and end["status"] == "error" and "server exploded" in end["error"]


def test_keyboard_interrupt_marks_the_trace_interrupted_and_closes_the_session(tmp_path):
    def boom(code):
        raise KeyboardInterrupt

    session = FakeSession(on_execute=boom)
    orch = Orchestrator(make_settings(tmp_path), scripted([repl("import time; time.sleep(60)")]),
                        session_factory=lambda p: session)
    with pytest.raises(KeyboardInterrupt):
        orch.run("q", None, trace_path=tmp_path / "run.jsonl")
    assert session.closed == 1
    events = read_events(tmp_path / "run.jsonl")
    assert events[-1]["kind"] == "run_end" and events[-1]["status"] == "interrupted"
    assert any(e["kind"] == "model_reply" for e in events)


def test_session_start_failure_is_raised_and_recorded(tmp_path):
    from rlm.errors import ImageMissing

    class Broken(FakeSession):
        def open(self):
            raise ImageMissing("the sandbox image x is not built", hint="run `rlm sandbox build`")

    session = Broken()
    orch = Orchestrator(make_settings(tmp_path), scripted([]), session_factory=lambda p: session)
    with pytest.raises(ImageMissing):
        orch.run("q", None, trace_path=tmp_path / "run.jsonl")
    assert session.closed == 1
    assert read_events(tmp_path / "run.jsonl")[-1]["status"] == "error"


# ------------------------------------------------------------------------------ recovery from small-model mistakes (18.5)
def _name_error(name: str) -> Execution:
    return Execution(error=f"Traceback ...\nNameError: name '{name}' is not defined", error_name="NameError")


def test_a_final_cell_whose_argument_is_not_python_answers_with_its_literal_text(tmp_path):
    session = FakeSession(rules={"FINAL(0 <= x < 256)": _name_error("x")})
    result, client, session, events = run(tmp_path, [repl("FINAL(0 <= x < 256)"), "FINAL(never asked)"],
                                          session=session)
    assert (result.answer, result.status, result.iterations) == ("0 <= x < 256", "ok", 1)
    assert len(root_calls(client)) == 1
    notes = [e["text"] for e in events if e["kind"] == "note"]
    assert any("literal text is the answer" in n and "NameError" in n for n in notes)
    assert events[-1]["answer"] == "0 <= x < 256"


def test_a_final_cell_naming_what_an_output_showed_answers_with_that_name(tmp_path):
    session = FakeSession(rules={"ask()": Execution(stdout="The caller is `processInvoice`.\n"),
                                 "FINAL(processInvoice)": _name_error("processInvoice"),
                                 "FINAL(result)": _name_error("result")})
    result, _, _, events = run(tmp_path, [repl("ask()"), repl("FINAL(processInvoice)")], session=session)
    assert (result.answer, result.status) == ("processInvoice", "ok")
    assert any("literal text is the answer" in e["text"] for e in events if e["kind"] == "note")
    # a name no output showed is a variable the model forgot to build: not an answer
    result, _, _, _ = run(tmp_path, [repl("ask()"), repl("FINAL(result)"), "FINAL(42)"], session=session)
    assert result.answer == "42"


def test_a_final_cell_with_words_that_are_not_python_answers_with_them(tmp_path):
    bad = Execution(error="SyntaxError: invalid syntax", error_name="SyntaxError")
    session = FakeSession(rules={"FINAL(The answer": bad})
    result, _, _, events = run(tmp_path, [repl("FINAL(The answer is 42)")], session=session)
    assert (result.answer, result.status) == ("The answer is 42", "ok")
    assert any(e["kind"] == "note" and "SyntaxError" in e["text"] for e in events)


def test_a_final_cell_naming_a_missing_variable_is_not_taken_literally(tmp_path):
    session = FakeSession(rules={"FINAL(answer)": _name_error("answer")})
    result, client, _, _ = run(tmp_path, [repl("FINAL(answer)"), "FINAL(7)"], session=session)
    assert (result.answer, result.iterations) == ("7", 2)
    assert "NameError: name 'answer' is not defined" in last_user(root_calls(client)[1])


def test_the_same_cell_sent_again_is_not_run_twice_and_the_model_is_told_what_to_change(tmp_path):
    failing = "hits = re.findall(r'code', context)\nprint(len(hits))"
    session = FakeSession(rules={"re.findall": _name_error("re")})
    again = "hits = re.findall(r'code',   context)\n\nprint(len(hits))  "  # the same after whitespace
    result, client, session, events = run(tmp_path, [repl(failing), repl(again), "FINAL(done)"], session=session)
    assert result.answer == "done"
    assert session.executed == [failing], "the identical cell must not run a second time"
    feedback = last_user(root_calls(client)[2])
    assert "NameError: name 're' is not defined" in feedback  # its known output is shown again
    assert "same as the code you sent in turn 1" in feedback and "not run again" in feedback
    assert "add `import re` as the first line" in feedback
    assert any(e["kind"] == "note" and "not run again" in e["text"] for e in events)
    assert [e["code"] for e in events if e["kind"] == "cell"] == [failing]


def test_a_repeated_successful_cell_is_reused_and_the_model_is_told_to_answer_or_change(tmp_path):
    result, client, session, _ = run(tmp_path, [repl("print(context[:100])"), repl("print(context[:100])"),
                                                "FINAL(ok)"])
    assert session.executed == ["print(context[:100])"]
    feedback = last_user(root_calls(client)[2])
    assert "ran 20 chars" in feedback
    assert "You already have its output" in feedback and "FINAL(your answer)" in feedback
    assert "write different code" in feedback


def test_a_reused_cell_with_a_long_output_points_back_instead_of_showing_it_again(tmp_path):
    long = Execution(stdout="x" * 2000 + "\n")
    session = FakeSession(rules={"print(big)": long})
    result, client, session, _ = run(tmp_path, [repl("print(big)"), repl("print(big)"), "FINAL(ok)"], session=session)
    assert session.executed == ["print(big)"] and result.answer == "ok"
    first, second = last_user(root_calls(client)[1]), last_user(root_calls(client)[2])
    assert "x" * 2000 in first and "x" * 100 not in second
    assert "the same output as after turn 1" in second


def test_a_cell_repeated_after_other_code_ran_runs_again(tmp_path):
    """The kernel's state may have changed (e.g. `import re` in between): the cell is run again."""
    calls = {"n": 0}

    def first_fails(code):
        if "re.findall" in code:
            calls["n"] += 1

    session = FakeSession(on_execute=first_fails)
    cell = "print(len(re.findall('x', context)))"
    result, client, session, _ = run(tmp_path, [repl(cell), repl("import re"), repl(cell), "FINAL(ok)"],
                                     session=session)
    assert calls["n"] == 2
    assert session.executed == [cell, "import re", cell]
    feedback = last_user(root_calls(client)[3])
    assert "same as the code you sent in turn 1" in feedback and "printed the same output again" in feedback


def test_a_repeated_timed_out_cell_gets_a_concrete_instruction(tmp_path):
    slow = Execution(error="cell timed out after 30 s", error_name="TimeoutError", timed_out=True)
    session = FakeSession(rules={"for ch in context": slow})
    code = "n = 0\nfor ch in context:\n    n += 1"
    result, client, session, _ = run(tmp_path, [repl(code), repl(code), "FINAL(ok)"], session=session)
    assert session.executed == [code]
    assert "It timed out" in last_user(root_calls(client)[2]) and "slice" in last_user(root_calls(client)[2])


@pytest.mark.parametrize("last_reply, expected", [
    ("```repl\nFINAL(0 <= x < 256)\n```", "0 <= x < 256"),
    ("```\n1,307\n```", "1,307"),
    ("```text\nThe total is 1,307\n```", "The total is 1,307"),
    ("FINAL(unclosed 12", "unclosed 12"),
])
def test_at_the_iteration_limit_the_answer_never_keeps_fences_or_a_final_wrapper(tmp_path, last_reply, expected):
    session = FakeSession(rules={"FINAL(0 <= x < 256)": _name_error("x")})
    result, _, _, events = run(tmp_path, [repl("a = 1"), last_reply], session=session, max_iterations=1)
    assert (result.status, result.answer) == ("max_iterations", expected)
    assert "```" not in result.answer and "FINAL(" not in result.answer


def test_at_the_iteration_limit_a_final_call_in_code_is_run_for_its_value(tmp_path):
    result, _, session, _ = run(tmp_path, [repl("a = 1"), "```repl\nFINAL('from the cell')\n```"], max_iterations=1)
    assert (result.status, result.answer) == ("max_iterations", "from the cell")
    assert session.executed == ["a = 1", "FINAL('from the cell')"]


def test_run_child_is_typed_and_returns_the_answer_and_usage(tmp_path):
    sessions = [FakeSession()]
    client = scripted(["FINAL(child says 3)"])
    orch = Orchestrator(make_settings(tmp_path), client, session_factory=lambda path: sessions.pop(0))
    runner = orch.child_runner(tmp_path)
    assert runner is not None
    answer, usage = runner("sub problem", None)
    assert answer == "child says 3" and usage[ROOT].calls == 1
    assert Orchestrator(make_settings(tmp_path), client, depth=1).child_runner(tmp_path) is None


def test_at_the_iteration_limit_a_reply_of_code_alone_is_no_answer(tmp_path):
    result, _, _, events = run(tmp_path, [repl("a = 1"), repl('hits = grep(r"code")\nprint(hits)')], max_iterations=1)
    assert (result.status, result.answer) == ("no_answer", None)
    assert events[-1]["kind"] == "run_end" and (events[-1]["status"], events[-1]["answer"]) == ("no_answer", None)


def test_a_cell_sent_three_times_in_a_row_ends_with_a_request_for_the_answer(tmp_path):
    cell = repl("print(context[:100])")
    result, client, session, events = run(tmp_path, [cell, cell, cell, "FINAL(985440)", "never asked"])
    assert (result.answer, result.status, result.iterations) == ("985440", "ok", 3)
    assert session.executed == ["print(context[:100])"]
    assert "Do not write more code" in last_user(root_calls(client)[3])
    assert any(e["kind"] == "note" and "3 times in a row" in e["text"] for e in events)


def test_the_same_cell_with_a_final_var_of_a_missing_variable_is_stuck_too(tmp_path):
    reply = repl("print(context[:100])") + "\nFINAL_VAR(variable_name)"     # seen: the prompt's own words copied
    result, client, _, _ = run(tmp_path, [reply] * 3 + ["FINAL(7)", "never asked"])
    assert (result.answer, result.status, result.iterations) == ("7", "ok", 3)
    assert "Do not write more code" in last_user(root_calls(client)[3])


def test_a_model_stuck_on_one_cell_without_an_answer_ends_with_no_answer(tmp_path):
    cell = repl("print(context[:100])")
    result, _, _, _ = run(tmp_path, [cell, cell, cell, cell])
    assert (result.answer, result.status, result.iterations) == (None, "no_answer", 3)


# ------------------------------------------------------------------------------ hints on a first failure
def test_the_next_turn_names_the_variable_the_last_cell_built(tmp_path):
    session = FakeSession(rules={"answer =": Execution(stdout="91 pairs, all in the variable answer\n")})
    _, client, _, _ = run(tmp_path, [repl("ids = {1}\nanswer = '(1, 2)'\nprint('91 pairs')"), "FINAL(x)"],
                          session=session)
    ask = last_user(root_calls(client)[-1])
    assert "FINAL_VAR(answer)" in ask and "variable_name" not in ask


def test_a_search_without_a_match_gets_a_precise_hint_the_first_time(tmp_path):
    failed = Execution(stdout="AttributeError: 'NoneType' object has no attribute 'group'\n",
                       error_name="AttributeError")
    session = FakeSession(rules={"re.search": failed})
    _, client, _, events = run(tmp_path, [repl("ids = [re.search(r'u(\\d+)', l).group(1) for l in grep('x')]"),
                                          "FINAL(x)"], session=session)
    ask = last_user(root_calls(client)[-1])
    assert "`if m:` before `m.group(1)`" in ask
    assert len(fired(events, "known-fix")) == 1


def test_an_empty_result_is_shown_the_lines_its_pattern_missed(tmp_path):
    lines = ["Records (labels: low, high)", "Date: Mar 24 || User: 93519 || Priority: low"]
    sample = Execution(stdout=json.dumps({"lines": lines, "unmatched": ["customer\\D*(\\d+)"]}) + "\n")
    session = FakeSession(rules={"_rlm_probe": sample,
                                 "customer": Execution(stdout="0 pairs, all in the variable answer\n")})
    code = "for line in grep(r\"low\"):\n    m = re.search(r'customer\\D*(\\d+)', line)"
    _, client, session, events = run(tmp_path, [repl(code), "FINAL(x)"], session=session)
    ask = last_user(root_calls(client)[-1])
    assert "found nothing" in ask and "User: 93519 || Priority: low" in ask
    assert "`customer\\D*(\\d+)` matches none of them" in ask
    assert [e["code"] for e in events if e["kind"] == "cell"] == [code]   # the sample is not a cell of the model's
    plain, client, _, _ = run(tmp_path, [repl("print(len(grep('x')))"), "FINAL(x)"],
                              session=FakeSession(rules={"len(": Execution(stdout="12 lines\n")}))
    assert "found nothing" not in last_user(root_calls(client)[-1])


def test_a_block_that_copies_an_output_is_not_run_nor_kept_in_the_conversation(tmp_path):
    shown = "grep('topic sports') matched no line; each word alone: grep('topic') 462 lines"
    session = FakeSession(rules={"find()": Execution(stdout=shown + "\n0 pairs\n")})
    echo = repl(shown + "\n0 pairs\n" + shown)
    result, client, session, events = run(tmp_path, [repl("find()"), echo, "FINAL(done)"], session=session)
    assert result.answer == "done" and session.executed == ["find()"]
    request = root_calls(client)[-1]
    assert "copied the output above" in last_user(request)
    assert shown + "\n0 pairs\n" + shown not in str(request)      # the echo is not sent back
    assert any("copies an output" in e.get("text", "") for e in events if e["kind"] == "note")


def test_a_block_that_copies_the_end_of_an_output_line_is_an_echo_too(tmp_path):
    shown = "grep('topic\\s*:\\s*sports') matched no line; each word alone: grep('topic') 1 lines, grep('sports') 424 lines"
    session = FakeSession(rules={"find()": Execution(stdout=shown + "\n0 pairs, all in the variable answer\n")})
    echo = repl("grep('topic') 1 lines, grep('sports') 424 lines\n0 pairs, all in the variable answer\n" * 3)
    result, client, session, _ = run(tmp_path, [repl("find()"), echo, "FINAL(done)"], session=session)
    assert result.answer == "done" and session.executed == ["find()"]   # not run: no SyntaxError to echo next
    assert "copied the output above" in last_user(root_calls(client)[-1])


def test_python_that_starts_like_an_output_still_runs(tmp_path):
    session = FakeSession(rules={"first()": Execution(stdout="print('hello there, world')\n")})
    _, _, session, _ = run(tmp_path, [repl("first()"), repl("print('hello there, world')"), "FINAL(x)"],
                           session=session)
    assert session.executed == ["first()", "print('hello there, world')"]


def test_the_same_code_again_is_told_the_variable_it_built(tmp_path):
    session = FakeSession(rules={"pairs =": Execution(stdout="78 pairs, all in the variable answer\n")})
    code = "pairs = ['(1, 2)']\nanswer = '\\n'.join(pairs)\nprint(len(pairs), 'pairs')"
    _, client, _, _ = run(tmp_path, [repl(code), repl(code), "FINAL(x)"], session=session)
    assert "only FINAL_VAR(answer) when the variable `answer` holds the answer" in last_user(root_calls(client)[-1])


@pytest.mark.parametrize("placeholder", ["FINAL(your answer)", "```repl\nFINAL('the answer')\n```",
                                         "```repl\nFINAL(your answer)\n```"])   # not Python: its literal text
def test_an_answer_that_copies_the_instructions_stand_in_is_not_taken(tmp_path, placeholder):
    session = FakeSession(rules={"FINAL(your answer)": Execution(error="SyntaxError: invalid syntax",
                                                                 error_name="SyntaxError")})
    result, client, _, events = run(tmp_path, [repl("print(1)"), placeholder, "FINAL(42)"], session=session)
    assert (result.answer, result.status, result.iterations) == ("42", "ok", 3)
    told = last_user(root_calls(client)[2])
    firing = fired(events, "placeholder-answer")
    assert len(firing) == 1 and firing[0]["message"] in told and "was not taken" in told


@pytest.mark.parametrize("reply", ["FINAL(rotate_token)", "```repl\nFINAL('rotate_token')\n```"])
def test_an_answer_that_only_repeats_a_name_of_the_question_is_asked_about_once(tmp_path, reply):
    question = "Which function calls rotate_token()?"
    found = "'    x += rotate_token()' is in def flush_report():"
    session = FakeSession(rules={"grep(": Execution(stdout=found + "\n"),
                                 "FINAL(rotate_token)": Execution(error="NameError: name 'rotate_token' is not "
                                                                  "defined", error_name="NameError")})
    result, client, _, events = run(tmp_path, [repl("print(grep(r'rotate_token'))"), reply, "FINAL(flush_report)"],
                                    question=question, session=session)
    assert (result.answer, result.iterations) == ("flush_report", 3)
    told = last_user(root_calls(client)[2])
    assert "The answer is not `rotate_token`: that is the name the question asks about" in told
    assert found in told and "What is the answer, according to this output?" in told   # the evidence again
    assert len(fired(events, "question-name")) == 1


def test_a_count_where_the_question_asks_for_a_list_is_asked_about_once(tmp_path):
    question = "List every pair of user ids such that both users have a record labelled 'low'. One pair per line."
    code = "pairs = ['(1, 2)', '(1, 3)']\nanswer = '\\n'.join(pairs)\nprint(len(pairs), 'pairs, all in answer')"
    session = FakeSession(rules={"pairs =": Execution(stdout="2 pairs, all in answer\n"),
                                 "FINAL_VAR('answer')": Execution(final="(1, 2)\n(1, 3)")})
    result, client, _, events = run(tmp_path, [repl(code), "FINAL(2)", "FINAL_VAR(answer)"],
                                    question=question, session=session)
    assert (result.answer, result.iterations) == ("(1, 2)\n(1, 3)", 3)
    told = last_user(root_calls(client)[2])
    assert "the question asks for the list itself" in told and "FINAL_VAR(answer)" in told
    assert len(fired(events, "count-for-list")) == 1


def test_a_final_in_a_copy_of_rlms_message_is_no_answer(tmp_path):
    # the 1.5B echoed the whole turn, the instructions' "... FINAL_VAR(answer). If it does not, ..." with it
    session = FakeSession(rules={"find()": Execution(stdout="0 pairs, all in the variable answer\n")})
    _, client, _, _ = run(tmp_path, [repl("answer = find()"), "FINAL(x)"], session=session)
    told = last_user(root_calls(client)[1])
    copied = next(line for line in told.splitlines() if "FINAL_VAR(answer)" in line)
    result, _, session, events = run(tmp_path, [repl("answer = find()"), repl("0 pairs") + "\n" + copied,
                                                "FINAL(nothing)"], session=session)
    assert (result.answer, result.iterations) == ("nothing", 3)
    assert not any("FINAL_VAR" in code for code in session.executed)
    assert any(e["kind"] == "note" and "copied from rlm's message" in e["text"] for e in events)


def test_the_final_var_the_message_suggests_is_an_answer_on_its_own_line(tmp_path):
    session = FakeSession(rules={"find()": Execution(stdout="2 pairs, all in the variable answer\n"),
                                 "FINAL_VAR('answer')": Execution(final="(1, 2)\n(1, 3)")})
    result, _, _, _ = run(tmp_path, [repl("find()"), "FINAL_VAR(answer)"], session=session)
    assert (result.answer, result.iterations) == ("(1, 2)\n(1, 3)", 2)


def test_an_empty_answer_is_never_taken(tmp_path):
    session = FakeSession(rules={"FINAL_VAR('answer')": Execution(final="")})
    result, client, _, events = run(tmp_path, [repl("answer = ''"), "FINAL_VAR(answer)", "FINAL_VAR(answer)",
                                               "FINAL(7)"], session=session)
    assert (result.answer, result.iterations) == ("7", 4)
    firings = fired(events, "placeholder-answer")
    assert [f["iteration"] for f in firings] == [2, 3] and firings[0]["message"] in last_user(root_calls(client)[2])


def test_a_count_sent_again_for_a_list_is_the_answer(tmp_path):
    question = "List every pair of user ids such that both users have a record labelled 'low'."
    result, _, _, _ = run(tmp_path, ["FINAL(91)", "FINAL(91)"], question=question)
    assert (result.answer, result.iterations) == ("91", 2)


def test_a_count_is_taken_where_the_question_asks_how_many(tmp_path):
    result, _, _, _ = run(tmp_path, ["FINAL(91)"], question="How many pairs of users have a record labelled 'low'?")
    assert (result.answer, result.iterations) == ("91", 1)


def test_a_name_of_the_question_sent_again_is_the_answer(tmp_path):
    question = "Which function calls rotate_token()?"
    result, _, _, _ = run(tmp_path, ["FINAL(rotate_token)", "FINAL(rotate_token)"], question=question)
    assert (result.answer, result.iterations) == ("rotate_token", 2)


def test_at_the_iteration_limit_final_var_of_a_variable_the_code_never_set_is_no_answer(tmp_path):
    # `for h in hits:` over no hits names `h` but never sets it; the answer is not the letter "h"
    result, _, _, events = run(tmp_path, [repl("for h in hits:\n    print(h)"), "FINAL_VAR(h)"], max_iterations=1)
    assert (result.status, result.answer) == ("no_answer", None)
    assert any(e["kind"] == "note" and "(unbound)" in e["text"] for e in events)


def test_at_the_iteration_limit_a_stand_in_answer_is_no_answer(tmp_path):
    result, _, _, events = run(tmp_path, [repl("a = 1"), "FINAL(your answer)"], max_iterations=1)
    assert (result.status, result.answer) == ("no_answer", None)
    assert events[-1]["kind"] == "run_end" and events[-1]["status"] == "no_answer"


def test_the_model_is_asked_outright_for_the_answer_after_a_cell_that_ran_but_not_after_a_traceback(tmp_path):
    session = FakeSession(rules={"1/0": Execution(error="Traceback ...\nZeroDivisionError: division by zero",
                                                   error_name="ZeroDivisionError")})
    _, client, _, _ = run(tmp_path, [repl("1/0"), repl("print(1)"), "FINAL(1)"], session=session)
    after_error, after_output = (last_user(m) for m in root_calls(client)[1:3])
    assert "What is the answer, according to this output?" not in after_error
    assert "What is the answer, according to this output?" in after_output
