"""`batch run` command: validation before any model call, exit codes (no Docker needed)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from rlm.cli import app
from rlm.llm.fake_server import FakeModelServer


def test_invalid_spec_exits_2_listing_problems_and_calls_no_model(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    with FakeModelServer() as server:
        spec.write_text(f"model: {{base_url: '{server.url}', root_model: root-model}}\n"
                        "queries:\n  - {id: a, question: Q, context_file: nope.txt}\n"
                        "  - {id: a, question: Q, context: x, colour: red}\n")
        result = CliRunner().invoke(app, ["batch", "run", str(spec)])
        assert result.exit_code == 2, result.output
        assert "3 problems in batch spec" in result.output
        assert "context file not found" in result.output and "duplicate id 'a'" in result.output
        assert "unknown key 'colour'" in result.output
        assert server.requests == []
    assert not (tmp_path / "s.results.jsonl").exists()


def test_unreachable_model_server_exits_4_before_any_sandbox(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("model: {base_url: 'http://127.0.0.1:9/v1', max_retries: 0}\n"
                    "queries: [{id: a, question: Q, context: x}]\n")
    result = CliRunner().invoke(app, ["batch", "run", str(spec)])
    assert result.exit_code == 4, result.output
    assert "cannot reach the model server" in result.output


def test_everything_done_already_makes_no_request(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    out = tmp_path / "s.results.jsonl"
    out.write_text('{"id": "a", "status": "ok", "answer": "x", "duration_s": 1.0, "usage": {}}\n')
    with FakeModelServer() as server:
        spec.write_text(f"model: {{base_url: '{server.url}', root_model: root-model}}\n"
                        "queries: [{id: a, question: Q, context: x, expected: x}]\n")
        result = CliRunner().invoke(app, ["batch", "run", str(spec), "--quiet"])
        assert result.exit_code == 0, result.output
        assert server.requests == []
    assert "1/1 (100%)" in result.output


def test_benchmark_with_no_server_configured_goes_to_the_embedded_model(tmp_path: Path, monkeypatch) -> None:
    """No base URL anywhere and nothing answering: `benchmark` takes the embedded-model path (here:
    nothing installed in an empty cache, so the error names the install command), not a bare
    "cannot reach the model server"."""
    import rlm.llm.local.server as embedded

    for name in ("OLLAMA_BASE_URL", "RLM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(embedded, "probe_url", lambda url, timeout=1.0: False)
    result = CliRunner().invoke(app, ["benchmark", "--name", "s_niah", "--sizes", "2k", "--n", "1"])
    assert result.exit_code == 4, result.output
    assert "no model server answers at http://localhost:11434/v1" in result.output
    assert "rlm model install" in result.output


def test_executor_ray_without_ray_installed_is_a_usage_error_saying_how_to_install(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)            # `import ray` now fails as if not installed
    spec = tmp_path / "s.yaml"
    with FakeModelServer() as server:
        spec.write_text(f"model: {{base_url: '{server.url}', root_model: root-model}}\n"
                        "queries: [{id: a, question: Q, context: x}]\n")
        for args in (["--executor", "ray"], ["--executor", "ray", "--address", "127.0.0.1:1"]):
            result = CliRunner().invoke(app, ["batch", "run", str(spec), *args])
            assert result.exit_code == 2, result.output
            assert "the ray executor needs Ray" in result.output and "pip install 'rlm[ray]'" in result.output
        spec.write_text(spec.read_text() + "executor: ray\n")   # the same from the spec
        result = CliRunner().invoke(app, ["batch", "run", str(spec)])
        assert result.exit_code == 2 and "pip install 'rlm[ray]'" in result.output
        assert server.requests == []


def test_bad_executor_flags_exit_2(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("model: {base_url: 'http://127.0.0.1:9/v1'}\nqueries: [{id: a, question: Q, context: x}]\n")
    result = CliRunner().invoke(app, ["batch", "run", str(spec), "--address", "127.0.0.1:1"])
    assert result.exit_code == 2 and "--address is for the ray executor" in result.output
    result = CliRunner().invoke(app, ["batch", "run", str(spec), "--executor", "dask"])
    assert result.exit_code == 2 and "--executor must be local or ray" in result.output


def test_a_spec_reaching_outside_its_folder_exits_2_naming_the_query_and_path(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("private\n")
    folder = tmp_path / "received"
    folder.mkdir()
    spec = folder / "s.yaml"
    with FakeModelServer() as server:
        spec.write_text(f"model: {{base_url: '{server.url}', root_model: root-model}}\n"
                        f"queries: [{{id: exfil, question: Q, context_file: '{secret}'}}]\n")
        result = CliRunner().invoke(app, ["batch", "run", str(spec), "--quiet"])
        assert result.exit_code == 2, result.output
        flat = " ".join(result.output.split())
        assert "queries[0] (id exfil): context_file" in flat and str(secret) in flat
        assert "--allow-outside-paths" in flat
        assert server.requests == []
        (folder / "s.results.jsonl").write_text('{"id": "exfil", "status": "ok", "answer": "x"}\n')
        result = CliRunner().invoke(app, ["batch", "run", str(spec), "--quiet",
                                                       "--allow-outside-paths"])
        assert result.exit_code == 0, result.output           # accepted (and already done: no request)
        assert server.requests == []


def test_progress_lines_show_done_total_running_score_and_eta() -> None:
    import io

    from rich.console import Console

    from rlm.cli.batch import PlainReporter, make_reporter

    buf = io.StringIO()
    rep = PlainReporter(Console(file=buf, width=200, force_terminal=False), label="item")
    rep.start(4, 3, 1)
    rep.query_done({"id": "s_niah-8000-0", "status": "ok", "score": 1.0, "duration_s": 2.0})
    rep.query_done({"id": "s_niah-8000-1", "status": "error", "score": 0.0, "duration_s": 1.0, "error": "boom"})
    rep.query_done({"id": "s_niah-8000-2", "status": "ok", "score": 0.5, "duration_s": 1.5})
    out = buf.getvalue().splitlines()
    assert out[0] == "3 items to run (1 already done, skipped)"
    assert out[1].startswith("[1/3] s_niah-8000-0: ok, score 1.00, 2.0 s | mean score 1.00, ETA ")
    assert out[2].startswith("[2/3] s_niah-8000-1: error, score 0.00, 1.0 s, boom | mean score 0.50, ETA ")
    assert out[3] == "[3/3] s_niah-8000-2: ok, score 0.50, 1.5 s | mean score 0.50"   # nothing left: no ETA
    assert make_reporter(True) is None
    assert isinstance(make_reporter(False), PlainReporter)
