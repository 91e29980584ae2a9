"""What a results file's fingerprint holds: the commit and its dirty code files, the reply settings, the code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rlm.bench.fingerprint import code_fingerprint, code_hash, differences, git_state, reply_settings
from rlm.config import Settings
from rlm.llm.base import ModelSettings


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(root)})


def test_only_code_paths_make_a_tree_dirty(tmp_path) -> None:
    (tmp_path / "rlm").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "rlm" / "loop.py").write_text("x = 1\n")
    (tmp_path / "docs" / "notes.md").write_text("notes\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "one")
    state = git_state(tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] == []
    (tmp_path / "docs" / "notes.md").write_text("changed\n")
    (tmp_path / "docs" / "results.jsonl").write_text("{}\n")
    assert git_state(tmp_path)["dirty"] == []               # docs and results files may differ
    (tmp_path / "rlm" / "loop.py").write_text("x = 2\n")
    (tmp_path / "rlm" / "new.py").write_text("y = 1\n")
    assert git_state(tmp_path)["dirty"] == ["rlm/loop.py", "rlm/new.py"]
    assert git_state(tmp_path / "nowhere") == {"commit": None, "dirty": []}


def test_reply_settings_leave_out_urls_keys_and_paths_only() -> None:
    settings = Settings(model=ModelSettings(base_url="http://127.0.0.1:1234/v1", api_key="secret", temperature=0.3))
    got = reply_settings(settings)
    assert "base_url" not in got and "api_key" not in got and "trace_dir" not in got
    assert got["temperature"] == 0.3 and "max_iterations" in got and "root_model" in got
    assert "secret" not in repr(got)


def test_code_hash_is_stable_and_ignores_docstrings() -> None:
    assert code_hash() == code_hash() and len(code_hash()) == 16
    a = 'def f():\n    """Old."""\n    return "Use x."  # c\n'
    assert code_fingerprint(a) == code_fingerprint('def f():\n    """New\n    words."""\n\n    return ("Use x.")\n')
    assert code_fingerprint(a) != code_fingerprint(a.replace("Use x.", "Use y."))


@pytest.mark.parametrize("theirs, ours, said", [
    ({"a": 1, "s": {"t": 0.0}}, {"a": 1, "s": {"t": 0.5}}, ["s.t: 0.0 there, 0.5 now"]),
    ({"a": 1}, {"a": 1, "b": 2}, ["b: None there, 2 now"]),
])
def test_differences_name_each_field(theirs, ours, said) -> None:
    assert differences(theirs, ours) == said
