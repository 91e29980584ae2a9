"""D3, a full disk under the trace: the run still returns its answer, says in one line that its
trace is incomplete and exits as the run ends (0 here), never "a bug in rlm".  Real sandbox,
scripted model server over HTTP.  Marker ``docker``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlm.cli import app
from rlm.config import CONFIG_ENV_VAR, FIELDS
from rlm.core.trace import read_trace
from rlm.llm.fake_server import FakeModelServer

pytestmark = pytest.mark.docker

ROOT = "root-model"
SCRIPT = ["```repl\nprint('x' * 6000)\n```", "```repl\nprint('y' * 6000)\n```", "FINAL(the answer is 42)"]


@pytest.fixture
def cli(tmp_path, monkeypatch, engine):
    for spec in FIELDS:
        for name in spec.env_names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    servers: list[FakeModelServer] = []

    def invoke(*args: str, env: dict | None = None, input: str | None = None):
        server = FakeModelServer(root_model=ROOT, models=[ROOT], root=list(SCRIPT))
        servers.append(server)
        env = {"RLM_BASE_URL": server.url, "RLM_ROOT_MODEL": ROOT, "RLM_MAX_RETRIES": "0", "COLUMNS": "200",
               **(env or {})}
        return CliRunner().invoke(app, list(args), env=env, input=input)

    yield invoke
    for server in servers:
        server.close()


def assert_answered_with_incomplete_trace(result, trace: str) -> None:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    assert "bug in rlm" not in result.stderr and "Traceback" not in result.stderr
    said = [line for line in result.stderr.splitlines() if "incomplete" in line]
    assert said == [f"warning: the trace {trace} is incomplete: no space left on device (the run itself went on)"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_trace_on_a_full_device(cli):
    result = cli("query", "-q", "What is the answer?", "-c", "some text", "--trace", "/dev/full", "--quiet")
    assert_answered_with_incomplete_trace(result, "/dev/full")
    assert result.stdout == "the answer is 42\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_trace_on_a_full_device_with_json_and_view(cli):
    result = cli("query", "-q", "What is the answer?", "-c", "some text", "--trace", "/dev/full", "--json",
                 "--view")
    assert_answered_with_incomplete_trace(result, "/dev/full")
    data = json.loads(result.stdout)
    assert (data["answer"], data["status"]) == ("the answer is 42", "ok")
    assert "no trace page" in result.stderr


@pytest.fixture
def nearly_full_disk(tmp_path):
    """A 64 KiB tmpfs with one 4 KiB page left (needs root; skipped where mount is refused)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        (mount / "gap").write_bytes(b"g" * 4096)
        with (mount / "filler").open("wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"f" * 4096)
            except OSError:
                pass
        (mount / "gap").unlink()
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_trace_on_a_disk_that_fills_mid_run(cli, nearly_full_disk):
    trace = nearly_full_disk / "run.jsonl"
    result = cli("query", "-q", "What is the answer?", "-c", "some text", "--trace", str(trace))
    assert_answered_with_incomplete_trace(result, str(trace))
    assert result.stdout == "the answer is 42\n"
    events = read_trace(trace)  # the lines written before the disk filled are whole
    assert events[0]["kind"] == "run_start" and "run_end" not in [e["kind"] for e in events]
    shown = CliRunner().invoke(app, ["trace", "show", str(trace)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "status: incomplete" in shown.stdout


def test_interactive_on_a_full_trace_folder_answers_and_keeps_the_session(cli, nearly_full_disk):
    doc = nearly_full_disk.parent / "doc.txt"
    doc.write_text("some text")
    result = cli("interactive", "-f", str(doc), "--quiet", input="What is the answer?\n:view\n:stats\n",
                 env={"RLM_TRACE_DIR": str(nearly_full_disk / "traces")})
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "bug in rlm" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "the answer is 42" and json.loads(lines[-1])["questions"] == 1
    assert "is incomplete: no space left on device" in result.stderr
    assert "no trace page" in result.stderr  # :view says why in one line; the session goes on to :stats
