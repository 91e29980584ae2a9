"""CLI flags reaching a real run (CliRunner in-process, real sandbox, scripted HTTP model).  Marker ``docker``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rlm.cli import app
from rlm.llm.fake_server import FakeModelServer, repl

pytestmark = pytest.mark.docker

ROOT, SUB = "root-model", "sub-model"


@pytest.fixture
def cli(tmp_path, monkeypatch, engine, clean_rlm_env, scripted):
    runner = CliRunner()

    def invoke(root: list, *args: str, input: str | None = None, **server_kw):
        server = scripted(root, **server_kw)
        env = {"RLM_BASE_URL": server.url, "RLM_ROOT_MODEL": ROOT, "RLM_SUB_MODEL": SUB, "RLM_MAX_RETRIES": "0"}
        result = runner.invoke(app, list(args), env=env, input=input)
        return result, server

    return invoke


def user_messages(server: FakeModelServer) -> list[str]:
    return [[m for m in r["messages"] if m["role"] == "user"][-1]["content"]
            for r in server.requests if r["model"] == ROOT]


def test_no_subcalls_and_max_iterations_flags_reach_the_run(cli, tmp_path):
    result, server = cli([repl("llm_query('hi')"), "FINAL(gave up)"],
                         "query", "-q", "q", "-c", "text", "--no-subcalls", "--max-iterations", "1", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["status"], data["answer"], data["iterations"], data["sub_calls"]) == ("max_iterations", "gave up",
                                                                                       1, 0)
    system = server.requests[0]["messages"][0]["content"]
    assert "Sub-model calls are disabled" in system and "at most 1 turns" in system
    assert not [r for r in server.requests if r["model"] == SUB]


def test_context_dir_is_a_list_of_documents(cli, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("first document")
    (docs / "b.txt").write_text("second document, code 55")
    result, server = cli([repl("print(type(context).__name__, len(context), context[1][-2:])"), "FINAL(55)"],
                         "query", "-q", "q", "--context-dir", str(docs), "--quiet")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "55\n"
    assert result.stderr == ""
    assert "list 2 55" in user_messages(server)[1]
    assert "documents: 2" in server.requests[0]["messages"][0]["content"]


def test_json_file_is_parsed(cli, tmp_path):
    (tmp_path / "data.json").write_text(json.dumps({"items": [1, 2, 3], "name": "widgets"}))
    result, server = cli([repl("print(sorted(context), sum(context['items']))"), "FINAL(6)"],
                         "query", "-q", "sum?", "-f", "data.json")
    assert result.exit_code == 0, result.stderr
    assert "['items', 'name'] 6" in user_messages(server)[1]


def test_interactive_reset_clears_variables(cli, tmp_path):
    (tmp_path / "doc.txt").write_text("some text")
    result, server = cli([repl("kept = 1"), "FINAL(set)", repl("print(kept)"), "FINAL(after reset)"],
                         "interactive", "-f", "doc.txt", input="set it\n:reset\nread it\n:quit\nnever asked\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["set", "(new sandbox: variables cleared)", "after reset"]
    assert "NameError" in user_messages(server)[3]
    assert len([r for r in server.requests if r["model"] == ROOT]) == 4


def test_demo_mismatch_is_exit_1(cli):
    result, _ = cli([repl("FINAL('nobody')")], "demo", "simple")
    assert result.exit_code == 1
    assert "expected: Dana Okafor" in result.stdout and "matched:  no" in result.stdout
