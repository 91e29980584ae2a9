"""Budgets through the CLI: each of max_time_s, max_tokens (root plus sub-calls) and max_cost_usd ends
a run with its status, its exit code and a ``budget`` event in the trace (CliRunner in-process, real
sandbox, scripted HTTP model on 127.0.0.1).  Marker ``docker``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rlm.cli import app
from rlm.cli.app import EXIT_FOR_STATUS
from rlm.llm.fake_server import repl

pytestmark = pytest.mark.docker

ROOT, SUB = "root-model", "sub-model"
QUESTION = ["query", "-q", "When is high tide?", "-c", "High tide is at 6 pm; low tide at noon."]


@pytest.fixture
def cli(tmp_path, monkeypatch, engine, clean_rlm_env, scripted):
    def invoke(root: list, env: dict[str, str], *args: str):
        # the server counts a quarter of the characters as tokens; a sub-call's reply is 8,000 characters
        server = scripted(root, sub={"default": "z" * 8000}, root_default="FINAL(spare)")
        full = {"OLLAMA_BASE_URL": server.url, "ROOT_MODEL": ROOT, "RLM_SUB_MODEL": SUB, "RLM_MAX_RETRIES": "0",
                **env}
        return CliRunner().invoke(app, [*QUESTION, *args], env=full), server

    return invoke


def events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_token_budget_counts_sub_calls_and_gives_its_status_and_exit_code(cli, tmp_path):
    trace = tmp_path / "run.jsonl"
    result, server = cli([repl("s = llm_query('the tides, in one line')\nprint(len(s))"), "FINAL(6 pm)"],
                         {"RLM_MAX_TOKENS": "3000"}, "--json", "--trace", str(trace), "--stats")
    assert result.exit_code == EXIT_FOR_STATUS["token_limit"] == 7, result.stderr
    data = json.loads(result.stdout)
    assert (data["status"], data["answer"], data["iterations"]) == ("token_limit", "6 pm", 1)
    assert data["usage"][SUB]["completion_tokens"] == 2000   # the sub-call's tokens count
    assert data["budget"]["setting"] == "max_tokens" and data["budget"]["used"] >= 3000
    assert data["usage"][ROOT]["prompt_tokens"] + data["usage"][ROOT]["completion_tokens"] < 3000 + 2000
    kinds = [e["kind"] for e in events(trace)]
    assert "budget" in kinds and kinds.index("budget") < len(kinds) - 1
    assert [e["id"] for e in events(trace) if e["kind"] == "rule"] == ["budget-limit"]
    assert "budget reached" in result.stderr and "tokens in / out (sub-model)" in result.stderr
    assert len([r for r in server.requests if r["model"] == ROOT]) == 2   # one turn, one last request
    shown = CliRunner().invoke(app, ["trace", "show", str(trace)]).stdout
    assert "budget: the budget max_tokens=3000 tokens is reached" in shown and "rule: budget-limit" in shown
    from rlm.viewer import write_view

    page = open(write_view(trace)).read()
    assert "the budget max_tokens=3000 tokens is reached" in page and 'badge warn">token_limit' in page


def test_the_time_budget_gives_its_status_and_exit_code(cli, tmp_path):
    trace = tmp_path / "run.jsonl"
    slow = [repl(f"import time\ntime.sleep(1.5)\nprint({n})") for n in range(8)]
    result, _ = cli(slow, {}, "--max-time", "1", "--json", "--trace", str(trace))   # the flag
    assert result.exit_code == EXIT_FOR_STATUS["time_limit"] == 6, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "time_limit" and data["budget"]["setting"] == "max_time_s"
    assert data["iterations"] < 8 and data["answer"] is None   # the last reply was code, not an answer
    budget = [e for e in events(trace) if e["kind"] == "budget"]
    assert len(budget) == 1 and budget[0]["used"] >= 1.0
    assert events(trace)[-1]["status"] == "time_limit"


def test_the_cost_budget_gives_its_status_the_cost_per_model_and_exit_code(cli, tmp_path):
    trace = tmp_path / "run.jsonl"
    result, _ = cli([repl("print(1 + 1)"), "FINAL(6 pm)"],
                    {"RLM_MAX_COST_USD": "0.5", "RLM_PRICES": f"{ROOT}=1/1,{SUB}=0/0"},
                    "--json", "--trace", str(trace))
    assert result.exit_code == EXIT_FOR_STATUS["cost_limit"] == 8, result.stderr
    data = json.loads(result.stdout)
    assert (data["status"], data["answer"]) == ("cost_limit", "6 pm")
    used = data["usage"][ROOT]
    assert data["cost_usd"][ROOT] == pytest.approx((used["prompt_tokens"] + used["completion_tokens"]) / 1000,
                                                   abs=1e-5)
    assert events(trace)[-1]["cost_usd"] == data["cost_usd"]


def test_a_cost_budget_without_prices_is_refused_before_the_run(cli, tmp_path):
    result, server = cli(["FINAL(6 pm)"], {"RLM_MAX_COST_USD": "0.5"})
    assert result.exit_code == 2 and "prices" in result.stderr
    assert server.requests == []


def test_a_cell_that_fans_out_past_the_budget_has_its_later_sub_calls_refused(cli, tmp_path):
    code = ("out = []\nfor part in ['dawn', 'noon', 'dusk']:\n"
            "    try:\n        out.append(len(llm_query('the tide at ' + part)))\n"
            "    except Exception as exc:\n        out.append(type(exc).__name__ + ': ' + str(exc)[:60])\n"
            "print(out)")
    result, server = cli([repl(code), "FINAL(6 pm)"], {"RLM_MAX_TOKENS": "3000"}, "--json")
    assert result.exit_code == 7, result.stderr
    assert len([r for r in server.requests if r["model"] == SUB]) == 1   # the budget passed after the first
    data = json.loads(result.stdout)
    assert (data["status"], data["answer"], data["sub_calls"]) == ("token_limit", "6 pm", 1)
    turn = [m for m in server.requests[-1]["messages"] if m["role"] == "user"][-1]["content"]
    assert "SubCallError: the budget max_tokens=3000 tokens is reached" in turn
