"""`rlm benchmark` end to end: scripted server, real sandbox, --compare-base, --json, --plot (marker ``docker``)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlm.bench.generators import generate
from rlm.cli.batch import standalone_app
from rlm.llm.fake_server import FakeModelServer

pytestmark = pytest.mark.docker


def regex_reply(needle: str, value: str) -> str:
    """Root reply: code that finds the needle's value in the context with a regex."""
    pattern = re.escape(needle).replace(re.escape(value), r"([\w-]+)", 1)
    return f"```repl\nimport re\nm = re.search({pattern!r}, context)\nFINAL(m.group(1) if m else 'not found')\n```"


def test_s_niah_rlm_vs_base_json_and_plot(engine, tmp_path: Path) -> None:
    items = generate("s_niah", [3000], 2, seed=5)
    # concurrency 1: per item, the RLM turn then the direct (base) question
    steps = [regex_reply(items[0].meta["needle"], items[0].expected), "I could not find it.",
             regex_reply(items[1].meta["needle"], items[1].expected), f"It is {items[1].expected}."]
    plot = tmp_path / "score.png"
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None   # optional: pip install matplotlib
    plot_args = ["--plot", str(plot)] if has_matplotlib else []
    results = tmp_path / "results.jsonl"
    args = ["benchmark", "--name", "s_niah", "--sizes", "3k", "--n", "2", "--seed", "5", "--compare-base",
            "--base-window", "1000", "--json", *plot_args, "--model", "root-model", "--quiet",
            "--results", str(results)]
    env = {"RLM_TRACE_DIR": str(tmp_path / "traces")}
    with FakeModelServer(root=steps) as server:
        result = CliRunner().invoke(standalone_app(), [*args, "--base-url", server.url], env=env)
        requests = server.requests
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(results.read_text().splitlines()) == 2      # one line per finished item
    # the same command again: every item is in the results file, so no model call is made
    with FakeModelServer(root=[]) as server:
        again = CliRunner().invoke(standalone_app(), [*args, "--base-url", server.url], env=env)
        assert not [r for r in server.requests if "messages" in r], server.requests
    assert again.exit_code == 0, again.output
    resumed = json.loads(again.stdout.strip().splitlines()[-1])
    assert resumed["resumed"] == 2 and resumed["summary"] == report["summary"]
    assert resumed["items"] == report["items"]
    # another seed with the same file is refused, not mixed in
    with FakeModelServer(root=[]) as server:
        refused = CliRunner().invoke(standalone_app(), [*args, "--seed", "6", "--base-url", server.url], env=env)
    assert refused.exit_code == 2 and "another run's items" in refused.output and "seed 5" in refused.output
    assert report["benchmarks"] == ["s_niah"] and report["size_unit"] == "characters" and report["sizes"] == [3000]
    assert report["base_window"] == 1000 and report["n"] == 2 and report["seed"] == 5
    assert [i["id"] for i in report["items"]] == [i.id for i in items]
    assert [i["rlm"]["answer"] for i in report["items"]] == [i.expected for i in items]
    assert [i["rlm"]["score"] for i in report["items"]] == [1.0, 1.0]
    assert [i["base"]["score"] for i in report["items"]] == [0.0, 1.0]
    assert all(i["base"]["context_chars_shown"] == 1000 for i in report["items"])
    row, = report["summary"]
    assert (row["size"], row["n"], row["rlm_score"], row["base_score"]) == (3000, 2, 1.0, 0.5)
    assert row["rlm_tokens"] > 0 and row["base_tokens"] > 0 and row["rlm_time_s"] > 0
    # the base model saw only the window, in one prompt
    base_prompt = requests[1]["messages"][-1]["content"]
    assert items[0].context[:1000] in base_prompt and items[0].context[:1001] not in base_prompt
    if has_matplotlib:
        assert plot.read_bytes()[:4] == b"\x89PNG"
