"""The real CLI in a subprocess (`python -m rlm.cli` and `python cli.py`) against a scripted model
server started in the test process, with the real sandbox.  Marker ``docker``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlm.bench.demo import needle_case
from rlm.config import CONFIG_ENV_VAR, FIELDS
from rlm.llm.fake_server import FakeModelServer, repl

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
ROOT, SUB = "root-model", "sub-model"
RLM_ENV = {name for spec in FIELDS for name in spec.env_names} | {CONFIG_ENV_VAR}


def env_for(server: FakeModelServer | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RLM_ENV}
    if server is not None:
        env.update(RLM_BASE_URL=server.url, RLM_ROOT_MODEL=ROOT, RLM_SUB_MODEL=SUB)
    env.update(RLM_MAX_RETRIES="0", PYTHONUNBUFFERED="1", COLUMNS="200", **extra)
    return env


def rlm(*args: str, env: dict, cwd: Path, input: str | None = None, script: bool = False,
        timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "cli.py"] if script else [sys.executable, "-m", "rlm"]
    return subprocess.run(cmd + list(args), env=env, cwd=cwd, input=input, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=sigint_default)


def sigint_default() -> None:
    """In the child, before exec: a background job ignores SIGINT and children inherit that, so a
    test's Ctrl-C would never reach rlm; with the default restored, rlm gets KeyboardInterrupt as in
    a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def doc(tmp_path) -> Path:
    path = tmp_path / "doc.txt"
    path.write_text("alpha beta gamma\n" * 200 + "The secret code is 7421.\n" + "delta epsilon\n" * 100)
    return path


def test_query_json_then_trace_show(engine, scripted, doc, tmp_path):
    server = scripted([
        repl("import re\ncode = re.search(r'secret code is (\\d+)', context).group(1)\n"
             "check = llm_query('Is this a code? ' + code)\nprint(code, check)"),
        "FINAL_VAR(code)",
    ], sub={"default": "yes"})
    proc = rlm("query", "-q", "What is the secret code?", "-f", str(doc), "--json", env=env_for(server), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1
    data = json.loads(proc.stdout)
    assert (data["answer"], data["status"], data["iterations"], data["sub_calls"]) == ("7421", "ok", 2, 1)
    assert set(data["usage"]) == {ROOT, SUB} and data["usage"][ROOT]["calls"] == 2
    assert data["duration_s"] > 0
    trace = Path(data["trace"]) if Path(data["trace"]).is_absolute() else tmp_path / data["trace"]
    assert trace.is_file() and trace.parent == tmp_path / "traces"
    assert "Traceback" not in proc.stderr

    shown = rlm("trace", "show", str(trace), env=env_for(None), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for fragment in ("What is the secret code?", "iteration 1", "iteration 2", "llm_query", "sub-calls: 1",
                     "answer: 7421", "status: ok"):
        assert fragment in shown.stdout, fragment


def test_query_inline_text_plain_answer_and_stats_via_cli_py(engine, scripted, tmp_path):
    server = scripted([repl("print(len(context))"), "The answer is FINAL(seven)"])
    trace = tmp_path / "inline.jsonl"
    proc = rlm("query", "-q", "Which number?", "-c", "The number is seven.", "--stats", "--trace", str(trace),
               env=env_for(server), cwd=REPO, script=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "seven\n"
    for fragment in ("sandbox ready in", "iteration 1/20", "iteration 2/20", "run statistics", "iterations",
                     "sub-calls", f"tokens in / out ({ROOT})", "time: sandbox start", "time: model",
                     "time: execution", "time: total"):
        assert fragment in proc.stderr, fragment
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert events[-1]["status"] == "ok" and events[-1]["answer"] == "seven"


def test_demo_needle(engine, scripted, tmp_path):
    case = needle_case(20000, 0)
    server = scripted([repl("import re\nm = re.search(r'secret access code is (\\d+)', context)\nFINAL(m.group(1))")])
    proc = rlm("demo", "needle", "--size", "20000", env=env_for(server), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["answer:", case.expected]
    assert lines[1].split() == ["expected:", case.expected]
    assert lines[2].startswith("matched:  yes")
    assert "20,000 characters" in proc.stderr


def test_interactive_keeps_variables_between_questions(engine, scripted, doc, tmp_path):
    server = scripted([
        repl("saved = context.count('alpha')\nprint(saved)"),
        "FINAL(first done)",
        repl("FINAL(f'saved={saved}')"),
    ])
    stdin = "How many alphas are there?\n:stats\n\nWhat did you save?\n:stats\n"
    proc = rlm("interactive", "-f", str(doc), env=env_for(server), cwd=tmp_path, input=stdin)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "first done"
    assert json.loads(lines[1])["questions"] == 1
    assert lines[2] == "saved=200"
    stats = json.loads(lines[3])
    assert stats["questions"] == 2 and stats["iterations"] == 3
    assert len(list((tmp_path / "traces").glob("*.jsonl"))) == 2
    assert "sandbox ready" in proc.stderr


def test_sandbox_check_prune_and_build(engine, tmp_path):
    from rlm.sandbox.image import image_status

    check = rlm("sandbox", "check", env=env_for(None), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "container and kernel ready in" in check.stdout
    assert "trivial cell median" in check.stdout and " ms" in check.stdout
    prune = rlm("sandbox", "prune", env=env_for(None), cwd=tmp_path)
    assert prune.returncode == 0, prune.stderr
    assert prune.stdout.startswith("removed ")
    if not image_status(engine, REPO).current:
        pytest.skip("the image is stale; the test does not rebuild it")
    build = rlm("sandbox", "build", env=env_for(None), cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    assert "is current" in build.stdout


def test_config_show_json(tmp_path):
    proc = rlm("config", "show", "--json", env=env_for(None, MAX_ITERATIONS="7", SUB_MODEL="small"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["max_iterations"] == 7 and data["sub_model"] == "small"
    assert "max_sub_call_chars" in data and "cell_timeout_s" in data


def test_bad_input_exit_codes_in_a_real_process(tmp_path):
    missing = rlm("query", "-q", "x", "-f", "missing.txt", env=env_for(None), cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: context file not found")
    debug = rlm("query", "-q", "x", "-f", "missing.txt", "--debug", env=env_for(None), cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    unreachable = rlm("query", "-q", "x", "-c", "text", "--base-url", "http://127.0.0.1:9/v1",
                      env=env_for(None), cwd=tmp_path)
    assert unreachable.returncode == 4 and "cannot reach the model server" in unreachable.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_the_run_keeps_the_trace_and_removes_the_container(engine, scripted, tmp_path, sig):
    from rlm.sandbox.engine import Engine

    server = scripted([repl("llm_query('cell started')\nimport time\ntime.sleep(60)")])
    trace = tmp_path / "interrupted.jsonl"
    env = env_for(server, EXECUTION_TIMEOUT="300")
    proc = subprocess.Popen([sys.executable, "-m", "rlm", "query", "-q", "Wait", "-c", "some text",
                             "--trace", str(trace)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    try:
        deadline = time.monotonic() + 60
        # the cell is running once its llm_query reached the model server
        while not any(r["model"] == SUB for r in server.requests):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the cell never started"
            time.sleep(0.02)
        labelled = Engine()
        try:
            running = labelled.list_labelled(f"rlm.owner_pid={proc.pid}")
            assert running, "the run's container should exist"
            run_dirs = [Path(c.labels["rlm.run_dir"]) for c in running if c.labels.get("rlm.run_dir")]
            proc.send_signal(sig)
            stdout, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 130, stderr
            assert "error: interrupted" in stderr
            assert f"the partial trace is kept at {trace}" in stderr
            assert "Traceback" not in stderr
            events = [json.loads(line) for line in trace.read_text().splitlines()]
            assert events[0]["kind"] == "run_start"
            assert events[-1]["kind"] == "run_end" and events[-1]["status"] == "interrupted"
            assert labelled.list_labelled(f"rlm.owner_pid={proc.pid}") == []
            assert run_dirs and not any(d.exists() for d in run_dirs), "the run folders are removed too"
        finally:
            labelled.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("form", ["at-file", "question-file", "stdin"])
def test_a_long_question_from_a_file_or_stdin(scripted, doc, tmp_path, form):
    """A question over the OS argument limit (~128 KB) reaches the model whole."""
    question = "Which line is it? " + "x" * 200_000 + " END-OF-QUESTION"
    qfile = tmp_path / "question.txt"
    qfile.write_text(question)
    server = scripted(["FINAL(found)"])
    args = {"at-file": ["-q", f"@{qfile}"], "question-file": ["--question-file", str(qfile)],
            "stdin": ["-q", "-"]}[form]
    proc = rlm("query", *args, "-f", str(doc), "--quiet", env=env_for(server), cwd=tmp_path,
               input=question if form == "stdin" else None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "found\n"
    sent = "\n".join(m["content"] for m in server.requests[0]["messages"])
    assert question in sent


def test_question_file_errors_are_usage_errors(scripted, doc, tmp_path):
    server = scripted(["FINAL(never)"])
    missing = rlm("query", "-q", "@nope.txt", "-f", str(doc), env=env_for(server), cwd=tmp_path)
    assert missing.returncode == 2 and "question file nope.txt is not a regular file" in missing.stderr
    both = rlm("query", "-q", "x", "--question-file", str(doc), "-f", str(doc), env=env_for(server), cwd=tmp_path)
    assert both.returncode == 2 and "give the question once" in both.stderr
    (tmp_path / "empty.txt").write_text("  \n")
    empty = rlm("query", "-q", "@empty.txt", "-f", str(doc), env=env_for(server), cwd=tmp_path)
    assert empty.returncode == 2 and "the question is empty" in empty.stderr
    assert server.requests == []
