"""The set-up scripts' output (scripts/_lib.sh): one line per step with its time, the details in
a log, the log's tail only when a step fails, everything on the terminal with RLM_SETUP_VERBOSE=1.
Real bash runs of the library with stand-in steps (no apt, Docker or compiler)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "scripts" / "_lib.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is needed")

STEPS = r"""
set -euo pipefail
source "$LIB"
work()    { say "installing things"; echo "apt: unpacking 1234 files"; echo "dpkg: warning" >&2; }
nothing() { note "already installed"; }
advice()  { warn "gVisor: not installed; to add it: sudo ..."; echo "detail"; }
failing() { say "compiling"; echo "cmake: error: boom"; false; echo "never printed"; }
dying()   { say "compiling"; echo "context line"; die "building failed (see $(_details))"; }
step "first" work
step "second" nothing
step "third" advice
case "${MODE:-}" in
    fail) step "fourth" failing ;;
    die)  step "fourth" dying ;;
    interrupt) step "fourth" kill -INT $$ ;;
esac
echo "the tool's own output"
"""


def run(tmp_path: Path, mode: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "steps.sh"
    script.write_text(STEPS)
    full = {k: v for k, v in os.environ.items() if not k.startswith("RLM_SETUP")}
    full.update(LIB=str(LIB), MODE=mode, RLM_SETUP_LOG=str(tmp_path / "setup.log"), **env)
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=full, timeout=60,
                          stdin=subprocess.DEVNULL)


def step_line(label: str, result: str) -> str:
    return rf"\[rlm setup\] {label} \.\.\. {result} \(\d+\.\ds\)"


def test_one_line_per_step_and_the_details_in_the_log(tmp_path):
    proc = run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "the tool's own output\n"
    err = proc.stderr
    assert err.count(f"details: {tmp_path / 'setup.log'}") == 1
    assert re.search(step_line("first", "ok") + "\n", err)
    assert re.search(step_line("second", "ok") + ": already installed\n", err)
    assert "gVisor: not installed; to add it" in err   # a warning is shown
    assert "apt: unpacking" not in err and "dpkg: warning" not in err and "\ndetail\n" not in err
    log = (tmp_path / "setup.log").read_text()
    for line in ("installing things", "apt: unpacking 1234 files", "dpkg: warning", "already installed", "detail"):
        assert line in log


@pytest.mark.parametrize("mode,code", [("fail", 1), ("die", 1)])
def test_a_failing_step_shows_the_logs_tail_and_keeps_the_exit_code(tmp_path, mode, code):
    proc = run(tmp_path, mode)
    assert proc.returncode == code
    assert "the tool's own output" not in proc.stdout
    err = proc.stderr
    assert re.search(step_line("fourth", "FAILED"), err), err
    assert f"the last 40 lines of {tmp_path / 'setup.log'}:" in err
    assert "  | [rlm setup] compiling" in err
    assert ("  | cmake: error: boom" if mode == "fail" else "  | context line") in err
    assert "never printed" not in err
    if mode == "die":   # the message last, naming the log
        assert err.rstrip("\n").endswith(f"[rlm setup] ERROR: building failed (see {tmp_path / 'setup.log'})")


def test_the_tail_is_bounded(tmp_path):
    proc = run(tmp_path, "fail", RLM_SETUP_TAIL="3")
    tail = [line for line in proc.stderr.splitlines() if line.startswith("  | ")]
    assert len(tail) == 3 and tail[1:] == ["  | [rlm setup] compiling", "  | cmake: error: boom"]
    assert tail[0].startswith("  | == fourth (")


def test_an_interrupted_step_says_so(tmp_path):
    proc = run(tmp_path, "interrupt")
    assert proc.returncode == 130
    assert re.search(step_line("fourth", "interrupted"), proc.stderr), proc.stderr


def test_verbose_prints_everything_and_writes_no_log(tmp_path):
    proc = run(tmp_path, "die", RLM_SETUP_VERBOSE="1")
    assert proc.returncode == 1
    err = proc.stderr
    assert "apt: unpacking 1234 files" in proc.stdout + err and "dpkg: warning" in err
    assert "[rlm setup] installing things" in err and "context line" in proc.stdout
    assert re.search(r"\[rlm setup\] fourth: FAILED \(\d+\.\ds\)", err)
    assert err.rstrip("\n").endswith("[rlm setup] ERROR: building failed (see above)")
    assert "the last 40 lines" not in err and not (tmp_path / "setup.log").exists()


def test_quiet_hides_the_steps_that_had_nothing_to_do(tmp_path):
    proc = run(tmp_path, RLM_SETUP_QUIET="1")
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert re.search(step_line("first", "ok"), err)          # it did some work
    assert "second" not in err and "already installed" not in err
    assert "gVisor: not installed" in err and "third ..." not in err


def test_a_step_fails_without_set_e_too(tmp_path):
    script = tmp_path / "plain.sh"
    script.write_text('source "$LIB"\nf() { echo "x"; false; }\nstep "plain" f\necho "rc=$?"\n')
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LIB": str(LIB), "RLM_SETUP_LOG": str(tmp_path / "log")})
    assert proc.stdout == "rc=1\n"
    assert re.search(step_line("plain", "FAILED"), proc.stderr)


def test_the_scripts_parse():
    for name in ("_lib.sh", "_gvisor.sh", "setup", "rlm", "test"):
        proc = subprocess.run(["bash", "-n", str(LIB.parent / name)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr


# ---- llama.cpp's server built in the background while the rest is set up ----------------------

BUILD = r"""
set -euo pipefail
source "$LIB"
RLM_VENV="$FAKE_VENV"
ensure_build_tools() { :; }
start_model_build force
case "${MODE:-}" in
    die) step "docker engine" die "no engine" ;;
esac
ensure_local_model force
echo "done"
"""

FAKE_RLM = r"""#!/usr/bin/env bash
case "$1 $2" in
    "model build")
        echo $$ > "$STATE/build.pid"
        [ "${BUILD_FAILS:-0}" = 1 ] && { echo "cmake: error: boom"; exit 3; }
        [ "${BUILD_HANGS:-0}" = 1 ] && exec sleep 120
        echo "built llama-server" ; touch "$STATE/built" ;;
    "model install")
        echo "installed; the model answers" ;;
esac
"""


def run_build(tmp_path: Path, mode: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "rlm").write_text(FAKE_RLM)
    (venv / "python").write_text("#!/usr/bin/env bash\nexit 1\n")   # no runtime is installed
    for name in ("rlm", "python"):
        (venv / name).chmod(0o755)
    script = tmp_path / "build.sh"
    script.write_text(BUILD)
    full = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    full.update(LIB=str(LIB), MODE=mode, RLM_SETUP_LOG=str(tmp_path / "setup.log"), STATE=str(tmp_path),
                FAKE_VENV=str(tmp_path / "venv"), **env)
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=full, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_the_build_started_early_is_waited_for(tmp_path):
    proc = run_build(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n" and (tmp_path / "built").exists()
    err = proc.stderr
    assert re.search(step_line("llama.cpp server: build started in the background", "ok"), err), err
    assert re.search(step_line(r"llama.cpp server \(built once from pinned source\)", "ok"), err)
    assert re.search(step_line(r"embedded model \(weights, a test completion\)", "ok"), err)
    log = (tmp_path / "setup.log").read_text()
    assert "built llama-server" in log and "installed; the model answers" in log


def test_a_failed_background_build_fails_its_step(tmp_path):
    proc = run_build(tmp_path, BUILD_FAILS="1")
    assert proc.returncode == 1 and "done" not in proc.stdout
    err = proc.stderr
    assert re.search(step_line(r"llama.cpp server \(built once from pinned source\)", "FAILED"), err), err
    assert "  | cmake: error: boom" in err
    assert "[rlm setup] ERROR: building llama.cpp's server failed (exit 3;" in err


def test_an_early_end_stops_the_background_build(tmp_path):
    proc = run_build(tmp_path, "die", BUILD_HANGS="1")
    assert proc.returncode == 1 and "[rlm setup] ERROR: no engine" in proc.stderr
    pid = int((tmp_path / "build.pid").read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:   # SIGTERM was sent at exit; wait for the process to be gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        pytest.fail("the background build was left running")
