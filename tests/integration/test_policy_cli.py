"""The policy and the no-answer status through the CLI (CliRunner in-process, real sandbox, scripted HTTP
model).  Marker ``docker``."""

from __future__ import annotations

import json

import pytest

from rlm.cli.app import EXIT_NO_ANSWER, EXIT_USAGE
from rlm.llm.fake_server import repl

pytestmark = pytest.mark.docker



def events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("last", ["FINAL(None)", "FINAL(your answer)", "FINAL(answer)", "FINAL()", "FINAL(total_hits)"])
def test_a_run_that_ends_on_a_placeholder_has_no_answer_and_its_own_exit_code(scripted_cli, tmp_path, last):
    trace = tmp_path / "run.jsonl"
    result, _ = scripted_cli([repl("hits = grep('moon')\nprint(len(hits))"), last],
                    "query", "-q", "When was the moon full?", "-c", "the moon was full on the 3rd",
                    "--max-iterations", "1", "--json", "--trace", str(trace))
    assert result.exit_code == EXIT_NO_ANSWER, result.stderr
    data = json.loads(result.stdout)
    assert (data["status"], data["answer"]) == ("no_answer", None)
    end = events(trace)[-1]
    assert end["kind"] == "run_end" and (end["status"], end["answer"]) == ("no_answer", None)   # the trace is kept


def test_policy_and_ablate_flags_reach_the_run(scripted_cli, tmp_path):
    trace = tmp_path / "run.jsonl"
    result, server = scripted_cli(["FINAL(your answer)", "FINAL(3rd)"], "query", "-q", "When?", "-c", "on the 3rd",
                         "--policy", "legacy", "--ablate", "placeholder-answer", "--ablate", "known-fix",
                         "--json", "--trace", str(trace))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["answer"] == "3rd"
    start = events(trace)[0]
    assert start["settings"]["policy"] == "legacy" and start["settings"]["ablate"] == ["known-fix",
                                                                                      "placeholder-answer"]
    assert not [e for e in events(trace) if e["kind"] == "rule" and e["id"] == "placeholder-answer"]
    told = [m for m in server.requests[1]["messages"] if m["role"] == "user"][-1]["content"]
    assert "was not taken" in told   # the stand-in is still refused: the ablated rule only said why


@pytest.mark.parametrize("flags", [["--policy", "nope"], ["--ablate", "no-such-rule"]])
def test_an_unknown_policy_or_rule_is_a_usage_error(scripted_cli, flags):
    result, _ = scripted_cli(["FINAL(x)"], "query", "-q", "q", "-c", "text", *flags)
    assert result.exit_code == EXIT_USAGE
    assert "unknown" in result.stderr and "Traceback" not in result.stderr
