"""`rlm batch run SPEC` and `rlm benchmark ...`.

Registered by rlm/cli/app.py::

    app.add_typer(batch_app, name="batch", cls=RLMGroup)
    app.command("benchmark")(benchmark_command)

``standalone_app()`` holds just these two commands with the same error mapping (for tests).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rlm.cli.options import (
    BaseUrlOpt,
    ConfigOpt,
    DebugOpt,
    MaxIterOpt,
    ModelOpt,
    QuietOpt,
    SubModelOpt,
    load_cli_settings,
)
from rlm.config import LoadedSettings
from rlm.errors import RLMError, UsageError

BENCHMARKS = ("s_niah", "oolong", "oolong_pairs", "code_qa", "demo")
ALL = tuple(name for name in BENCHMARKS if name != "demo")   # what --name all runs

batch_app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                        help="Run many questions from a YAML spec, each in its own sandbox.")


def _model_values(base_url, model, sub_model, max_iterations) -> dict:
    values = {"base_url": base_url, "root_model": model, "sub_model": sub_model, "max_iterations": max_iterations}
    return {k: v for k, v in values.items() if v is not None}


def _load(ctx: typer.Context, config: Path | None, debug: bool, cli: dict | None = None) -> LoadedSettings:
    """Settings (with their sources), loaded where every command loads them."""
    return load_cli_settings(ctx, config, debug, **(cli or {}))


# ---------------------------------------------------------------------------- progress
class PlainReporter:
    """One line per finished query on stderr (used when stderr is not a terminal): done/total,
    its status and score, then the running mean score and the time left at the pace so far."""

    def __init__(self, console: Console, label: str = "query") -> None:
        self.console = console
        self.label = label
        self.total = self.done = 0
        self.scores: list[float] = []
        self.started = time.monotonic()

    def start(self, total: int, to_run: int, skipped: int) -> None:
        self.total = to_run
        self.started = time.monotonic()
        note = f" ({skipped} already done, skipped)" if skipped else ""
        self.console.print(f"{to_run} {_plural(self.label, to_run)} to run{note}", highlight=False, markup=False,
                           soft_wrap=True)

    def _count(self, record: dict) -> None:
        self.done += 1
        if isinstance(record.get("score"), (int, float)):
            self.scores.append(float(record["score"]))

    def running(self) -> str:
        """``mean score 0.75, ETA 1 min 20 s`` (parts left out when unknown)."""
        parts = []
        if self.scores:
            parts.append(f"mean score {sum(self.scores) / len(self.scores):.2f}")
        left = self.total - self.done
        if left > 0 and self.done:
            parts.append(f"ETA {_duration((time.monotonic() - self.started) / self.done * left)}")
        return ", ".join(parts)

    def query_done(self, record: dict) -> None:
        self._count(record)
        line = _done_line(record, self.done, self.total)
        running = self.running()
        self.console.print(f"{line} | {running}" if running else line, highlight=False, markup=False,
                           soft_wrap=True)

    def finish(self) -> None:
        pass


class RichReporter(PlainReporter):
    """A progress bar on stderr (done/total, running mean score, time left), with one line above
    it per finished query."""

    def __init__(self, console: Console, label: str = "query") -> None:
        super().__init__(console, label)
        self.progress: Any = None
        self.task: Any = None

    def start(self, total: int, to_run: int, skipped: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        super().start(total, to_run, skipped)
        if not to_run:
            return
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[score]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task(_plural(self.label, 2), total=to_run, score="")

    def query_done(self, record: dict) -> None:
        if self.progress is None:
            return super().query_done(record)
        self._count(record)
        self.progress.console.print(_done_line(record, self.done, self.total), highlight=False, markup=False,
                                    soft_wrap=True)
        score = f"mean score {sum(self.scores) / len(self.scores):.2f}" if self.scores else ""
        self.progress.update(self.task, advance=1, score=score)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _plural(label: str, count: int) -> str:
    return label if count == 1 else {"query": "queries"}.get(label, label + "s")


def _done_line(record: dict, done: int, total: int) -> str:
    from rlm.core.parsing import sanitize_for_terminal

    parts = [f"[{done}/{total}] {sanitize_for_terminal(str(record.get('id')))}: {record.get('status')}"]
    if record.get("score") is not None:
        parts.append(f"score {record['score']:.2f}")
    if record.get("base_score") is not None:
        parts.append(f"base {record['base_score']:.2f}")
    if record.get("duration_s") is not None:
        parts.append(f"{float(record['duration_s']):.1f} s")
    if record.get("error"):
        parts.append(sanitize_for_terminal(str(record["error"]).splitlines()[0])[:100])
    return ", ".join(parts)


def make_reporter(quiet: bool, label: str = "query"):
    console = Console(stderr=True)
    if quiet:
        return None
    return RichReporter(console, label) if console.is_terminal else PlainReporter(console, label)


# ---------------------------------------------------------------------------- batch run
def summary_table(summary) -> Table:
    table = Table(title="batch summary", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("queries", str(summary.total))
    table.add_row("run now / skipped", f"{summary.ran} / {summary.skipped}")
    for status in ("ok", "max_iterations", "error", "not run"):
        if summary.counts.get(status):
            table.add_row(f"status: {status}", str(summary.counts[status]))
    for status, count in sorted(summary.counts.items()):
        if status not in ("ok", "max_iterations", "error", "not run"):
            table.add_row(f"status: {status}", str(count))
    if summary.scored:
        table.add_row("accuracy", f"{summary.correct}/{summary.scored} ({100 * summary.accuracy:.0f}%)")
    table.add_row("tokens in / out", f"{summary.prompt_tokens:,} / {summary.completion_tokens:,}")
    table.add_row("time: this run", f"{summary.wall_s:.1f} s")
    table.add_row("time: all queries (sum)", f"{summary.query_s:.1f} s")
    table.add_row("results", str(summary.output))
    return table


@batch_app.command("run")
def batch_run(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="The batch spec (YAML); relative paths in it resolve against its folder.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Results file (JSONL, appended); overrides the spec's output.")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-j", min=1, help="Queries at once; overrides the spec.")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Also rerun ids whose last result is not ok.")] = False,
    executor: Annotated[str | None, typer.Option("--executor", help="Where queries run: local (threads here) or ray (a Ray cluster); overrides the spec.")] = None,
    address: Annotated[str | None, typer.Option("--address", help="The Ray cluster's address (HOST:PORT or ray://HOST:PORT) with --executor ray; default: RAY_ADDRESS or a local cluster.")] = None,
    allow_outside_paths: Annotated[bool, typer.Option("--allow-outside-paths", help="Let context paths leave the spec's folder (or its context_root); only for specs you trust.")] = False,
    context_root: Annotated[Path | None, typer.Option("--context-root", help="The folder context paths may point into (instead of the spec's folder).")] = None,
    base_url: BaseUrlOpt = None, model: ModelOpt = None, sub_model: SubModelOpt = None,
    max_iterations: MaxIterOpt = None, quiet: QuietOpt = False,
    config: ConfigOpt = None, debug: DebugOpt = False,
) -> None:
    """Run every question of SPEC, each in its own sandbox; append one JSON line per finished query.

    Ids already answered ok in the output file are skipped; --retry-failed reruns failed ones.
    Context paths may not leave the spec's folder unless --allow-outside-paths.
    Exit code 0 when every query's last result is ok, 1 otherwise.
    """
    from rlm.jobs import load_spec, run_batch

    if executor is not None and executor not in ("local", "ray"):
        raise UsageError(f"--executor must be local or ray, not {executor!r}")
    base = _load(ctx, config, debug).settings
    batch = load_spec(spec, base=base, cli=_model_values(base_url, model, sub_model, max_iterations),
                      output=output, concurrency=concurrency, executor=executor, address=address,
                      allow_outside_paths=allow_outside_paths, context_root=context_root)
    if batch.executor == "ray":
        from rlm.jobs.ray_executor import require_ray

        require_ray()  # exit 2 with the install command, before any model call
    console = Console(stderr=True)
    try:
        summary = run_batch(batch, retry_failed=retry_failed, reporter=make_reporter(quiet))
    except KeyboardInterrupt:
        console.print(f"interrupted: finished queries are kept in {batch.output}; run the same command again "
                      "to continue", highlight=False, markup=False, soft_wrap=True)
        raise
    Console().print(summary_table(summary))
    if not summary.all_ok:
        failed = summary.failed_ids[:10]
        more = "" if len(summary.failed_ids) <= 10 else f" and {len(summary.failed_ids) - 10} more"
        hint = "" if retry_failed else "; rerun with --retry-failed to try the failed ones again"
        console.print(f"not ok: {', '.join(failed)}{more}{hint}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- benchmark
def bench_table(report) -> Table:
    table = Table(title=f"{report.title} (sizes in characters, n={report.n}, seed={report.seed})",
                  show_header=True, header_style="bold")
    several = len(report.benchmarks) > 1
    for column in (("benchmark",) if several else ()) + (
            "size", "n", "RLM score", "base score", "RLM s/query", "base s/query", "RLM tokens/query",
            "base tokens/query", "RLM tokens/s", "base tokens/s"):
        table.add_column(column, justify="left" if column == "benchmark" else "right")

    def cell(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for r in report.rows():
        table.add_row(*([r["benchmark"]] if several else []), f"{r['size']:,}", str(r["n"]),
                      f"{r['rlm_score']:.2f}", cell(r["base_score"], ".2f"),
                      f"{r['rlm_time_s']:.1f}", cell(r["base_time_s"], ".1f"), f"{r['rlm_tokens']:,}",
                      cell(r["base_tokens"], ","), cell(r["rlm_tokens_per_s"], ".0f"),
                      cell(r["base_tokens_per_s"], ".0f"))
    return table


def parse_names(text: str) -> list[str]:
    """'all' -> the four benchmarks; 'oolong,code_qa' -> both (in that order, once each)."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part == "all":
            names.extend(n for n in ALL if n not in names)
            continue
        if part not in BENCHMARKS:
            import difflib

            close = difflib.get_close_matches(part, (*BENCHMARKS, "all"), n=1)
            raise UsageError(f"unknown benchmark '{part}'" + (f" (did you mean '{close[0]}'?)" if close else ""),
                             hint="choose from: " + ", ".join(BENCHMARKS) + ", or all (the first four)")
        if part not in names:
            names.append(part)
    if not names:
        raise UsageError("--name is empty", hint="give a benchmark, several separated by commas, or all")
    return names


def benchmark_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Benchmark: s_niah, oolong, oolong_pairs, code_qa or demo (the demo needle); several separated by commas, or all (the first four).")],
    sizes: Annotated[str, typer.Option("--sizes", help="Context sizes in CHARACTERS, comma-separated; k = 1,000 and m = 1,000,000 (8k = 8000 characters).")] = "8k,32k",
    n: Annotated[int, typer.Option("--n", min=1, help="Items per size.")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Generator seed (same seed, same items).")] = 0,
    compare_base: Annotated[bool, typer.Option("--compare-base", help="Also ask the root model directly, context cut to --base-window.")] = False,
    base_window: Annotated[int, typer.Option("--base-window", min=100, help="Characters of context the base model sees with --compare-base.")] = 32000,
    concurrency: Annotated[int, typer.Option("--concurrency", "-j", min=1, help="Items at once.")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object with per-item results on stdout.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG of score against size, one panel per benchmark (needs matplotlib).")] = None,
    results: Annotated[Path | None, typer.Option("--results", help="Results file (JSONL): each finished item is appended; items already in it are not run again (after a change to rlm's loop, prompts or REPL helpers, only their RLM side runs again; base answers are kept). Default: results.jsonl in the run's trace folder.")] = None,
    base_url: BaseUrlOpt = None, model: ModelOpt = None, sub_model: SubModelOpt = None,
    max_iterations: MaxIterOpt = None, quiet: QuietOpt = False,
    config: ConfigOpt = None, debug: DebugOpt = False,
) -> None:
    """Seeded benchmarks with known answers, scored; RLM vs the base model with --compare-base."""
    from rlm.bench.generators import parse_sizes
    from rlm.cli.run import notice
    from rlm.jobs.benchmark import new_trace_dir, run_benchmark
    from rlm.llm.resolve import open_models

    names = parse_names(name)
    size_list = parse_sizes(sizes)
    if results is not None and results.is_dir():
        raise UsageError(f"--results names a folder ({results}); give a file, e.g. {results / 'results.jsonl'}")
    if plot is not None:
        from rlm.bench.plot import require_matplotlib

        require_matplotlib()
        if plot.suffix.lower() != ".png":
            raise UsageError(f"--plot writes a PNG; give a file name ending in .png, not {plot.name}")
    loaded = _load(ctx, config, debug, _model_values(base_url, model, sub_model, max_iterations))
    # the embedded model when no server is configured or answering, guarded and proved as for `rlm query`
    settings, client = open_models(loaded.settings, base_url_explicit=loaded.base_url_configured, say=notice)
    trace_dir = new_trace_dir(settings)
    results_path = results if results is not None else trace_dir / "results.jsonl"
    say = Console(stderr=True)
    if not quiet:
        say.print(f"results: {results_path} (one line per finished item; run again with --results "
                  f"{results_path} to continue a stopped run)", highlight=False, markup=False, soft_wrap=True)
    with client:
        try:
            report = run_benchmark(names, size_list, n=n, seed=seed, settings=settings, client=client,
                                   compare_base=compare_base, base_window=base_window, concurrency=concurrency,
                                   reporter=make_reporter(quiet, label="item"), trace_dir=trace_dir,
                                   results_path=results_path)
        except (KeyboardInterrupt, RLMError) as exc:
            if results_path.exists() and results_path.stat().st_size:
                what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped"
                say.print(f"{what}: finished items are kept in {results_path}; add --results {results_path} "
                          "to the same command to continue", highlight=False, markup=False, soft_wrap=True)
            raise
    if report.resumed:
        say.print(f"{report.resumed} of {len(report.results)} items from {report.results_path}",
                  highlight=False, markup=False, soft_wrap=True)
    (Console(stderr=True) if json_out else Console()).print(bench_table(report))
    if plot is not None:
        from rlm.bench.plot import plot_report

        plot_report(report, plot)
        say.print(f"plot written to {plot}", highlight=False, markup=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False))


# ---------------------------------------------------------------------------- standalone (tests)
def standalone_app() -> typer.Typer:
    from rlm.cli.app import RLMGroup

    root = typer.Typer(cls=RLMGroup, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
    root.add_typer(batch_app, name="batch", cls=RLMGroup)
    root.command("benchmark")(benchmark_command)
    return root

