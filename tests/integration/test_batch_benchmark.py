"""`rlm benchmark` end to end: scripted server, real sandbox, --compare-base, --json, --plot, a new
results file and --resume (marker ``docker``)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlm.bench.generators import generate
from rlm.cli import app
from rlm.llm.fake_server import FakeModelServer

pytestmark = pytest.mark.docker


def regex_reply(needle: str, value: str) -> str:
    """Root reply: code that finds the needle's value in the context with a regex."""
    pattern = re.escape(needle).replace(re.escape(value), r"([\w-]+)", 1)
    return f"```repl\nimport re\nm = re.search({pattern!r}, context)\nFINAL(m.group(1) if m else 'not found')\n```"


def test_s_niah_rlm_vs_base_json_plot_and_resume(engine, tmp_path: Path, monkeypatch) -> None:
    import rlm.bench.fingerprint as fingerprint

    # this checkout as if committed and clean (a shared work tree is often dirty); --resume needs a clean tree
    monkeypatch.setattr(fingerprint, "git_state", lambda root=None: {"commit": "0" * 40, "dirty": []})
    items = generate("s_niah", [3000], 2, seed=5, split="dev")
    # concurrency 1: per item, the RLM turn then the direct (base) question
    steps = [regex_reply(items[0].meta["needle"], items[0].expected), "I could not find it.",
             regex_reply(items[1].meta["needle"], items[1].expected), f"It is {items[1].expected}."]
    plot = tmp_path / "score.png"
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None   # optional: pip install matplotlib
    plot_args = ["--plot", str(plot)] if has_matplotlib else []
    results = tmp_path / "results.jsonl"
    args = ["benchmark", "--name", "s_niah", "--sizes", "3k", "--n", "2", "--seed", "5", "--split", "dev",
            "--compare-base", "--base-window-tokens", "600", "--json", *plot_args, "--model", "root-model", "--quiet"]
    env = {"RLM_TRACE_DIR": str(tmp_path / "traces")}
    with FakeModelServer(root=steps) as server:
        result = CliRunner().invoke(app, [*args, "--results", str(results), "--base-url", server.url],
                                    env=env)
        requests = server.requests
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(lines) == 2                                   # one line per finished item
    assert all(r["split"] == "dev" and r["git_commit"] == "0" * 40 and r["run"]["seed"] == 5 for r in lines)
    # the same file again is refused: a results file is new unless resumed
    with FakeModelServer(root=[]) as server:
        refused = CliRunner().invoke(app, [*args, "--results", str(results), "--base-url", server.url],
                                     env=env)
    assert refused.exit_code == 2 and "already exists" in refused.output
    # --resume with the same fingerprint: every item is done, so no model call is made
    with FakeModelServer(root=[]) as server:
        again = CliRunner().invoke(app, [*args, "--resume", str(results), "--base-url", server.url],
                                   env=env)
        assert not [r for r in server.requests if "messages" in r], server.requests
    assert again.exit_code == 0, again.output
    resumed = json.loads(again.stdout.strip().splitlines()[-1])
    assert resumed["resumed"] == 2 and resumed["summary"] == report["summary"]
    # --resume of another run (another seed) is refused, naming what differs
    with FakeModelServer(root=[]) as server:
        other = CliRunner().invoke(app, [*args, "--seed", "6", "--resume", str(results),
                                                      "--base-url", server.url], env=env)
    assert other.exit_code == 2 and "another run" in other.output and "seed: 5 there, 6 now" in other.output
    assert report["benchmarks"] == ["s_niah"] and report["size_unit"] == "characters" and report["sizes"] == [3000]
    assert report["window"]["window_tokens"] == 600 and report["window"]["window_source"] == "--base-window-tokens"
    assert report["n"] == 2 and report["seed"] == 5 and report["split"] == "dev"
    assert [i["id"] for i in report["items"]] == [i.id for i in items]
    assert [i["rlm"]["answer"] for i in report["items"]] == [i.expected for i in items]
    assert [i["rlm"]["score"] for i in report["items"]] == [1.0, 1.0]
    assert [i["base"]["score"] for i in report["items"]] == [0.0, 1.0]
    row, = report["summary"]
    assert (row["size"], row["n"], row["rlm_score"], row["base_score"]) == (3000, 2, 1.0, 0.5)
    base = row["systems"]["base"]
    assert base["n"] == 2 and base["exact"]["method"] == "wilson" and base["exact"]["lo"] < 0.5 < base["exact"]["hi"]
    assert row["systems"]["rlm"]["tokens"] > 0 and row["systems"]["rlm"]["time_s"] > 0
    # the base model saw what 600 tokens take (less the answer's 256 and the template's 64), cut at a line break
    shown = report["items"][0]["base"]["context_chars_shown"]
    assert 400 < shown < 3 * (600 - 256 - 64)
    base_prompt = requests[1]["messages"][-1]["content"]
    assert items[0].context[:shown] in base_prompt and items[0].context[:shown + 50] not in base_prompt
    if has_matplotlib:
        assert plot.read_bytes()[:4] == b"\x89PNG"
