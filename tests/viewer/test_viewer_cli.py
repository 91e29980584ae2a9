"""`rlm trace view` and `rlm bench viewer` through the typer app, in process."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rlm.cli.app import app

EVENTS = [{"t": 0.1, "kind": "run_start", "question": "q?", "context": {"kind": "str", "total_chars": 3,
                                                                        "n_documents": 1, "source": "a.txt"}},
          {"t": 0.2, "kind": "run_end", "answer": "yes", "status": "ok", "iterations": 0, "duration_s": 0.2}]


def test_trace_view_writes_the_page_and_prints_its_path(tmp_path):
    trace = tmp_path / "run.jsonl"
    trace.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    result = CliRunner().invoke(app, ["trace", "view", str(trace)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "run.html")
    assert "q?" in (tmp_path / "run.html").read_text()
    result = CliRunner().invoke(app, ["trace", "view", str(trace), "-o", str(tmp_path / "x" / "page.html")])
    assert result.exit_code == 0 and (tmp_path / "x" / "page.html").is_file()


def test_trace_view_of_a_missing_file_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["trace", "view", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "hint" in result.output


def test_bench_viewer_prints_its_figures(tmp_path, chromium):
    result = CliRunner().invoke(app, ["bench", "viewer", "--json", "--iterations", "20", "--output-mb", "0.2",
                                      "--repeats", "1"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["iterations"] == 20 and figures["trace_mb"] >= 0.2
    assert 0 < figures["browser_ready_s"] < figures["chromium_wall_s"]
