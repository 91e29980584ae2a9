"""Benchmark reports, the base prompt, the plot and the command's checks (no Docker, no model)."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from rlm.bench.generators import generate
from rlm.cli.batch import bench_table, parse_names, standalone_app
from rlm.config import Settings
from rlm.errors import UsageError
from rlm.jobs.benchmark import BenchReport, ItemResult, base_prompt, resume_results, run_benchmark, run_key
from rlm.jobs.results import ResultWriter


def _report(compare_base: bool = True, names: tuple[str, ...] = ("s_niah",)) -> BenchReport:
    items = [item for name in names for item in generate(name, [2000, 20000], 2, seed=0)]
    results = []
    for k, item in enumerate(items):
        rlm = {"answer": item.expected, "score": 1.0, "status": "ok", "duration_s": 2.0 + k, "tokens": 1000,
               "iterations": 1, "sub_calls": 0, "error": None, "trace": None}
        base = {"answer": "?", "score": 0.0 if item.size > 2000 else 1.0, "status": "ok", "duration_s": 0.5,
                "tokens": 300, "error": None, "context_chars_shown": 2000} if compare_base else None
        results.append(ItemResult(item, rlm, base))
    return BenchReport(benchmarks=list(names), sizes=[2000, 20000], n=2, seed=0, root_model="r", sub_model="s",
                       compare_base=compare_base, base_window=2000, results=results, wall_s=9.0)


def test_rows_and_json_shape() -> None:
    report = _report()
    rows = report.rows()
    assert [r["size"] for r in rows] == [2000, 20000]
    assert rows[0]["rlm_score"] == 1.0 and rows[0]["base_score"] == 1.0 and rows[1]["base_score"] == 0.0
    assert rows[0]["rlm_time_s"] == 2.5 and rows[1]["rlm_tokens"] == 1000 and rows[1]["base_tokens"] == 300
    assert rows[0]["rlm_tokens_per_s"] == 400.0      # 2000 tokens in 2 s + 3 s
    assert rows[1]["base_tokens_per_s"] == 600.0     # 600 tokens in 0.5 s + 0.5 s
    d = report.to_dict()
    assert d["size_unit"] == "characters" and d["base_window"] == 2000 and len(d["items"]) == 4
    item = d["items"][0]
    assert {"id", "size", "question", "expected", "scorer", "context_chars", "rlm", "base"} <= set(item)
    assert "context" not in item
    no_base = _report(compare_base=False)
    assert no_base.rows()[0]["base_score"] is None and no_base.to_dict()["base_window"] is None
    assert no_base.rows()[0]["base_tokens_per_s"] is None
    assert bench_table(no_base).row_count == 2


def test_several_benchmarks_in_one_report() -> None:
    report = _report(names=("oolong", "code_qa"))
    rows = report.rows()
    assert [(r["benchmark"], r["size"]) for r in rows] == [("oolong", 2000), ("oolong", 20000),
                                                            ("code_qa", 2000), ("code_qa", 20000)]
    assert [r["size"] for r in report.rows("code_qa")] == [2000, 20000]
    assert report.to_dict()["benchmarks"] == ["oolong", "code_qa"]
    table = bench_table(report)
    assert table.row_count == 4 and table.columns[0].header == "benchmark"
    assert bench_table(_report()).columns[0].header == "size"    # one benchmark: no benchmark column


@pytest.mark.parametrize("text, names", [
    ("all", ["s_niah", "oolong", "oolong_pairs", "code_qa"]),
    ("code_qa, oolong,code_qa", ["code_qa", "oolong"]),
    ("demo,all", ["demo", "s_niah", "oolong", "oolong_pairs", "code_qa"]),
])
def test_parse_names(text, names) -> None:
    assert parse_names(text) == names


@pytest.mark.parametrize("text, message", [("oolong,s_nia", "did you mean 's_niah'"), (" , ", "empty")])
def test_parse_names_refuses(text, message) -> None:
    with pytest.raises(UsageError) as info:
        parse_names(text)
    assert message in info.value.message


def _write(path, report: BenchReport, key: dict, *, rlm_status: str = "ok") -> None:
    with ResultWriter(path) as writer:
        for r in report.results:
            writer.write({**r.to_dict(), "rlm": {**r.rlm, "status": rlm_status if r.item.size > 2000 else "ok"},
                          "run": key})


def _complete(found: dict, compare_base: bool = True) -> list[str]:
    return sorted(i for i, r in found.items() if r.complete(compare_base))


def test_resume_takes_done_items_and_reruns_errors(tmp_path) -> None:
    report = _report()
    items = [r.item for r in report.results]
    key = run_key(Settings(), seed=0, compare_base=True, base_window=2000, revision="r1")
    path = tmp_path / "results.jsonl"
    assert resume_results(path, items, key) == {}       # no file yet
    _write(path, report, key, rlm_status="error")
    found = resume_results(path, items, key)
    assert _complete(found) == sorted(i.id for i in items if i.size == 2000)     # errored items run again...
    big = next(r for r in report.results if r.item.size > 2000)
    assert found[big.item.id].rlm is None and found[big.item.id].base == big.base     # ...keeping the base answer
    assert found[items[0].id].rlm == report.results[0].rlm and found[items[0].id].base == report.results[0].base
    _write(path, report, key)                                                # a rerun's lines win
    assert len(_complete(resume_results(path, items, key))) == 4
    other = {**key, "seed": 1}
    with pytest.raises(UsageError) as info:
        resume_results(path, items, other)
    assert "seed 0 there, 1 now" in info.value.message
    without = tmp_path / "no-run.jsonl"
    with ResultWriter(without) as writer:       # a line written with no run settings
        writer.write({**report.results[0].to_dict(), "run": None})
    with pytest.raises(UsageError) as info:
        resume_results(without, items, key)
    assert "seed None there, 0 now" in info.value.message


def test_a_new_revision_of_the_loop_reruns_the_rlm_side_and_keeps_the_base_answers(tmp_path) -> None:
    report = _report()
    items = [r.item for r in report.results]
    old = run_key(Settings(), seed=0, compare_base=True, base_window=2000, revision="old")
    path = tmp_path / "results.jsonl"
    _write(path, report, old)
    new = {**old, "rlm_revision": "new"}
    found = resume_results(path, items, new)
    assert _complete(found) == [] and all(r.rlm is None for r in found.values())
    assert [found[i.id].base for i in items] == [r.base for r in report.results]
    wider = {**new, "base_window": 4000}                  # another window: the base side runs again too
    assert resume_results(path, items, wider) == {}
    no_base = run_key(Settings(), seed=0, compare_base=False, base_window=2000, revision="old")
    found = resume_results(path, items, no_base)           # a run without the base model needs only the RLM side
    assert _complete(found, compare_base=False) == sorted(i.id for i in items)
    assert all(r.base is None for r in found.values())


def test_an_item_runs_only_the_side_it_lacks(tmp_path) -> None:
    from rlm.jobs.benchmark import BenchRunner, Resumed

    report = _report()
    item, rlm, base = report.results[0].item, report.results[0].rlm, report.results[0].base
    runner = BenchRunner(Settings(), client=None, compare_base=True, base_window=2000, trace_dir=tmp_path)  # type: ignore[arg-type]
    ran: list[str] = []
    runner.run_rlm = lambda it: ran.append("rlm") or {**rlm, "answer": "new"}    # type: ignore[method-assign]
    runner.run_base = lambda it: ran.append("base") or {**base, "answer": "new"}  # type: ignore[method-assign]
    kept_base = runner.run_item(item, Resumed(None, base))
    assert ran == ["rlm"] and kept_base is not None
    assert kept_base.rlm["answer"] == "new" and kept_base.base == base
    ran.clear()
    kept_rlm = runner.run_item(item, Resumed(rlm, None))
    assert ran == ["base"] and kept_rlm is not None and kept_rlm.rlm == rlm and kept_rlm.base["answer"] == "new"


def test_rlm_revision_is_a_stable_fingerprint() -> None:
    from rlm.jobs.benchmark import rlm_revision

    assert rlm_revision() == rlm_revision() and len(rlm_revision()) == 12
    assert run_key(Settings(), seed=0, compare_base=False, base_window=1)["rlm_revision"] == rlm_revision()


def test_the_revision_ignores_comments_docstrings_and_layout_but_not_code() -> None:
    from rlm.jobs.benchmark import code_fingerprint

    source = 'def hint(x):\n    """Old words."""\n    return "Use grep." + x  # a comment\n'
    relaid = '# a new comment\ndef hint(x):\n    """New words\n    over two lines."""\n\n    return ("Use grep."\n            + x)\n'
    assert code_fingerprint(source) == code_fingerprint(relaid)
    assert code_fingerprint(source) != code_fingerprint(source.replace("Use grep.", "Use re."))
    assert code_fingerprint(source) != code_fingerprint(source.replace("+ x", "+ x + x"))


def test_a_finished_run_is_reported_without_a_model_call(tmp_path) -> None:
    report = _report(names=("s_niah", "code_qa"))
    settings = Settings()
    key = run_key(settings, seed=0, compare_base=True, base_window=2000)
    path = tmp_path / "results.jsonl"
    _write(path, report, key)

    class NoModel:
        def __getattr__(self, name):
            raise AssertionError(f"the model was used ({name}) although every item was done")

    again = run_benchmark(["s_niah", "code_qa"], [2000, 20000], n=2, seed=0, settings=settings, client=NoModel(),
                          compare_base=True, base_window=2000, results_path=path, trace_dir=tmp_path / "t")
    assert again.resumed == 8 and again.rows() == report.rows()
    assert [r.item.id for r in again.results] == [r.item.id for r in report.results]


def test_base_prompt_cuts_to_the_window() -> None:
    item = generate("oolong", [9000], 1, seed=0)[0]
    prompt = base_prompt(item, 1000)
    assert item.context[:1000] in prompt and item.context[:1001] not in prompt
    assert "cut to its first 1,000 characters" in prompt and item.question in prompt
    full = base_prompt(item, 100_000)
    assert item.context in full and "cut to" not in full


def test_plot_writes_a_png(tmp_path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is optional: pip install matplotlib")
    from rlm.bench.plot import plot_report

    out = plot_report(_report(), tmp_path / "score.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    one = imread(out)
    four = imread(plot_report(_report(names=("s_niah", "oolong", "oolong_pairs", "code_qa")), tmp_path / "4.png"))
    assert four.shape[0] > 1.5 * one.shape[0] and four.shape[1] > 1.5 * one.shape[1]   # a 2 x 2 grid of panels


def test_plot_without_matplotlib_says_how_to_install(monkeypatch, tmp_path) -> None:
    from rlm.bench.plot import plot_report, require_matplotlib

    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import fails as if not installed
    with pytest.raises(UsageError) as info:
        require_matplotlib()
    assert "pip install matplotlib" in info.value.hint
    with pytest.raises(UsageError):
        plot_report(_report(), tmp_path / "x.png")


@pytest.mark.parametrize("args, text", [
    (["--name", "s_nia"], "did you mean 's_niah'"),
    (["--name", "s_niah", "--sizes", "8q"], "cannot read the size"),
    (["--name", "s_niah", "--plot", "out.svg"], "PNG"),
])
def test_benchmark_command_checks_before_any_model_call(args, text) -> None:
    result = CliRunner().invoke(standalone_app(), ["benchmark", *args, "--base-url", "http://127.0.0.1:9/v1"])
    assert result.exit_code == 2, result.output
    assert text in result.output


def test_benchmark_help_says_characters() -> None:
    result = CliRunner().invoke(standalone_app(), ["benchmark", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "CHARACTERS" in result.output and "8k = 8000" in result.output
