"""D8: a context folder is mounted as it is, so the host checks what the sandbox will see: a symbolic link
that leaves the folder (or is absolute) is refused by name with exit 2 before any container starts, and
links that stay inside load in the sandbox exactly as the host counted them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import cli_env, run_cli


def _folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    (docs / "real").mkdir(parents=True)
    (docs / "real" / "a.txt").write_text("alpha")
    (docs / "b.txt").write_text("beta")
    (docs / "link.txt").symlink_to("real/a.txt")
    (docs / "more").symlink_to("real")
    return docs


@pytest.mark.parametrize("kind", ["outside", "absolute", "climbs"])
def test_a_link_the_sandbox_could_not_follow_exits_2_naming_it(tmp_path, scripted, kind):
    server = scripted(["FINAL(never)"])
    docs = _folder(tmp_path)
    (tmp_path / "secret.txt").write_text("outside the folder")
    target = {"outside": tmp_path / "secret.txt", "absolute": docs / "b.txt", "climbs": Path("../docs/b.txt")}[kind]
    (docs / "bad.txt").symlink_to(target)
    proc = run_cli("query", "-q", "what?", "--context-dir", str(docs), env=cli_env(server), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert str(docs / "bad.txt") in proc.stderr and "Traceback" not in proc.stderr
    assert ("is absolute" if kind == "absolute" else "leads outside the context folder") in proc.stderr
    assert server.requests == []


@pytest.mark.docker
def test_links_inside_the_folder_reach_the_model_code_as_checked(engine, tmp_path, scripted):
    code = "```repl\nimport json\nprint(json.dumps(context))\n```"
    server = scripted([code, "FINAL(done)"])
    docs = _folder(tmp_path)
    proc = run_cli("query", "-q", "list them", "--context-dir", str(docs), "--quiet", env=cli_env(server),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    shown = server.requests[1]["messages"][-1]["content"]
    assert json.dumps(["beta", "alpha", "alpha"]) in shown       # b.txt, link.txt, real/a.txt; "more" not entered
