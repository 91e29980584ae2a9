"""README's Python example is examples/quickstart.py, and it runs (against the scripted server)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlm.config import CONFIG_ENV_VAR, FIELDS
from rlm.llm.fake_server import FakeModelServer, repl

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "quickstart.py"
RLM_ENV = {name for spec in FIELDS for name in spec.env_names} | {CONFIG_ENV_VAR}


def test_the_readme_shows_the_example_file():
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    assert EXAMPLE.read_text() in blocks


def test_the_example_runs(tmp_path):
    root = [repl("import re\nprint(re.findall(r'vault code is (\\d+)', context))"), "FINAL(4821)",
            repl("n_lines = len(context.splitlines())\nprint(n_lines)"), "FINAL(stored)",
            repl("print(n_lines)"), "FINAL(4001)"]
    with FakeModelServer(root_model="root-model", models=["root-model"], root=root) as server:
        env = {k: v for k, v in os.environ.items() if k not in RLM_ENV}
        env.update(RLM_BASE_URL=server.url, RLM_ROOT_MODEL="root-model", RLM_TRACE_DIR=str(tmp_path / "traces"))
        proc = subprocess.run([sys.executable, str(EXAMPLE)], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "4821" and lines[1].startswith("ok 2 0")
    assert "root-model" in lines[2] and lines[-1] == "4001"
