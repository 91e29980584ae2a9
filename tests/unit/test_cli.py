"""The command line in-process (typer's CliRunner): every command's bad input, exit codes and messages.

Exit codes: 0 ok, 1 other, 2 usage/config/context, 3 sandbox/Docker, 4 model server, 130 interrupted.
Everything runs in a temporary working directory with rlm's environment variables removed, so
the developer's .env, configs/ and environment cannot interfere.
"""

from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from rlm.cli import app
from rlm.config import CONFIG_ENV_VAR, FIELDS
from rlm.core.trace import TraceWriter
from rlm.llm.fake_server import FakeModelServer

EXIT_OTHER, EXIT_USAGE, EXIT_SANDBOX, EXIT_MODEL, EXIT_INTERRUPTED = 1, 2, 3, 4, 130


@pytest.fixture
def cli(tmp_path, monkeypatch):
    for spec in FIELDS:
        for name in spec.env_names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str, env: dict | None = None, input: str | None = None):
        return runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})}, input=input)

    return invoke


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("The secret code is 7421.\n")
    return path


@pytest.fixture(scope="module")
def server():
    with FakeModelServer(root=[], root_model="root-model", models=["sub-model"]) as srv:
        yield srv


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def assert_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# ------------------------------------------------------------------------------ context input
def test_missing_file(cli):
    result = cli("query", "-q", "what?", "-f", "nope.txt")
    assert_error(result, EXIT_USAGE, "context file not found: nope.txt", "hint: check the path given with -f")


def test_directory_given_as_file(cli, tmp_path):
    (tmp_path / "folder").mkdir()
    result = cli("query", "-q", "what?", "-f", "folder")
    assert_error(result, EXIT_USAGE, "folder is a folder, not a file", "--context-dir")


def test_binary_file_with_nul_bytes(cli, tmp_path):
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    result = cli("query", "-q", "what?", "-f", "image.png")
    assert_error(result, EXIT_USAGE, "image.png looks like a binary file", "UTF-8")


def test_file_that_is_not_utf8(cli, tmp_path):
    (tmp_path / "latin1.txt").write_bytes("Grüße aus Köln\n".encode("latin-1"))
    result = cli("query", "-q", "what?", "-f", "latin1.txt")
    assert_error(result, EXIT_USAGE, "latin1.txt is not UTF-8 text", "iconv")


def test_empty_file(cli, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    result = cli("query", "-q", "what?", "-f", "empty.txt")
    assert_error(result, EXIT_USAGE, "context file is empty", "some text")


def test_whitespace_file(cli, tmp_path):
    (tmp_path / "blank.txt").write_text("\n   \n")
    assert_error(cli("query", "-q", "what?", "-f", "blank.txt"), EXIT_USAGE, "only whitespace")


def test_empty_inline_context(cli):
    assert_error(cli("query", "-q", "what?", "-c", "  "), EXIT_USAGE, "the context given with -c is empty")


def test_context_larger_than_the_maximum(cli, doc):
    result = cli("query", "-q", "what?", "-f", str(doc), env={"RLM_MAX_CONTEXT_BYTES": "10"})
    assert_error(result, EXIT_USAGE, f"{doc.stat().st_size} bytes, over the maximum of 10", "RLM_MAX_CONTEXT_BYTES")
    result = cli("query", "-q", "what?", "-c", "x" * 11, env={"RLM_MAX_CONTEXT_BYTES": "10"})
    assert_error(result, EXIT_USAGE, "11 bytes, over the maximum of 10")


def test_neither_file_nor_text(cli):
    result = cli("query", "-q", "what?")
    assert_error(result, EXIT_USAGE, "give exactly one context: -f FILE, -c TEXT or --context-dir DIR", "hint:")


def test_both_file_and_text(cli, doc):
    assert_error(cli("query", "-q", "what?", "-f", str(doc), "-c", "x"), EXIT_USAGE, "give exactly one context")


def test_empty_question(cli, doc):
    assert_error(cli("query", "-q", "  ", "-f", str(doc)), EXIT_USAGE, "the question is empty", "-q")


def test_missing_question_option(cli, doc):
    result = cli("query", "-f", str(doc))
    assert result.exit_code == EXIT_USAGE
    assert "give the question once" in result.stderr and "-q" in result.stderr


def test_unknown_option(cli, doc):
    result = cli("query", "-q", "x", "-f", str(doc), "--max-iteration", "3")
    assert result.exit_code == EXIT_USAGE
    assert "No such option" in result.stderr


# ------------------------------------------------------------------------------ configuration
def test_malformed_yaml_names_file_and_line(cli, tmp_path):
    (tmp_path / "broken.yaml").write_text("max_iterations: 3\nmodel: root: x\n")
    for args in (("config", "show", "--config", "broken.yaml"),
                 ("query", "-q", "x", "-c", "text", "--config", "broken.yaml")):
        result = cli(*args)
        assert_error(result, EXIT_USAGE, "malformed YAML in broken.yaml, line 2", "fix the YAML syntax")


def test_invalid_yaml_value_negative_iterations(cli, tmp_path):
    (tmp_path / "neg.yaml").write_text("run:\n  max_iterations: -3\n")
    result = cli("config", "show", "--config", "neg.yaml")
    assert_error(result, EXIT_USAGE, "max_iterations must be greater than 0, got -3 (from yaml:neg.yaml)")


def test_wrong_type_in_yaml(cli, tmp_path):
    (tmp_path / "typed.yaml").write_text("max_iterations: lots\n")
    result = cli("config", "show", "--config", "typed.yaml")
    assert_error(result, EXIT_USAGE, "max_iterations must be an integer, got 'lots'")


def test_unknown_yaml_key_with_suggestion(cli, tmp_path):
    (tmp_path / "typo.yaml").write_text("run:\n  max_iteratons: 5\n")
    result = cli("config", "show", "--config", "typo.yaml")
    assert_error(result, EXIT_USAGE, "unknown key 'run.max_iteratons' in typo.yaml",
                 "did you mean 'max_iterations'?")


def test_missing_config_file(cli):
    result = cli("config", "show", "--config", "nowhere.yaml")
    assert_error(result, EXIT_USAGE, "config file nowhere.yaml does not exist", "--config")


def test_bad_environment_value_names_the_variable(cli):
    result = cli("config", "show", env={"MAX_ITERATIONS": "many"})
    assert_error(result, EXIT_USAGE, "max_iterations must be an integer", "env:MAX_ITERATIONS")


def test_negative_iteration_flag(cli, doc):
    result = cli("query", "-q", "x", "-f", str(doc), "--max-iterations", "-1")
    assert_error(result, EXIT_USAGE, "max_iterations must be greater than 0, got -1 (from cli:--max-iterations)")


def test_bad_base_url(cli, doc):
    result = cli("query", "-q", "x", "-f", str(doc), "--base-url", "localhost:11434")
    assert_error(result, EXIT_USAGE, "base_url must be an http:// or https:// URL")


def test_config_show_json_has_snake_case_keys_and_env_overrides(cli):
    result = cli("config", "show", "--json", env={"MAX_ITERATIONS": "7", "OLLAMA_BASE_URL": "http://h:1/v1",
                                                  "OPENAI_API_KEY": "sk-secret", "RLM_MEMORY_MB": "512"})
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert all(key == key.lower() and "-" not in key for key in data)
    assert data["max_iterations"] == 7
    assert data["base_url"] == "http://h:1/v1"
    assert data["memory_mb"] == 512
    assert data["root_model"] == "qwen3:14b" and data["max_sub_calls"] == 100
    assert data["api_key"] == "***"
    assert "sk-secret" not in result.stdout


def test_config_show_table_lists_values_and_sources(cli, tmp_path):
    (tmp_path / "mine.yaml").write_text("run:\n  max_output_chars: 4321\n  max_sub_calls: 9\n")
    (tmp_path / ".env").write_text("ROOT_MODEL=from-dotenv\nMAX_SUB_CALLS=11\n")
    assert cli("config", "trust").exit_code == 0  # a .env found in the working folder is read once trusted
    result = cli("config", "show", "--config", "mine.yaml", env={"MAX_SUB_CALLS": "12"})
    assert result.exit_code == 0, result.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in result.stdout.splitlines() if line.count("│") >= 4}
    assert rows["max_output_chars"] == ["4321", "yaml:mine.yaml"]
    assert rows["root_model"][0] == "from-dotenv" and rows["root_model"][1].startswith(".env:")
    assert rows["max_sub_calls"] == ["12", "env:MAX_SUB_CALLS"]  # the environment beats .env and YAML
    assert rows["max_iterations"] == ["20", "default"]


def test_rlm_config_env_var_selects_the_yaml(cli, tmp_path):
    (tmp_path / "other.yaml").write_text("max_depth: 2\n")
    result = cli("config", "show", "--json", env={"RLM_CONFIG": "other.yaml"})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["max_depth"] == 2


# ------------------------------------------------------------------------------ model server
def test_unreachable_model_server(cli, doc):
    url = closed_port_url()
    result = cli("query", "-q", "x", "-f", str(doc), "--base-url", url, env={"RLM_MAX_RETRIES": "0"})
    assert_error(result, EXIT_MODEL, f"cannot reach the model server at {url}", "ollama serve", "--base-url")


def test_unknown_model_lists_the_offered_ones(cli, doc, server):
    result = cli("query", "-q", "x", "-f", str(doc), "--base-url", server.url, "--model", "nope")
    assert_error(result, EXIT_MODEL, f"the server at {server.url} does not offer the model 'nope'",
                 "models it offers: root-model, sub-model")


def test_unknown_sub_model(cli, doc, server):
    result = cli("query", "-q", "x", "-f", str(doc), "--base-url", server.url, "--model", "root-model",
                 "--sub-model", "tiny")
    assert_error(result, EXIT_MODEL, "does not offer the model 'tiny'")


def test_unreachable_server_in_other_commands(cli, doc):
    url = closed_port_url()
    env = {"RLM_MAX_RETRIES": "0"}
    assert_error(cli("demo", "simple", "--base-url", url, env=env), EXIT_MODEL, "cannot reach the model server")
    assert_error(cli("demo", "needle", "--size", "1000", "--base-url", url, env=env), EXIT_MODEL,
                 "cannot reach the model server")
    assert_error(cli("interactive", "-f", str(doc), "--base-url", url, env=env, input="q\n"), EXIT_MODEL,
                 "cannot reach the model server")


TRACE_BUG = ("BUG: rlm/trace.py TraceWriter.__init__ lets OSError from mkdir/open escape, so a --trace that is a "
             "folder or lies under a file (or such a trace_dir) ends as exit 1 'this is a bug in rlm'")


@pytest.mark.parametrize("where", ["folder", "under-a-file"])
def test_unwritable_trace_path_is_a_usage_error(cli, tmp_path, server, where):
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain").write_text("x")
    trace = "folder" if where == "folder" else "plain/t.jsonl"
    result = cli("query", "-q", "x", "-c", "text", "--base-url", server.url, "--model", "root-model",
                 "--trace", trace, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert_error(result, EXIT_USAGE, trace)


def test_invalid_json_context_file(cli, tmp_path):
    (tmp_path / "data.json").write_text('{"a": 1,, "b": 2}')
    result = cli("query", "-q", "x", "-f", "data.json", "--base-url", closed_port_url(), env={"RLM_MAX_RETRIES": "0"})
    assert_error(result, EXIT_USAGE, "data.json", "JSON")


# ------------------------------------------------------------------------------ sandbox / Docker
def test_no_docker_engine(cli, doc, server):
    result = cli("query", "-q", "x", "-f", str(doc), "--base-url", server.url, "--model", "root-model",
                 env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert_error(result, EXIT_SANDBOX, "no Docker engine answers at unix:///nonexistent.sock", "hint: start Docker")
    trace = next((doc.parent / "traces").glob("*.jsonl"))
    assert '"status": "error"' in trace.read_text()


@pytest.mark.parametrize("args", [("sandbox", "prune"), ("sandbox", "build")])
def test_sandbox_commands_without_docker(cli, args):
    result = cli(*args, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert_error(result, EXIT_SANDBOX, "no Docker engine answers", "start Docker")


def test_sandbox_check_without_docker(cli):
    result = cli("sandbox", "check", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert result.exit_code == EXIT_SANDBOX
    assert "FAIL engine" in result.stdout and "no Docker engine answers" in result.stdout


@pytest.mark.docker
def test_image_missing(cli, doc, server, engine):
    result = cli("query", "-q", "x", "-f", str(doc), "--base-url", server.url, "--model", "root-model",
                 env={"RLM_IMAGE": "rlm-sandbox:does-not-exist"})
    assert_error(result, EXIT_SANDBOX, "rlm-sandbox:does-not-exist is not built", "rlm sandbox build")


@pytest.mark.docker
def test_sandbox_check_with_image_missing(cli, engine):
    result = cli("sandbox", "check", env={"RLM_IMAGE": "rlm-sandbox:does-not-exist"})
    assert result.exit_code == EXIT_SANDBOX
    assert "rlm-sandbox:does-not-exist is missing: run `rlm sandbox build`" in result.stdout


# ------------------------------------------------------------------------------ other commands
def test_interactive_needs_a_context(cli):
    assert_error(cli("interactive"), EXIT_USAGE, "give one context: -f FILE or --context-dir DIR")


def test_interactive_missing_file(cli):
    assert_error(cli("interactive", "-f", "gone.txt", input="q\n"), EXIT_USAGE, "context file not found")


def test_demo_needle_size_too_small(cli):
    result = cli("demo", "needle", "--size", "10")
    assert result.exit_code == EXIT_USAGE
    assert "--size" in result.stderr


def test_trace_show_missing_file(cli):
    assert_error(cli("trace", "show", "missing.jsonl"), EXIT_USAGE, "trace missing.jsonl does not exist",
                 "hint: pass the path of a .jsonl trace")


def test_trace_show_directory_and_empty_file(cli, tmp_path):
    (tmp_path / "d").mkdir()
    assert_error(cli("trace", "show", "d"), EXIT_USAGE, "is a directory")
    (tmp_path / "empty.jsonl").write_text("not json\n")
    assert_error(cli("trace", "show", "empty.jsonl"), EXIT_USAGE, "holds no events")


def test_trace_show_renders_a_run(cli, tmp_path):
    with TraceWriter(tmp_path / "t.jsonl") as trace:
        trace.event("run_start", question="Where is the code?", context={"kind": "str", "total_chars": 10,
                                                                        "n_documents": 1, "source": "doc.txt"},
                    root_model="root-model", sub_model="sub-model", settings={})
        trace.event("model_reply", iteration=1, text="```repl\nprint(1)\n```", model="root-model",
                    usage={"prompt_tokens": 5, "completion_tokens": 2}, latency_s=0.1)
        trace.event("cell", iteration=1, code="print(1)", output="1\n", error=None, timed_out=False,
                    duration_s=0.01, restarted=None, truncated_chars=0)
        trace.event("run_end", answer="7421", status="ok", iterations=1, sub_calls=0, usage={}, duration_s=1.0)
    result = cli("trace", "show", "t.jsonl")
    assert result.exit_code == 0, result.stderr
    for fragment in ("Where is the code?", "iteration 1", "print(1)", "answer: 7421", "status: ok"):
        assert fragment in result.stdout


# ------------------------------------------------------------------------------ error mapping
def test_no_traceback_without_debug(cli):
    result = cli("query", "-q", "x", "-f", "nope.txt")
    assert_error(result, EXIT_USAGE, "context file not found")


DEBUG_BUG = ("BUG: rlm/cli.py:47 decides on tracebacks from sys.argv or ctx.meta['rlm_debug'], which nothing "
             "sets; so DEBUG=true (or debug: true in YAML) and an in-process --debug show no traceback")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(cli, how):
    args = ("query", "-q", "x", "-f", "nope.txt")  # fails after the settings are loaded
    result = cli(*args, "--debug") if how == "flag" else cli(*args, env={"RLM_DEBUG": "true"})
    assert result.exit_code == EXIT_USAGE
    assert "Traceback" in result.stderr and "ContextError" in result.stderr


def test_unexpected_exception_is_exit_1_with_a_bug_hint(cli, doc, monkeypatch):
    import rlm.cli.run

    def broken(*args, **kwargs):
        raise RuntimeError("something odd")

    monkeypatch.setattr(rlm.cli.run, "answer_question", broken)
    result = cli("query", "-q", "x", "-f", str(doc))
    assert_error(result, EXIT_OTHER, "RuntimeError: something odd", "this is a bug in rlm")


def test_keyboard_interrupt_is_exit_130_and_names_the_trace(cli, doc, monkeypatch):
    import rlm.cli.run

    def interrupted(ctx, *args, **kwargs):
        ctx.meta["rlm_trace"] = "traces/partial.jsonl"
        raise KeyboardInterrupt

    monkeypatch.setattr(rlm.cli.run, "answer_question", interrupted)
    result = cli("query", "-q", "x", "-f", str(doc))
    assert_error(result, EXIT_INTERRUPTED, "error: interrupted", "traces/partial.jsonl")


# ------------------------------------------------------------------------------ help
COMMANDS = [(), ("query",), ("interactive",), ("demo",), ("demo", "simple"), ("demo", "needle"), ("config",),
            ("config", "show"), ("trace",), ("trace", "show"), ("sandbox",), ("sandbox", "build"),
            ("sandbox", "check"), ("sandbox", "prune")]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "rlm")
def test_help_of_every_command(cli, command):
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.stderr
    assert "Usage:" in result.stdout
    leaf = command and command[-1] not in ("demo", "config", "trace", "sandbox")
    if leaf:
        assert "--config" in result.stdout and "--debug" in result.stdout


def test_top_level_help_lists_the_commands(cli):
    result = cli("--help")
    for name in ("query", "interactive", "demo", "config", "trace", "sandbox"):
        assert name in result.stdout
