"""Budgets (issue 36, item 3): max_time_s, max_tokens (root plus sub-calls) and max_cost_usd end a run at
the next turn with one last request for the answer and their own status; usage and cost by model in
the result and the trace.  Scripted model client and scripted sandbox session (no Docker)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from rlm.config import settings_from_mapping
from rlm.config.values import _BadValue, _to_prices
from rlm.core.budget import Budget, costs, total_tokens
from rlm.core.orchestrator import Orchestrator
from rlm.errors import ConfigError
from rlm.llm.base import Usage
from rlm.llm.fake_server import repl
from rlm.llm.scripted import ScriptedClient
from rlm.sandbox import Execution
from rlm.sandbox.bridge import BridgeRefusal

ROOT, SUB = "root-m", "sub-m"


class Session:
    """A scripted session: a cell with ``llm_query('...')`` makes that sub-call through the handler,
    ``sleep(s)`` takes s seconds, ``FINAL('x')`` answers x."""

    last: Session

    def __init__(self) -> None:
        Session.last = self
        self.handler = None
        self.context_path = None
        self.executed: list[str] = []

    def open(self):
        return self

    def close(self) -> None:
        pass

    def set_handler(self, handler) -> None:
        self.handler = handler

    def execute(self, code: str, timeout=None) -> Execution:
        if code == "_rlm_context_info()":
            return Execution(meta={"context_info": {"kind": "str", "total_chars": 40, "n_documents": 1,
                                                    "preview": "Tide tables for the harbour."}})
        self.executed.append(code)
        final = re.search(r"FINAL\('(.*)'\)", code)
        if final:
            return Execution(final=final.group(1))
        sleep = re.search(r"sleep\(([\d.]+)\)", code)
        if sleep:
            time.sleep(float(sleep.group(1)))
        query = re.search(r"llm_query\('(.*)'\)", code)
        if query and self.handler is not None:
            try:
                reply = self.handler({"op": "llm_query", "prompt": query.group(1)})
            except BridgeRefusal as exc:   # the kernel's llm_query raises SubCallError with the reason
                return Execution(stdout=f"SubCallError: {exc}\n", error_name="SubCallError")
            return Execution(stdout=f"{reply.get('text', reply) if isinstance(reply, dict) else reply}\n")
        return Execution(stdout=f"ran {len(code)} chars\n")


def run(tmp_path: Path, replies: list[str], **settings):
    script = list(replies)
    client = ScriptedClient(lambda messages, model: (script.pop(0) if script else "FINAL(spare)")
                            if model == ROOT else "y" * 4000, models=[ROOT, SUB])
    values = {"root_model": ROOT, "sub_model": SUB, "trace_dir": str(tmp_path / "traces"), **settings}
    orch = Orchestrator(settings_from_mapping(values), client, session_factory=lambda _p: Session())
    trace = tmp_path / f"run-{len(list(tmp_path.glob('run-*.jsonl')))}.jsonl"
    result = orch.run("When is high tide?", None, trace_path=trace)
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    return result, events, client


def kinds(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["kind"] == kind]


# ------------------------------------------------------------------------------ the arithmetic
def test_cost_comes_from_the_price_table_per_1000_tokens_and_is_none_without_a_price():
    usage = {ROOT: Usage(2000, 500, 2), SUB: Usage(10, 10, 1)}
    assert costs(usage, {ROOT: {"prompt": 0.5, "completion": 2.0}}) == {ROOT: pytest.approx(2.0), SUB: None}
    assert total_tokens(usage) == 2520


def test_the_first_budget_reached_is_named_with_its_status():
    usage = {ROOT: Usage(600, 400, 1)}
    assert Budget().reached(1e9, usage) is None   # 0: no budget
    assert Budget(max_time_s=5).reached(5.0, usage).status == "time_limit"
    assert Budget(max_time_s=5).reached(4.9, usage) is None
    hit = Budget(max_tokens=1000).reached(0, usage)
    assert (hit.status, hit.setting, hit.used) == ("token_limit", "max_tokens", 1000)
    assert Budget(max_tokens=1001).reached(0, usage) is None
    priced = Budget(max_cost_usd=0.5, prices={ROOT: {"prompt": 0.5, "completion": 0.5}})
    assert priced.reached(0, usage).status == "cost_limit"
    assert "max_cost_usd=0.5" in priced.reached(0, usage).message


def test_prices_are_read_from_yaml_mappings_and_env_strings_and_checked():
    assert _to_prices({"qwen2.5:1.5b": {"prompt": 0.1, "completion": "0.2"}}) == (("qwen2.5:1.5b", 0.1, 0.2),)
    assert _to_prices("qwen2.5:1.5b=0.1/0.2, gpt=1/2") == (("gpt", 1.0, 2.0), ("qwen2.5:1.5b", 0.1, 0.2))
    for bad in ({"m": 0.1}, {"m": {"input": 1}}, "m=0.1", "m=-1/1", 3):
        with pytest.raises(_BadValue):
            _to_prices(bad)
    s = settings_from_mapping({"prices": {"m": {"prompt": 1, "completion": 3}}, "max_cost_usd": 2})
    assert s.run.price_table == {"m": {"prompt": 1.0, "completion": 3.0}} and s.run.max_cost_usd == 2.0
    assert s.to_flat_dict()["prices"] == {"m": {"prompt": 1.0, "completion": 3.0}}


def test_a_cost_budget_without_a_price_for_the_run_s_models_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        run(tmp_path, ["FINAL(x)"], max_cost_usd=1.0, prices={ROOT: {"prompt": 1, "completion": 1}})
    assert "sub-m" in info.value.message and "prices" in (info.value.hint or "")


# ------------------------------------------------------------------------------ a run at its budget
def test_the_token_budget_counts_sub_calls_and_ends_the_run_with_one_last_request(tmp_path):
    # the root's first call is about 1,500 tokens; the sub-call's reply (4,000 characters) adds 1,000 more
    result, events, client = run(tmp_path, [repl("print(llm_query('summarise the tides'))"),
                                            repl("print('never run')"), "FINAL(at 6 pm)"], max_tokens=2300)
    root_calls = [m for m, _ in client.calls if m == ROOT]
    first_root = result.usage[ROOT].prompt_tokens
    # the last request's reply is code, not an answer: the run ends without one, with the budget's status
    assert (result.status, result.answer, result.iterations) == ("token_limit", None, 1)
    assert len(root_calls) == 2 and not any("never run" in c for c in Session.last.executed)
    assert result.usage[SUB].completion_tokens == 1000 and first_root > 0
    budget = kinds(events, "budget")
    assert len(budget) == 1 and budget[0]["setting"] == "max_tokens" and budget[0]["used"] >= 2300
    assert set(budget[0]["usage"]) == {ROOT, SUB}
    assert [e["id"] for e in kinds(events, "rule")] == ["budget-limit"]
    end = events[-1]
    assert end["kind"] == "run_end" and end["status"] == "token_limit" and end["budget"]["setting"] == "max_tokens"
    assert result.to_dict()["budget"]["status"] == "token_limit"


def test_the_last_request_at_a_budget_gives_the_answer(tmp_path):
    result, _, client = run(tmp_path, [repl("print(llm_query('summarise the tides'))"), "FINAL(at 6 pm)"],
                            max_tokens=2300)
    assert (result.status, result.answer, result.iterations) == ("token_limit", "at 6 pm", 1)
    last = client.calls[-1][1]
    assert len(last) == 2 and "When is high tide?" in last[-1]["content"]   # the short last-chance conversation


def test_the_time_budget_ends_the_run_after_the_turn_that_passed_it(tmp_path):
    result, events, _ = run(tmp_path, [repl("sleep(0.6)"), "FINAL(noon)"],
                            max_time_s=0.5)
    assert (result.status, result.answer, result.iterations) == ("time_limit", "noon", 1)
    assert kinds(events, "budget")[0]["used"] >= 0.5


def test_the_cost_budget_ends_the_run_and_the_cost_is_given_per_model(tmp_path):
    prices = {ROOT: {"prompt": 1.0, "completion": 1.0}, SUB: {"prompt": 0.0, "completion": 0.0}}
    result, events, _ = run(tmp_path, [repl("print(1)"), "FINAL(dawn)"], max_cost_usd=1.0,
                            prices=prices)
    assert (result.status, result.answer, result.iterations) == ("cost_limit", "dawn", 1)
    assert result.cost_usd[ROOT] == pytest.approx((result.usage[ROOT].prompt_tokens
                                                   + result.usage[ROOT].completion_tokens) / 1000, abs=1e-5)
    assert events[-1]["cost_usd"][ROOT] == result.cost_usd[ROOT]
    assert result.to_dict()["cost_usd"][ROOT] > 1.0


def test_a_run_under_its_budgets_ends_as_before(tmp_path):
    result, events, _ = run(tmp_path, [repl("print(1)"), "FINAL(dawn)"], max_tokens=10**9, max_time_s=3600)
    assert (result.status, result.answer, result.budget) == ("ok", "dawn", None)
    assert kinds(events, "budget") == []


def test_with_the_budget_rule_ablated_the_run_ends_at_the_budget_without_asking(tmp_path):
    result, events, client = run(tmp_path, [repl("print(llm_query('tides'))"), "FINAL(at 6 pm)"],
                                 max_tokens=2300, ablate=["budget-limit"])
    assert (result.status, result.answer) == ("token_limit", None)
    assert len([m for m, _ in client.calls if m == ROOT]) == 1 and kinds(events, "rule") == []


def test_once_a_budget_is_reached_within_a_turn_its_later_sub_calls_are_refused(tmp_path):
    reply = repl("a = llm_query('the tides')") + "\n" + repl("b = llm_query('the moon')")
    result, events, client = run(tmp_path, [reply, "FINAL(at 6 pm)"], max_tokens=2300)
    assert [m for m, _ in client.calls].count(SUB) == 1   # the second was refused, not sent
    cells = kinds(events, "cell")
    assert len(cells) == 2 and "max_tokens=2300 tokens is reached" in cells[1]["output"]
    assert "no more sub-calls" in cells[1]["output"]
    assert (result.status, result.answer, result.iterations) == ("token_limit", "at 6 pm", 1)
