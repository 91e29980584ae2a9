"""D7: one writer per batch results file.  A second run on the same file stops at once with exit 2 and
names the first one's pid; nothing is run twice, and a killed holder leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rlm.errors import UsageError
from rlm.jobs.results import ResultsLock, ResultWriter

from .conftest import cli_env, run_cli, sigint_default

HOLDER = """
import sys
from rlm.jobs.results import ResultsLock
lock = ResultsLock(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.read()
"""


def _hold(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    assert proc.stdout.readline() == "held\n", proc.stderr.read()
    return proc


def _spec(folder: Path, url: str) -> Path:
    (folder / "doc.txt").write_text("The code is 1234.\n")
    spec = folder / "spec.yaml"
    spec.write_text(f"model: {{base_url: '{url}', root_model: root-model}}\noutput: out.jsonl\n"
                    "queries:\n  - {id: a, question: Q, context_file: doc.txt}\n"
                    "  - {id: b, question: Q, context_file: doc.txt}\n")
    return spec


def test_a_second_batch_on_the_same_results_file_exits_2_naming_the_first(tmp_path, scripted):
    server = scripted(["FINAL(1234)"] * 4)
    spec = _spec(tmp_path, server.url)
    holder = _hold(tmp_path / "out.jsonl")
    try:
        proc = run_cli("batch", "run", str(spec), env=cli_env(), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"pid {holder.pid}" in proc.stderr and "out.jsonl" in proc.stderr
        assert "being written by another rlm process" in proc.stderr and "Traceback" not in proc.stderr
        assert server.requests == []                                  # nothing ran twice
        assert not (tmp_path / "out.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with ResultsLock(tmp_path / "out.jsonl") as lock:                 # the kernel dropped the dead holder's lock
        assert lock.held and lock.lock_path.read_text().split()[0] == str(os.getpid())


def test_the_lock_is_per_file_and_released_cleanly(tmp_path):
    out = tmp_path / "out.jsonl"
    first = ResultsLock(out).acquire()
    with pytest.raises(UsageError, match=rf"pid {os.getpid()}\)"):
        ResultsLock(out).acquire()                                    # even in one process: one writer
    with pytest.raises(UsageError, match="being written by another rlm process"):
        ResultWriter(out)                                             # a writer takes the lock itself
    with ResultWriter(out, lock=first) as writer:                     # or writes under the caller's lock
        writer.write({"id": "a", "status": "ok"})
    with ResultsLock(tmp_path / "other.jsonl"):
        pass
    first.release()
    first.release()                                                   # idempotent
    assert not first.lock_path.exists()                               # no lock file left behind
    with ResultWriter(out) as writer:
        writer.write({"id": "b", "status": "ok"})
    assert [line[:9] for line in out.read_text().splitlines()] == ['{"id": "a', '{"id": "b']
    assert not first.lock_path.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_folder_is_a_usage_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(UsageError, match="cannot lock the results file"):
            ResultsLock(folder / "out.jsonl").acquire()
    finally:
        folder.chmod(0o755)


def test_a_symlink_planted_as_the_lock_file_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    (tmp_path / "out.jsonl.lock").symlink_to(target)
    with pytest.raises(UsageError, match="cannot lock the results file"):
        ResultsLock(tmp_path / "out.jsonl").acquire()
    assert target.read_text() == "keep me"
