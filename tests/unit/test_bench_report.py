"""Benchmark reports, results files and their fingerprints, the plot and the command's checks
(no Docker, no model).  Items are made up here, not taken from any generator."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from rlm.bench.generators import BenchItem
from rlm.cli import app
from rlm.cli.batch import bench_table, parse_names
from rlm.cli.views import print_table
from rlm.config import Settings
from rlm.errors import UsageError
from rlm.jobs.benchmark import (
    BenchReport,
    ItemResult,
    base_prompt,
    check_results_file,
    check_seed,
    check_test_split,
    kept_sides,
    run_benchmark,
)
from rlm.jobs.results import ResultWriter

FP = {"git_commit": "abc", "dirty": [], "code": "c0de", "server": "other", "model_sha256": "m",
      "server_flags": ["--ctx-size", "100"], "settings": {"temperature": 0.0, "max_iterations": 5}, "seed": 0,
      "split": "dev", "base_window": None, "data_sha256": "d"}


def _item(benchmark: str, size: int, k: int, oracle: bool = False) -> BenchItem:
    return BenchItem(id=f"{benchmark}-{size}-{k}", benchmark=benchmark, size=size, question=f"Which colour is box {k}?",
                     context=f"Box {k} is teal. " * (size // 16), expected="teal", scorer="exact", split="dev",
                     oracle_context=f"Box {k} is teal." if oracle else None)


def _side(score: float, k: int) -> dict:
    return {"answer": "teal" if score else "red", "score": score, "exact": score, "status": "ok",
            "duration_s": 2.0 + k, "tokens": 1000, "error": None}


def _report(compare_base: bool = True, names: tuple[str, ...] = ("s_niah",), oracle: bool = False) -> BenchReport:
    results = []
    for name in names:
        for size in (2000, 20000):
            for k in range(2):
                base = _side(1.0 if size == 2000 else 0.0, k) if compare_base else None
                results.append(ItemResult(_item(name, size, k, oracle), _side(1.0, k), base,
                                          _side(1.0, k) if compare_base and oracle else None))
    return BenchReport(benchmarks=list(names), sizes=[2000, 20000], n=2, seed=0, split="dev", root_model="r",
                       sub_model="s", compare_base=compare_base, results=results, wall_s=9.0)


def test_rows_carry_n_means_and_intervals_per_system() -> None:
    report = _report(oracle=True)
    rows = report.rows()
    assert [r["size"] for r in rows] == [2000, 20000]
    small, big = rows
    assert small["rlm_score"] == 1.0 and small["base_score"] == 1.0 and big["base_score"] == 0.0
    assert set(small["systems"]) == {"rlm", "base", "oracle"}
    rlm = small["systems"]["rlm"]
    assert rlm["n"] == 2 and rlm["time_s"] == 2.5 and rlm["tokens"] == 1000 and rlm["tokens_per_s"] == 400.0
    assert rlm["score"]["method"] == "wilson" and rlm["score"]["lo"] == pytest.approx(0.3424, abs=1e-4)
    assert big["systems"]["base"]["exact"] == {"mean": 0.0, "lo": 0.0, "hi": pytest.approx(0.6576, abs=1e-4),
                                              "method": "wilson", "n": 2}
    d = report.to_dict()
    assert d["size_unit"] == "characters" and d["split"] == "dev" and len(d["items"]) == 4
    item = d["items"][0]
    assert {"id", "size", "question", "expected", "scorer", "context_chars", "split", "rlm", "base",
            "oracle", "oracle_context_chars"} <= set(item)
    assert "context" not in item and "Wilson" in d["intervals"]
    no_base = _report(compare_base=False)
    assert no_base.rows()[0]["base_score"] is None and set(no_base.rows()[0]["systems"]) == {"rlm"}
    assert bench_table(no_base).row_count == 2
    assert bench_table(report).row_count == 6          # a line per system and size


def test_partial_scores_get_a_bootstrap_interval() -> None:
    report = _report(compare_base=False)
    for k, r in enumerate(report.results):
        r.rlm["score"] = [0.5, 0.25, 1.0, 0.0][k]
    row = report.rows()[0]["systems"]["rlm"]["score"]
    assert row["method"] == "bootstrap" and row["mean"] == 0.375 and 0.25 <= row["lo"] <= row["hi"] <= 0.5


def test_several_benchmarks_in_one_report() -> None:
    report = _report(names=("oolong", "code_qa"))
    rows = report.rows()
    assert [(r["benchmark"], r["size"]) for r in rows] == [("oolong", 2000), ("oolong", 20000),
                                                            ("code_qa", 2000), ("code_qa", 20000)]
    assert [r["size"] for r in report.rows("code_qa")] == [2000, 20000]
    table = bench_table(report)
    assert table.row_count == 8 and table.columns[0].header == "benchmark"
    assert bench_table(_report()).columns[0].header == "size"    # one benchmark: no benchmark column


def test_a_table_written_to_a_file_is_not_squeezed_to_80_columns(capsys, monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    print_table(bench_table(_report(names=("oolong", "code_qa"), oracle=True)))
    out = capsys.readouterr().out
    assert "…" not in out and "benchmark" in out and "code_qa" in out
    assert max(len(line) for line in out.splitlines()) > 80       # what rich's default width would cut


@pytest.mark.parametrize("text, names", [
    ("all", ["hotpotqa", "squad", "s_niah", "oolong", "oolong_pairs", "code_qa"]),
    ("code_qa, oolong,code_qa", ["code_qa", "oolong"]),
    ("demo,squad", ["demo", "squad"]),
])
def test_parse_names(text, names) -> None:
    assert parse_names(text) == names


@pytest.mark.parametrize("text, message", [("oolong,hotpot", "did you mean 'hotpotqa'"), (" , ", "empty")])
def test_parse_names_refuses(text, message) -> None:
    with pytest.raises(UsageError) as info:
        parse_names(text)
    assert message in info.value.message


def _write(path, report: BenchReport, fp: dict, *, rlm_status: str = "ok") -> None:
    with ResultWriter(path) as writer:
        for r in report.results:
            writer.write({**r.to_dict(), "rlm": {**r.rlm, "status": rlm_status if r.item.size > 2000 else "ok"},
                          "git_commit": fp["git_commit"], "run": fp})


def test_a_results_file_is_new_unless_resumed(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    assert check_results_file(path, FP, resume=False) == {}
    _write(path, _report(), FP)
    with pytest.raises(UsageError) as info:
        check_results_file(path, FP, resume=False)
    assert "already exists" in info.value.message and f"--resume {path}" in info.value.hint
    assert len(check_results_file(path, FP, resume=True)) == 4
    with pytest.raises(UsageError) as info:
        check_results_file(tmp_path / "absent.jsonl", FP, resume=True)
    assert "no such results file" in info.value.message


@pytest.mark.parametrize("change, named", [
    ({"git_commit": "def"}, "git_commit: 'abc' there, 'def' now"),
    ({"model_sha256": "other"}, "model_sha256"),
    ({"server_flags": ["--ctx-size", "200"]}, "server_flags"),
    ({"code": "new"}, "code: 'c0de' there, 'new' now"),
    ({"settings": {"temperature": 0.7, "max_iterations": 5}}, "settings.temperature: 0.0 there, 0.7 now"),
    ({"split": "test"}, "split"),
])
def test_resume_refuses_another_fingerprint_and_names_the_difference(tmp_path, change, named) -> None:
    path = tmp_path / "results.jsonl"
    _write(path, _report(), FP)
    with pytest.raises(UsageError) as info:
        check_results_file(path, {**FP, **change}, resume=True)
    assert named in info.value.message and "another run" in info.value.message


def test_resume_and_test_runs_refuse_a_dirty_tree(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    dirty = {**FP, "dirty": ["rlm/core/prompts.py"]}
    _write(path, _report(), dirty)
    with pytest.raises(UsageError) as info:
        check_results_file(path, dirty, resume=True)
    assert "clean tree" in info.value.message and "rlm/core/prompts.py" in info.value.message
    with pytest.raises(UsageError) as info:
        check_test_split("test", {**dirty, "split": "test"})
    assert "rlm/core/prompts.py" in info.value.message
    with pytest.raises(UsageError):
        check_test_split("test", {**FP, "git_commit": None})
    check_test_split("test", FP)
    check_test_split("dev", dirty)              # tuning on a dirty tree is fine


def test_test_runs_of_generated_benchmarks_need_fresh_seeds() -> None:
    with pytest.raises(UsageError) as info:
        check_seed(["hotpotqa", "oolong"], 1, "test")
    assert "oolong" in info.value.message and "100" in info.value.hint
    check_seed(["hotpotqa"], 1, "test")
    check_seed(["oolong"], 100, "test")
    check_seed(["oolong"], 1, "dev")


def test_kept_sides_rerun_errors_only(tmp_path) -> None:
    report = _report()
    path = tmp_path / "results.jsonl"
    _write(path, report, FP, rlm_status="error")
    found = kept_sides(check_results_file(path, FP, resume=True), [r.item for r in report.results])
    big = next(r for r in report.results if r.item.size > 2000)
    assert found[big.item.id].rlm is None and found[big.item.id].base == big.base   # the base answer is kept
    small = report.results[0]
    assert found[small.item.id].complete(True, False) and not found[big.item.id].complete(True, False)


def test_an_item_runs_only_the_sides_it_lacks(tmp_path) -> None:
    from rlm.bench.window import TokenCounter, Window
    from rlm.jobs.benchmark import BenchRunner, Resumed

    report = _report(oracle=True)
    r0 = report.results[0]
    runner = BenchRunner(Settings(), client=None, compare_base=True, trace_dir=tmp_path,  # type: ignore[arg-type]
                         window=Window(1000, "default", TokenCounter()))
    ran: list[str] = []
    runner.run_rlm = lambda it: ran.append("rlm") or {**r0.rlm, "answer": "new"}    # type: ignore[method-assign]
    runner.run_base = lambda it, ctx=None: ran.append("oracle" if ctx else "base") or {**r0.rlm, "answer": ctx}  # type: ignore[method-assign]
    res = runner.run_item(r0.item, Resumed(None, r0.base, None))
    assert ran == ["rlm", "oracle"] and res is not None and res.base == r0.base
    assert res.oracle is not None and res.oracle["answer"] == r0.item.oracle_context


def test_a_finished_run_is_reported_without_a_model_call(tmp_path, monkeypatch) -> None:
    import rlm.jobs.benchmark as bench

    report = _report(compare_base=False)
    items = [r.item for r in report.results]
    monkeypatch.setattr(bench, "generate", lambda name, sizes, n, seed, split: [i for i in items if i.benchmark == name])
    path = tmp_path / "results.jsonl"
    _write(path, report, FP)

    class NoModel:
        def __getattr__(self, name):
            raise AssertionError(f"the model was used ({name}) although every item was done")

    again = run_benchmark(["s_niah"], [2000, 20000], n=2, seed=0, settings=Settings(), client=NoModel(),  # type: ignore[arg-type]
                          results_path=path, trace_dir=tmp_path / "t", resume=True, fingerprint=FP)
    assert again.resumed == 4 and again.rows() == report.rows()
    with pytest.raises(UsageError):
        run_benchmark(["s_niah"], [2000], n=2, seed=0, settings=Settings(), client=NoModel(),  # type: ignore[arg-type]
                      results_path=path, trace_dir=tmp_path / "t", fingerprint=FP)


def test_base_prompt_notes_the_cut() -> None:
    prompt = base_prompt("Which colour?", "Box 1 is teal.", 900)
    assert "Box 1 is teal." in prompt and "cut to its first 14 characters; 900 more" in prompt
    assert "cut to" not in base_prompt("Which colour?", "Box 1 is teal.", 0)


def test_plot_writes_a_png(tmp_path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is optional: pip install matplotlib")
    from rlm.bench.plot import plot_report

    out = plot_report(_report(oracle=True), tmp_path / "score.png")
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
    (["--name", "s_niah", "--split", "train"], "unknown split"),
    (["--name", "oolong", "--split", "test", "--seed", "3"], "read while tuning"),
    (["--name", "s_niah", "--resume", "/nonexistent/r.jsonl"], "no such results file"),
])
def test_benchmark_command_checks_before_any_model_call(args, text) -> None:
    result = CliRunner().invoke(app, ["benchmark", *args, "--base-url", "http://127.0.0.1:9/v1"])
    assert result.exit_code == 2, result.output
    assert text in result.output


def test_benchmark_command_refuses_an_existing_results_file(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "x"}\n')
    result = CliRunner().invoke(app, ["benchmark", "--name", "s_niah", "--results", str(path),
                                                   "--base-url", "http://127.0.0.1:9/v1"])
    assert result.exit_code == 2 and "already exists" in result.output


def test_benchmark_command_names_the_data_command_when_the_cache_is_empty(tmp_path) -> None:
    result = CliRunner().invoke(app, ["benchmark", "--name", "hotpotqa", "--base-url",
                                                   "http://127.0.0.1:9/v1"], env={"RLM_CACHE_DIR": str(tmp_path)})
    assert result.exit_code == 2 and "rlm bench data" in result.output


def test_benchmark_help_says_characters() -> None:
    result = CliRunner().invoke(app, ["benchmark", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "CHARACTERS" in result.output and "8k = 8000" in result.output and "--split" in result.output


def test_base_n_runs_the_full_window_base_on_the_first_items_only(tmp_path, monkeypatch) -> None:
    import rlm.jobs.benchmark as bench
    from rlm.bench.window import TokenCounter, Window

    report = _report(oracle=True)
    for r in report.results:
        if not r.item.id.endswith("-0"):
            r.base = None                                   # the base ran on item 0 of each size only
    items = [r.item for r in report.results]
    monkeypatch.setattr(bench, "generate", lambda name, sizes, n, seed, split: list(items))
    path = tmp_path / "results.jsonl"
    _write(path, report, FP)

    class NoModel:
        def __getattr__(self, name):
            raise AssertionError(f"the model was used ({name})")

    window = Window(1000, "default", TokenCounter())
    again = run_benchmark(["s_niah"], [2000, 20000], n=2, seed=0, settings=Settings(), client=NoModel(),  # type: ignore[arg-type]
                          compare_base=True, window=window, base_n=1, results_path=path,
                          trace_dir=tmp_path / "t", resume=True, fingerprint=FP)
    assert again.resumed == 4
    systems = again.rows()[0]["systems"]
    assert systems["base"]["n"] == 1 and systems["rlm"]["n"] == 2 and systems["oracle"]["n"] == 2
    with pytest.raises(AssertionError, match="the model was used"):   # without --base-n every item needs its base
        run_benchmark(["s_niah"], [2000, 20000], n=2, seed=0, settings=Settings(), client=NoModel(),  # type: ignore[arg-type]
                      compare_base=True, window=window, results_path=path, trace_dir=tmp_path / "t2",
                      resume=True, fingerprint=FP)
