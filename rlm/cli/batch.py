"""`rlm batch run SPEC` and `rlm benchmark ...`.

Registered by rlm/cli/app.py::

    app.add_typer(batch_app, name="batch", cls=RLMGroup)
    app.command("benchmark")(benchmark_command)
"""

from __future__ import annotations

import time
from contextlib import nullcontext
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
    UnsafeSandboxOpt,
    load_cli_settings,
)
from rlm.cli.policy_opts import AblateOpt, PolicyOpt, policy_flags
from rlm.cli.views import print_table
from rlm.config import LoadedSettings
from rlm.errors import RLMError, UsageError

BENCHMARKS = ("hotpotqa", "squad", "s_niah", "oolong", "oolong_pairs", "code_qa", "demo")
ALL = tuple(name for name in BENCHMARKS if name != "demo")   # what --name all runs
BASE_TIMEOUT_S = 3600.0   # one base request: a whole window read on a slow CPU

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
    config: ConfigOpt = None, debug: DebugOpt = False, unsafe_sandbox: UnsafeSandboxOpt = False,
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
    print_table(summary_table(summary))
    if not summary.all_ok:
        failed = summary.failed_ids[:10]
        more = "" if len(summary.failed_ids) <= 10 else f" and {len(summary.failed_ids) - 10} more"
        hint = "" if retry_failed else "; rerun with --retry-failed to try the failed ones again"
        console.print(f"not ok: {', '.join(failed)}{more}{hint}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- benchmark
def _ci(summary: dict) -> str:
    return f"{summary['mean']:.2f} [{summary['lo']:.2f}, {summary['hi']:.2f}]"


def bench_table(report) -> Table:
    from rlm.jobs.benchmark import SYSTEM_LABELS

    split = f", split={report.split}" if report.split else ""
    table = Table(title=f"{report.title} (sizes in characters, seed={report.seed}{split}; 95% intervals: "
                        "Wilson for exact match, bootstrap for mean F1/score)",
                  show_header=True, header_style="bold")
    several = len(report.benchmarks) > 1
    for column in (("benchmark",) if several else ()) + (
            "size", "system", "n", "score [95% CI]", "exact [95% Wilson]", "s/query", "tokens/query", "tokens/s"):
        table.add_column(column, justify="left" if column in ("benchmark", "system") else "right")
    for r in report.rows():
        for side, s in r["systems"].items():
            errors = f" ({s['errors']} errors)" if s["errors"] else ""
            table.add_row(*([r["benchmark"]] if several else []), f"{r['size']:,}", SYSTEM_LABELS[side],
                          f"{s['n']}{errors}", f"{r['metric']} {_ci(s['score'])}", _ci(s["exact"]),
                          f"{s['time_s']:.1f}", f"{s['tokens']:,}",
                          "-" if s["tokens_per_s"] is None else f"{s['tokens_per_s']:.0f}")
    return table


def parse_names(text: str) -> list[str]:
    """'all' -> every benchmark but the demo; 'oolong,code_qa' -> both (in that order, once each)."""
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
                             hint="choose from: " + ", ".join(BENCHMARKS) + ", or all (all but demo)")
        if part not in names:
            names.append(part)
    if not names:
        raise UsageError("--name is empty", hint="give a benchmark, several separated by commas, or all")
    return names


def benchmark_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Benchmark: hotpotqa, squad (questions written by people; data: rlm bench data), s_niah, oolong, oolong_pairs, code_qa or demo (the demo needle); several separated by commas, or all (all but demo).")],
    sizes: Annotated[str, typer.Option("--sizes", help="Context sizes in CHARACTERS, comma-separated; k = 1,000 and m = 1,000,000 (8k = 8000 characters).")] = "8k,32k",
    n: Annotated[int, typer.Option("--n", min=1, help="Items per size.")] = 3,
    split: Annotated[str, typer.Option("--split", help="dev (for tuning) or test (held out: run once, report whatever it gives). Fixed by item id.")] = "dev",
    seed: Annotated[int | None, typer.Option("--seed", help="Seed: picks the questions and builds the contexts (same seed, same items). Default 0 with --split dev, 100 with --split test (generated benchmarks' seeds below 100 were read while tuning).")] = None,
    compare_base: Annotated[bool, typer.Option("--compare-base", help="Also ask the root model directly, shown as much of the context as its window takes, and (hotpotqa, squad) an oracle: only the passages that hold the answer.")] = False,
    base_n: Annotated[int | None, typer.Option("--base-n", min=1, help="With --compare-base: run the full-window base on only the first N items of each benchmark and size (a full window takes minutes per item on a small CPU); RLM and the oracle run on all --n.")] = None,
    base_window_tokens: Annotated[int | None, typer.Option("--base-window-tokens", min=256, help="The base model's window in tokens (default: the server's, from llama.cpp's /props; else 32768).")] = None,
    chars_per_token: Annotated[float, typer.Option("--chars-per-token", min=0.5, help="Characters per token assumed where the server cannot count tokens (no /tokenize).")] = 3.0,
    base_timeout: Annotated[float, typer.Option("--base-timeout", min=1.0, help="With --compare-base: seconds one base or oracle request may take (a full window of 32k tokens reads for about 11 minutes on 2 CPU cores).")] = BASE_TIMEOUT_S,
    concurrency: Annotated[int, typer.Option("--concurrency", "-j", min=1, help="Items at once.")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object with per-item results on stdout.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG of score against size with 95% intervals, one panel per benchmark (needs matplotlib).")] = None,
    results: Annotated[Path | None, typer.Option("--results", help="A NEW results file (JSONL), one line per finished item (refused if it exists). Default: results.jsonl in the run's trace folder.")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue this results file: only when its records carry this run's fingerprint (git commit, clean tree, model sha256, server flags, code and settings).")] = None,
    base_url: BaseUrlOpt = None, model: ModelOpt = None, sub_model: SubModelOpt = None,
    max_iterations: MaxIterOpt = None, quiet: QuietOpt = False,
    config: ConfigOpt = None, debug: DebugOpt = False, unsafe_sandbox: UnsafeSandboxOpt = False,
    policy: PolicyOpt = None, ablate: AblateOpt = None,
) -> None:
    """Benchmarks with known answers, scored with 95% intervals; RLM vs the base model with --compare-base."""
    from rlm.bench import splits
    from rlm.bench.generators import PUBLIC, parse_sizes
    from rlm.cli.run import notice
    from rlm.jobs.benchmark import check_seed, new_trace_dir, run_benchmark
    from rlm.llm.resolve import open_models

    names = parse_names(name)
    size_list = parse_sizes(sizes)
    splits.check_split(split)
    if seed is None:
        seed = splits.DEFAULT_TEST_SEED if split == "test" else 0
    check_seed(names, seed, split)
    if results is not None and resume is not None and results != resume:
        raise UsageError("--results and --resume name different files", hint="give one of them")
    chosen = resume if resume is not None else results
    if chosen is not None and chosen.is_dir():
        raise UsageError(f"--results names a folder ({chosen}); give a file, e.g. {chosen / 'results.jsonl'}")
    if results is not None and resume is None and results.exists() and results.stat().st_size:
        raise UsageError(f"the results file {results} already exists",
                         hint=f"give a new --results file, or continue that run with --resume {results}")
    if resume is not None and not (resume.exists() and resume.stat().st_size):
        raise UsageError(f"--resume {resume}: no such results file (or it is empty)",
                         hint="leave out --resume to start a new results file")
    if plot is not None:
        from rlm.bench.plot import require_matplotlib

        require_matplotlib()
        if plot.suffix.lower() != ".png":
            raise UsageError(f"--plot writes a PNG; give a file name ending in .png, not {plot.name}")
    if any(n in PUBLIC for n in names):
        from rlm.bench.public import public_data

        public_data().check()   # before any model starts: the command that fills the cache
    loaded = _load(ctx, config, debug, {**_model_values(base_url, model, sub_model, max_iterations),
                                        **{k: v for k, v in policy_flags(policy, ablate).items() if v is not None}})
    # the embedded model when no server is configured or answering, guarded and proved as for `rlm query`
    settings, client = open_models(loaded.settings, base_url_explicit=loaded.base_url_configured, say=notice)
    trace_dir = new_trace_dir(settings)
    results_path = chosen if chosen is not None else trace_dir / "results.jsonl"
    say = Console(stderr=True)
    base_client = None
    if compare_base:   # one request reads a whole window: its own client, with room for that
        from rlm.llm.resolve import slow_client

        base_client = slow_client(client, settings, base_timeout)
    with client, (base_client or nullcontext()):
        window = None
        if compare_base:
            from rlm.bench.window import detect

            window = detect(settings.model.base_url, settings.model.api_key, tokens=base_window_tokens,
                            chars_per_token=chars_per_token)
            if not quiet:
                d = window.describe()
                say.print(f"base model: window {d['window_tokens']:,} tokens ({d['window_source']}), tokens counted "
                          f"by {d['token_count']}, {d['answer_tokens']} kept for the answer",
                          highlight=False, markup=False, soft_wrap=True)
        if not quiet:
            say.print(f"results: {results_path} (one line per finished item; add --resume {results_path} "
                      "to continue a stopped run)", highlight=False, markup=False, soft_wrap=True)
        try:
            report = run_benchmark(names, size_list, n=n, seed=seed, split=split, settings=settings, client=client,
                                   compare_base=compare_base, window=window, concurrency=concurrency,
                                   reporter=make_reporter(quiet, label="item"), trace_dir=trace_dir,
                                   results_path=results_path, resume=resume is not None, base_n=base_n,
                                   base_client=base_client)
        except (KeyboardInterrupt, RLMError) as exc:
            if results_path.exists() and results_path.stat().st_size and not isinstance(exc, UsageError):
                what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped"
                say.print(f"{what}: finished items are kept in {results_path}; add --resume {results_path} "
                          "to the same command to continue", highlight=False, markup=False, soft_wrap=True)
            raise
    if report.resumed:
        say.print(f"{report.resumed} of {len(report.results)} items from {report.results_path}",
                  highlight=False, markup=False, soft_wrap=True)
    print_table(bench_table(report), stderr=json_out)
    if plot is not None:
        from rlm.bench.plot import plot_report

        plot_report(report, plot)
        say.print(f"plot written to {plot}", highlight=False, markup=False, soft_wrap=True)
    if json_out:
        from rlm.core.text import json_line

        typer.echo(json_line(report.to_dict()))  # one line: U+2028 and controls escaped
