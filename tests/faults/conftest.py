"""The fault-round suite: one regression test (or more) per defect found by the fault rounds.

Every test here uses real processes and the scripted OpenAI-compatible servers (``rlm/llm/fake_server.py``,
real HTTP on 127.0.0.1); tests that need the sandbox also carry the ``docker`` marker.  The whole folder is
marked ``faults``, so ``pytest -m faults`` runs just this suite; the README's test command (``pytest``, with
``testpaths = ["tests"]``) collects it with the rest.

Which file covers which defect (issue 33):

==========  ===================================================  ==========================================
defect      what                                                 file
==========  ===================================================  ==========================================
D1          a hung sub-call holds the run (sub-call deadlines)   test_subcall_faults.py
D2, D9      ``arun`` cancellation; threads in one ``with RLM()``  test_api_faults.py
D3          a full disk under the trace                          test_trace_faults.py
D4          deep JSON / YAML from users                          test_deep_json.py (and test_config_faults.py)
D5          a non-UTF-8 ``.env``                                  test_config_faults.py
D6, D13     Retry-After; a truncated body                        test_client_faults.py
D7          two batch runs on one results file                   test_results_lock.py
D8          symbolic links in a context folder                   test_context_links.py
D10         quadratic FINAL scanning                             test_parsing_faults.py
D11         run folders without ``owner.json``                    test_run_folder_faults.py
D12         unbounded problem lists                              test_config_faults.py
SIGINT      Ctrl-C from a background job                         test_sigint.py
==========  ===================================================  ==========================================

Helpers for every file of the suite: ``cli_env`` (an environment free of the user's rlm settings,
pointed at a scripted server) and ``run_cli`` (``python -m rlm`` in a child that gets SIGINT back: a
background job ignores SIGINT and its children inherit that, see ``sigint_default``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rlm.config import CONFIG_ENV_VAR, FIELDS
from rlm.llm.fake_server import FakeModelServer

HERE = Path(__file__).resolve().parent
ROOT, SUB = "root-model", "sub-model"
RLM_ENV = {name for spec in FIELDS for name in spec.env_names} | {CONFIG_ENV_VAR}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault-round regression suite (tests/faults)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.faults)


def sigint_default() -> None:
    """In a child before exec: SIGINT back at its default, so Python turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_env(server: FakeModelServer | None = None, **extra: str) -> dict[str, str]:
    """The current environment without any rlm setting, pointed at ``server`` when given."""
    env = {k: v for k, v in os.environ.items() if k not in RLM_ENV}
    if server is not None:
        env.update(RLM_BASE_URL=server.url, RLM_ROOT_MODEL=ROOT, RLM_SUB_MODEL=SUB)
    env.update(RLM_MAX_RETRIES="0", PYTHONUNBUFFERED="1", COLUMNS="200", **extra)
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m rlm ARGS`` in a child process (SIGINT at its default), its output captured."""
    return subprocess.run([sys.executable, "-m", "rlm", *args], env=env, cwd=cwd, input=input, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=sigint_default)


