"""Several contexts in one session: ``context``, ``context_1``, ``context_2``, ... in a ``with RLM()`` block
and with ``:load`` in ``rlm interactive``; through the real sandbox against the scripted server over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlm import RLM, ContextError
from rlm.cli import app
from rlm.llm.fake_server import FakeModelServer, repl
from rlm.sandbox import SandboxSession

pytestmark = pytest.mark.docker

ROOT, SUB = "root-model", "sub-model"


def fed_back(server: FakeModelServer) -> list[str]:
    """The last user message of every root request, in order (the question, then each cell's output)."""
    return [[m for m in r["messages"] if m["role"] == "user"][-1]["content"]
            for r in server.requests if r["model"] == ROOT]


def systems(server: FakeModelServer) -> list[str]:
    return [r["messages"][0]["content"] for r in server.requests if r["model"] == ROOT]


@pytest.fixture
def kwargs(tmp_path, sandbox_settings, monkeypatch):
    (tmp_path / "none.yaml").write_text("{}\n")
    for name in ("OLLAMA_BASE_URL", "ROOT_MODEL", "SUB_MODEL", "MAX_ITERATIONS", "RLM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return {"root_model": ROOT, "sub_model": SUB, "max_iterations": 5, "max_retries": 0,
            "trace_dir": str(tmp_path / "traces"), "run_root": sandbox_settings.run_root,
            "image": sandbox_settings.image}


def test_three_contexts_in_one_block_each_still_readable(tmp_path, kwargs, engine):
    crm = tmp_path / "crm.json"
    crm.write_text(json.dumps({"owner": "Ada", "rows": [1, 2, 3]}))
    server = FakeModelServer(root_model=ROOT, models=[SUB], root=[
        repl("kept = 'set before'\nprint('first', context[:5])"), "FINAL(one)",
        repl("print('second', context[:5], context_1['owner'], kept)"), "FINAL(two)",
        repl("print('third', context[:5], context_1['owner'], context_2[1], len(context_2), kept)"), "FINAL(three)",
        repl("context_1 = None\ncontext = 'gone'"), "FINAL(overwritten)",
        repl("print('restored', context[:5], context_1['owner'], context_2[0])"), "FINAL(restored)",
        repl("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
        repl("print('after restart', context[:5], context_1['owner'], context_2[0], 'kept' in globals())"),
        "FINAL(restarted)",
        repl("print('new sandbox', context[:5], context_1['owner'], context_2[1])"), "FINAL(reset)",
    ])
    with server, RLM(str(tmp_path / "none.yaml"), base_url=server.url, **kwargs) as r:
        assert r.run("Keep a variable", "alpha text").answer == "one"
        assert r.run("Use the CRM too", crm).answer == "two"
        assert r.add_context(["gamma doc", "delta doc"]) == "context_2"
        assert r.run("And the notes", ["gamma doc", "delta doc"]).answer == "three"   # known: not loaded again
        assert r.add_context(crm) == "context_1" and r.add_context("alpha text") == "context"
        with pytest.raises(ContextError, match="not found"):
            r.add_context(tmp_path / "missing.txt")
        assert r.run("Overwrite them", "alpha text").answer == "overwritten"
        assert r.run("Read them again").answer == "restored"
        assert r.run("Crash the kernel").answer == "restarted"
        r.reset()
        assert r.run("In a new sandbox").answer == "reset"
    out = "\n".join(fed_back(server))
    assert "first alpha" in out
    assert "second alpha Ada set before" in out
    assert "third alpha Ada delta doc 2 set before" in out
    assert "restored alpha Ada gamma doc" in out
    assert "after restart alpha Ada gamma doc False" in out     # variables lost with the kernel, contexts not
    assert "new sandbox alpha Ada delta doc" in out
    first, second, third = systems(server)[0], systems(server)[2], systems(server)[4]
    assert "context_1" not in first
    assert "- `context_1`: dict, " in second and "source: crm.json" in second and "context_2" not in second
    assert "- `context_1`: dict, " in third
    assert "- `context_2`: list, 18 characters, 2 documents; source: a list given" in third
    assert "- `context_2`" in systems(server)[-1]                # the new sandbox has them all
    start = json.loads(Path(r.last_trace).read_text().splitlines()[0])  # type: ignore[arg-type]
    assert [o["name"] for o in start["context"]["others"]] == ["context_1", "context_2"]


def test_a_session_without_the_later_folder_refuses_it(engine, sandbox_settings, tmp_path):
    """A session that mounts one fixed context cannot take another (no new mount on a running container)."""
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    with SandboxSession(context=doc, settings=sandbox_settings, engine=engine) as session:
        with pytest.raises(Exception, match="mounts one fixed context"):
            session.add_context(doc)
        assert session.execute("print(context)").stdout.strip() == "text"


def test_a_later_context_as_a_folder_and_a_bad_one_leaves_the_session(engine, sandbox_settings, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("first document")
    (docs / "b.txt").write_text("second document")
    first = tmp_path / "first.txt"
    first.write_text("the first")
    with SandboxSession(settings=sandbox_settings, engine=engine, attachable=True) as session:
        assert session.add_context(first) == "context"
        assert session.execute("x = 41").error is None
        assert session.add_context(docs, "docs/") == "context_1"
        ex = session.execute("print(x + 1, context, sorted(d.path for d in context_1))")
        assert ex.stdout.strip() == "42 the first ['a.txt', 'b.txt']"
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        with pytest.raises(ContextError, match="could not load bad.json as context_2"):
            session.add_context(bad)
        assert session.add_context(first, "again") == "context_2"     # the failed one left no gap
        ex = session.execute("print(x, context_2, 'context_3' in globals())")
        assert ex.stdout.strip() == "41 the first False"


def test_a_recreated_container_loads_every_context_again(engine, sandbox_settings, tmp_path):
    first, second = tmp_path / "first.txt", tmp_path / "second.jsonl"
    first.write_text("the first")
    second.write_text('{"n": 1}\n{"n": 2}\n')
    with SandboxSession(settings=sandbox_settings, engine=engine, attachable=True) as session:
        assert session.add_context(first) == "context"
        assert session.add_context(second) == "context_1"
        old = session.container_id
        assert old is not None
        engine.remove(old)   # the container is gone: the next cell brings a new one
        ex = session.execute("print(context, [d['n'] for d in context_1])")
        assert ex.restarted == "container" and session.container_id != old
        assert ex.stdout.strip() == "the first [1, 2]"


@pytest.fixture
def cli(tmp_path, monkeypatch, engine, clean_rlm_env):
    return CliRunner()


def test_interactive_load_adds_a_context_and_keeps_variables(cli, tmp_path):
    (tmp_path / "doc.txt").write_text("first doc")
    (tmp_path / "more.txt").write_text("second doc")
    server = FakeModelServer(root_model=ROOT, models=[SUB], root=[
        repl("kept = 5"), "FINAL(set)",
        repl("print(context, '|', context_1, '|', kept)"), "FINAL(read)"])
    env = {"RLM_BASE_URL": server.url, "RLM_ROOT_MODEL": ROOT, "RLM_SUB_MODEL": SUB, "RLM_MAX_RETRIES": "0"}
    with server:
        result = cli.invoke(app, ["interactive", "-f", "doc.txt", "--quiet"], env=env,
                            input="set it\n:load missing.txt\n:load more.txt\nread both\n:quit\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["set", "(loaded more.txt as context_1)", "read"]
    assert "could not load missing.txt" in result.stderr
    assert "first doc | second doc | 5" in fed_back(server)[3]
    assert "source: more.txt" in systems(server)[2]
