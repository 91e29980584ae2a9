"""The public API, ``rlm.RLM``, through the real sandbox against the scripted server over real HTTP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import rlm
from rlm import RLM, ConfigError, ContextError, IterationEvent, RunResult, SubCallEvent, UsageError
from rlm.llm.fake_server import FakeModelServer, repl

pytestmark = pytest.mark.docker

ROOT, SUB = "root-model", "sub-model"


@pytest.fixture
def kwargs(tmp_path, sandbox_settings):
    """Settings by YAML key; the sandbox of the test run (its run root and image)."""
    return {"root_model": ROOT, "sub_model": SUB, "max_iterations": 5, "max_retries": 0,
            "trace_dir": str(tmp_path / "traces"), "run_root": sandbox_settings.run_root,
            "image": sandbox_settings.image, "config": str(tmp_path / "none.yaml")}


@pytest.fixture(autouse=True)
def _empty_config(tmp_path, monkeypatch):
    (tmp_path / "none.yaml").write_text("{}\n")
    for name in ("OLLAMA_BASE_URL", "ROOT_MODEL", "SUB_MODEL", "MAX_ITERATIONS", "RLM_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def _rlm(server: FakeModelServer, kwargs: dict, **more) -> RLM:
    args = dict(kwargs)
    config = args.pop("config")
    return RLM(config, base_url=server.url, **args, **more)


@pytest.mark.parametrize("make_context, code, expected", [
    (lambda tmp: "alpha\nbeta\nThe code is 7421.\n", "print(type(context).__name__, len(context))", "str"),
    (lambda tmp: ["doc one", "doc two", "doc three"], "print(type(context).__name__, len(context))", "list 3"),
    (lambda tmp: {"customers": [{"name": "Ada"}, {"name": "Bo"}]}, "print(context['customers'][1]['name'])", "Bo"),
    (lambda tmp: _file(tmp, "doc.txt", "The answer is 42.\n"), "print(context.strip())", "The answer is 42."),
    (lambda tmp: _folder(tmp), "print(len(context))", "2"),
])
def test_run_takes_every_kind_of_context(tmp_path, kwargs, make_context, code, expected):
    server = FakeModelServer(root_model=ROOT, models=[SUB], root=[repl(code), "FINAL(done)"])
    with server:
        result = _rlm(server, kwargs).run("What is in the context?", make_context(tmp_path))
    assert isinstance(result, RunResult) and result.status == "ok" and result.answer == "done"
    fed_back = [m["content"] for m in server.requests[1]["messages"] if m["role"] == "user"][-1]
    assert expected in fed_back
    assert result.iterations == 2 and result.duration_s > 0
    assert result.usage[ROOT].calls == 2
    trace = Path(result.trace)
    assert trace.is_file() and trace.parent == tmp_path / "traces"
    kinds = [json.loads(line)["kind"] for line in trace.read_text().splitlines()]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"


def _file(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _folder(tmp: Path) -> Path:
    folder = tmp / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("first")
    (folder / "b.txt").write_text("second")
    return folder


def test_callbacks_for_iterations_and_sub_calls(kwargs):
    iterations: list[IterationEvent] = []
    subs: list[SubCallEvent] = []
    events: list[str] = []
    server = FakeModelServer(root_model=ROOT, models=[SUB], sub={"default": "sub says hi"},
                             root=[repl("x = llm_query('hello?')\nprint(x)"), "FINAL(fine)"])
    with server:
        result = _rlm(server, kwargs, on_iteration=iterations.append, on_sub_call=subs.append,
                      on_event=lambda kind, data: events.append(kind)).run("Q?", "some text")
    assert result.answer == "fine" and result.sub_calls == 1
    assert [i.iteration for i in iterations] == [1, 2]
    assert "llm_query" in iterations[0].reply and iterations[0].cells and "sub says hi" in iterations[0].cells[0]["output"]
    assert len(subs) == 1 and subs[0].model == SUB and subs[0].ok and subs[0].reply_chars == len("sub says hi")
    assert "trace" in events and "done" in events
    assert set(result.usage) == {ROOT, SUB}


def test_a_with_block_keeps_one_sandbox_and_its_variables(kwargs):
    server = FakeModelServer(root_model=ROOT, models=[SUB], root=[
        repl("kept = len(context) * 2\nimport os\nprint(os.getpid())"), "FINAL(stored)",
        repl("print('kept is', kept)"), "FINAL(read)"])
    with server:
        with _rlm(server, kwargs) as r:
            first = r.run("Store something", "0123456789")
            second = r.run("Read it back")
        assert first.answer == "stored" and second.answer == "read"
    fed_back = [m["content"] for m in server.requests[3]["messages"] if m["role"] == "user"][-1]
    assert "kept is 20" in fed_back


def test_arun_for_asyncio(kwargs):
    server = FakeModelServer(root_model=ROOT, models=[SUB], root=["FINAL(async answer)"])

    async def main() -> RunResult:
        return await _rlm(server, kwargs).arun("Q?", "text")

    with server:
        result = asyncio.run(main())
    assert result.answer == "async answer" and result.status == "ok"


def test_bad_input_is_a_clear_error_before_any_model_call(kwargs, tmp_path):
    server = FakeModelServer(root_model=ROOT, models=[SUB], root=["FINAL(x)"])
    with server:
        r = _rlm(server, kwargs)
        with pytest.raises(UsageError, match="question is empty"):
            r.run("  ", "text")
        with pytest.raises(ContextError, match="not found"):
            r.run("Q?", tmp_path / "missing.txt")
        with pytest.raises(ContextError, match="not supported"):
            r.run("Q?", 42)  # type: ignore[arg-type]
        assert server.requests == []
    with pytest.raises(ConfigError):
        RLM(kwargs["config"], max_iterations="many")
    with pytest.raises(ConfigError):
        RLM(kwargs["config"], no_such_setting=1)


def test_the_public_names():
    assert {"RLM", "RunResult", "Settings", "RLMError", "UsageError", "LLMError", "SandboxError"} <= set(rlm.__all__)
