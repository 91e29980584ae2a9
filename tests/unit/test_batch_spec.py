"""Batch specs: validation (every problem at once), settings layering, results file, executor."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from rlm.jobs import LocalExecutor, ResultWriter, load_spec, read_results, select_queries, summarize
from rlm.config import Settings, settings_from_mapping
from rlm.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path / "docs" / "a.txt", "alpha beta gamma\n")
    write(tmp_path / "docs" / "set" / "one.txt", "one\n")
    return tmp_path


def test_valid_spec_resolves_paths_against_its_folder(folder: Path, monkeypatch) -> None:
    monkeypatch.chdir("/")
    spec = load_spec(write(folder / "s.yaml", """
model: {base_url: "http://127.0.0.1:1/v1", root_model: r, sub_model: s}
settings: {max_iterations: 4, sandbox: {cell_timeout_s: 9}}
concurrency: 3
output: out/results.jsonl
queries:
  - {id: q1, question: " What ", context_file: docs/a.txt, expected: 42, match: numeric}
  - {id: 7, question: Why, context_dir: docs/set}
  - {id: q3, question: How, context: inline text}
"""))
    assert spec.concurrency == 3
    assert spec.output == (folder / "out" / "results.jsonl").resolve()
    assert spec.trace_dir == spec.output.parent / "results-traces"
    s = spec.settings
    assert (s.model.base_url, s.model.root_model, s.model.sub_model) == ("http://127.0.0.1:1/v1", "r", "s")
    assert s.run.max_iterations == 4 and s.sandbox.cell_timeout_s == 9
    q1, q2, q3 = spec.queries
    assert (q1.id, q1.question, q1.context_file, q1.expected, q1.match) == (
        "q1", "What", (folder / "docs" / "a.txt").resolve(), "42", "numeric")
    assert (q2.id, q2.context_dir) == ("7", (folder / "docs" / "set").resolve())
    assert q3.context_text == "inline text" and q3.match == "contains"


def test_defaults_top_level_context_and_output(folder: Path) -> None:
    spec = load_spec(write(folder / "many.yaml", "context_file: docs/a.txt\nmatch: exact\n"
                                                  "queries: [{id: a, question: A}, {id: b, question: B}]\n"))
    assert spec.output == (folder / "many.results.jsonl").resolve()
    assert all(q.context_file == (folder / "docs" / "a.txt").resolve() and q.match == "exact"
               for q in spec.queries)
    assert spec.concurrency == Settings().batch_concurrency


def test_every_problem_is_listed_at_once(folder: Path) -> None:
    path = write(folder / "bad.yaml", """
model:
  root_modle: x
  base_url: ftp://nope
settings:
  max_iteration: 3
concurency: 2
queries:
  - {id: a, question: Q, context_file: missing.txt}
  - {id: a, question: 5, context_file: docs/a.txt, expectd: foo}
  - {question: hi, context: text, match: fuzzy}
  - {id: d, question: Q}
  - {id: e, question: Q, context_file: docs/a.txt, context: also}
  - just a string
""")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    msg = info.value.message
    expected = [
        "unknown key 'concurency' at the top level (did you mean 'concurrency'?)",
        "(did you mean 'max_iterations'?)",
        "unknown key 'model.root_modle'", "(did you mean 'root_model'?)",
        "base_url must be an http:// or https:// URL",
        "queries[0] (id a): context file not found", "missing.txt",
        "queries[1] (id a): duplicate id 'a' (first used by queries[0])",
        "queries[1] (id a): unknown key 'expectd' (did you mean 'expected'?)",
        "queries[1] (id a): question must be a non-empty string, got an integer",
        "queries[2]: 'id' is missing",
        "queries[2]: match must be one of contains, exact, numeric, got 'fuzzy'",
        "queries[3] (id d): no context",
        "queries[4] (id e): give one context, not context_file and context",
        "queries[5] must be a mapping",
    ]
    for part in expected:
        assert part in msg, f"{part!r} not in:\n{msg}"
    assert msg.startswith("13 problems in batch spec")
    assert "nothing was run" in info.value.hint


@pytest.mark.parametrize("text, part", [
    ("queries: []", "'queries' is empty"),
    ("model: {}\n", "'queries' is missing"),
    ("queries: {a: 1}", "'queries' must be a list"),
    ("- a\n- b", "the top level must be a mapping"),
    ("queries: [\n  {id: a", "malformed YAML"),
    ("concurrency: 0\nqueries: [{id: a, question: Q, context: x}]", "concurrency must be a positive integer"),
    ("output: 5\nqueries: [{id: a, question: Q, context: x}]", "output must be a file path"),
    ("settings: [1]\nqueries: [{id: a, question: Q, context: x}]", "'settings' must be a mapping"),
    ("settings: {max_iterations: many}\nqueries: [{id: a, question: Q, context: x}]",
     "max_iterations must be an integer"),
    ("queries: [{id: a, question: Q, expected: [1], context: x}]", "expected must be text or a number"),
    ("queries: [{id: true, question: Q, context: x}]", "id must be a string or an integer"),
])
def test_single_problems(folder: Path, text: str, part: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_spec(write(folder / "s.yaml", text))
    assert part in info.value.message


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_precedence_base_then_spec_then_cli(folder: Path) -> None:
    base = settings_from_mapping({"max_iterations": 2, "max_output_chars": 111, "root_model": "from-config"})
    spec = load_spec(write(folder / "s.yaml", "model: {root_model: from-spec}\nsettings: {max_iterations: 5}\n"
                                              "queries: [{id: a, question: Q, context: x}]"),
                     base=base, cli={"max_iterations": 9, "sub_model": None}, concurrency=4,
                     output=folder / "elsewhere.jsonl")
    assert spec.settings.run.max_output_chars == 111          # config survives
    assert spec.settings.model.root_model == "from-spec"      # spec over config
    assert spec.settings.run.max_iterations == 9              # command line over spec
    assert spec.concurrency == 4 and spec.output == (folder / "elsewhere.jsonl").resolve()


# ------------------------------------------------------------------ results file
def test_results_last_line_wins_and_torn_lines_are_skipped(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    with ResultWriter(out) as w:
        w.write({"id": "a", "status": "error"})
        w.write({"id": "b", "status": "ok"})
        w.write({"id": "a", "status": "ok", "answer": "ü"})
    with out.open("ab") as fh:                       # a kill in the middle of a write
        fh.write(b'{"id": "c", "sta')
    assert {k: v["status"] for k, v in read_results(out).items()} == {"a": "ok", "b": "ok"}
    assert read_results(out)["a"]["answer"] == "ü"
    with ResultWriter(out) as w:                     # the next writer starts on a fresh line
        w.write({"id": "c", "status": "ok"})
    assert set(read_results(out)) == {"a", "b", "c"}
    assert out.read_text().splitlines()[-1] == json.dumps({"id": "c", "status": "ok"})
    assert read_results(tmp_path / "none.jsonl") == {}


def test_select_and_summarize(folder: Path) -> None:
    spec = load_spec(write(folder / "s.yaml", """
queries:
  - {id: a, question: Q, context: x, expected: Paris}
  - {id: b, question: Q, context: x, expected: "12", match: numeric}
  - {id: c, question: Q, context: x}
  - {id: d, question: Q, context: x}
"""))
    previous = {"a": {"id": "a", "status": "ok", "answer": "It is Paris.", "duration_s": 1.5,
                      "usage": {"m": {"prompt_tokens": 10, "completion_tokens": 2, "calls": 1}}},
                "b": {"id": "b", "status": "error", "answer": None, "duration_s": 0.5, "usage": {}},
                "c": {"id": "c", "status": "max_iterations", "answer": "x", "duration_s": 2.0, "usage": {}}}
    assert [q.id for q in select_queries(spec, previous, retry_failed=False)] == ["d"]
    assert [q.id for q in select_queries(spec, previous, retry_failed=True)] == ["b", "c", "d"]
    s = summarize(spec, previous, ran=0)
    assert s.counts == {"ok": 1, "error": 1, "max_iterations": 1, "not run": 1}
    assert (s.scored, s.correct, s.accuracy) == (2, 1, 0.5)
    assert (s.prompt_tokens, s.completion_tokens, s.query_s) == (10, 2, 4.0)
    assert s.failed_ids == ["b", "c", "d"] and s.skipped == 3 and not s.all_ok


# ------------------------------------------------------------------ executor
def test_local_executor_bounds_concurrency_and_cancels_pending() -> None:
    ex = LocalExecutor(2)
    lock = threading.Lock()
    running, peak = [0], [0]
    gate = threading.Event()

    def job(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        gate.wait(5)
        with lock:
            running[0] -= 1
        return i * 10

    futures = [ex.submit(job, i) for i in range(5)]
    deadline = time.monotonic() + 5
    while sum(f.running() for f in futures) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    ex.shutdown(cancel_pending=True)
    gate.set()
    assert [f.result(5) for f in futures[:2]] == [0, 10]
    assert all(f.cancelled() for f in futures[2:])
    assert peak[0] == 2
    with pytest.raises(RuntimeError):
        ex.submit(job, 9)


def test_local_executor_passes_exceptions() -> None:
    ex = LocalExecutor(1)
    try:
        fut = ex.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            fut.result(5)
        assert ex.submit(lambda a, b: a + b, 2, 3).result(5) == 5
    finally:
        ex.shutdown(wait=True)


def test_example_spec_is_valid() -> None:
    spec = load_spec(REPO / "configs" / "examples" / "batch.yaml")
    assert [q.id for q in spec.queries] == ["topic", "lead", "stations", "milestones"]
    assert spec.concurrency == 2
