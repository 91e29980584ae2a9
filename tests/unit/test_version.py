"""`rlm --version` and `rlm.__version__`: both name the version in pyproject.toml."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import rlm

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _project_version() -> str:
    text = PYPROJECT.read_text(encoding="utf-8")   # (tomllib is 3.11+; rlm supports 3.10)
    match = re.search(r'^\[project\]\n(?:[^\[].*\n)*?version = "([^"]+)"$', text, re.M)
    assert match, "no version in pyproject.toml's [project] table"
    return match.group(1)


def test_the_package_version_is_the_project_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", rlm.__version__)
    assert rlm.__version__ == _project_version()


def test_the_fallback_when_not_installed_is_the_project_version(monkeypatch):
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert rlm._version() == _project_version()


def test_the_command_prints_its_version_and_exits_0():
    proc = subprocess.run([sys.executable, "-c", "from rlm.cli.app import main; main()", "--version"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"rlm {_project_version()}\n"


def test_version_is_eager_before_a_command():
    proc = subprocess.run([sys.executable, "-c", "from rlm.cli.app import main; main()", "--version", "query"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (proc.returncode, proc.stdout) == (0, f"rlm {_project_version()}\n")
