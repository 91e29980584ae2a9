"""The layering rules, read from the source: who may import what."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "rlm"
GUEST = PACKAGE / "sandbox" / "guest"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if GUEST not in p.parents and p.resolve().is_relative_to(PACKAGE))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _importers(top: str) -> list[str]:
    return [p.relative_to(ROOT).as_posix() for p in _modules()
            if any(name == top or name.startswith(top + ".") for name in _imports(p))]


@pytest.mark.parametrize("top", ["typer", "prompt_toolkit", "rich", "click"])
def test_only_the_cli_imports_terminal_libraries(top):
    outside = [m for m in _importers(top) if not m.startswith("rlm/cli/")]
    assert outside == [], f"{top} imported outside rlm/cli/: {outside}"


def test_library_code_never_imports_the_cli():
    outside = [m for m in _importers("rlm.cli") if not m.startswith("rlm/cli/") and m != "rlm/__main__.py"]
    assert outside == [], f"library modules import the CLI: {outside}"


@pytest.mark.parametrize("top, owner", [("docker", "rlm/sandbox/engine.py"),
                                        ("openai", "rlm/llm/openai_client.py"),
                                        ("jupyter_client", "rlm/sandbox/kernel.py")])
def test_one_module_imports_each_adapter_library(top, owner):
    assert _importers(top) == [owner]


def test_import_rlm_is_cheap_and_exports_the_api():
    code = ("import sys, rlm; heavy = [m for m in ('typer', 'rich', 'docker', 'openai', 'jupyter_client') "
            "if m in sys.modules]; print(heavy); from rlm import RLM, RunResult, Settings, RLMError; "
            "print(sorted(rlm.__all__)[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    first = out.stdout.splitlines()[0]
    assert first == "[]", f"`import rlm` pulled in {first}"


def test_the_public_names_resolve():
    import rlm

    for name in rlm.__all__:
        assert getattr(rlm, name) is not None
    assert issubclass(rlm.UsageError, rlm.RLMError) and issubclass(rlm.LLMError, rlm.RLMError)


def test_test_modules_have_unique_names():
    """pytest imports test files by their base name (no packages): two with one name break collection."""
    from collections import Counter

    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert [n for n, count in names.items() if count > 1] == []
