"""Batch specs: validation (every problem at once), settings layering, results file, executor."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from rlm.config import Settings, settings_from_mapping
from rlm.errors import ConfigError
from rlm.jobs import LocalExecutor, ResultWriter, load_spec, read_results, select_queries, summarize

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


# ------------------------------------------------------------------ paths may not leave the spec's folder
@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A private file next to (not inside) the spec's folder."""
    write(tmp_path / "secret.txt", "the user's private file\n")
    return tmp_path / "secret.txt"


@pytest.fixture
def specdir(tmp_path: Path) -> Path:
    write(tmp_path / "spec" / "docs" / "a.txt", "alpha\n")
    return tmp_path / "spec"


@pytest.mark.parametrize("key, raw", [
    ("context_file", "../secret.txt"),
    ("context_file", "docs/../../secret.txt"),
    ("context_file", "ABS"),
    ("context_dir", ".."),
])
def test_context_paths_leaving_the_spec_folder_are_refused(specdir: Path, outside: Path, key: str, raw: str) -> None:
    raw = str(outside) if raw == "ABS" else raw
    spec = write(specdir / "s.yaml", f"queries:\n  - {{id: steal, question: Q, {key}: '{raw}'}}\n")
    with pytest.raises(ConfigError) as info:
        load_spec(spec)
    msg = info.value.message
    assert "queries[0] (id steal)" in msg and raw in msg and "leaves the spec's folder" in msg
    assert "--allow-outside-paths" in msg
    ok = load_spec(spec, allow_outside_paths=True)            # the explicit flag lifts the rule
    assert getattr(ok.queries[0], key) == (specdir / raw).resolve()


def test_symlinks_that_escape_count_as_leaving(specdir: Path, outside: Path) -> None:
    (specdir / "docs" / "link.txt").symlink_to(outside)
    (specdir / "set").mkdir()
    (specdir / "set" / "fine.txt").write_text("fine\n")
    (specdir / "set" / "sneaky.txt").symlink_to(outside)
    (specdir / "docs" / "inner.txt").symlink_to(specdir / "docs" / "a.txt")   # inside: fine
    spec = write(specdir / "s.yaml", "queries:\n"
                 "  - {id: a, question: Q, context_file: docs/link.txt}\n"
                 "  - {id: b, question: Q, context_dir: set}\n"
                 "  - {id: c, question: Q, context_file: docs/inner.txt}\n")
    with pytest.raises(ConfigError) as info:
        load_spec(spec)
    msg = info.value.message
    assert msg.startswith("2 problems")
    assert "queries[0] (id a): context_file docs/link.txt leaves the spec's folder" in msg
    assert f"(it resolves to {outside.resolve()})" in msg
    assert "queries[1] (id b): context_dir set holds symlinks that leave" in msg and "sneaky.txt" in msg
    assert "id c" not in msg


def test_top_level_context_and_context_root(specdir: Path, outside: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"top level: context_file \.\./secret\.txt leaves"):
        load_spec(write(specdir / "s.yaml", "context_file: ../secret.txt\nqueries: [{id: a, question: Q}]\n"))
    # a context_root inside the spec's folder narrows the rule
    write(specdir / "data" / "d.txt", "d\n")
    narrowed = write(specdir / "n.yaml", "context_root: data\nqueries:\n"
                     "  - {id: a, question: Q, context_file: data/d.txt}\n"
                     "  - {id: b, question: Q, context_file: docs/a.txt}\n")
    with pytest.raises(ConfigError) as info:
        load_spec(narrowed)
    assert "queries[1] (id b): context_file docs/a.txt leaves context_root" in info.value.message
    assert "id a" not in info.value.message
    # a spec cannot widen its own reach ...
    wide = write(specdir / "w.yaml", "context_root: ..\nqueries: [{id: a, question: Q, context_file: ../secret.txt}]\n")
    with pytest.raises(ConfigError, match="a spec cannot widen its own reach"):
        load_spec(wide)
    # ... the user can, on the command line
    spec = load_spec(wide, context_root=tmp_path)
    assert spec.queries[0].context_file == outside.resolve()


# ------------------------------------------------------------------ executor
@pytest.mark.parametrize("text, kind, address", [
    ("", "local", None),
    ("executor: ray\n", "ray", None),
    ("executor: {kind: ray, address: '10.0.0.5:6379'}\n", "ray", "10.0.0.5:6379"),
    ("executor: {address: 'ray://head:10001'}\n", "ray", "ray://head:10001"),
])
def test_executor_in_the_spec(folder: Path, text: str, kind: str, address: str | None) -> None:
    spec = load_spec(write(folder / "s.yaml", text + "queries: [{id: a, question: Q, context: x}]\n"))
    assert (spec.executor, spec.address) == (kind, address)


def test_executor_problems_and_command_line(folder: Path) -> None:
    bad = write(folder / "s.yaml", "executor: {kind: rai, adress: x}\nqueries: [{id: a, question: Q, context: x}]\n")
    with pytest.raises(ConfigError) as info:
        load_spec(bad)
    msg = info.value.message
    assert "executor must be one of local, ray, got 'rai' (did you mean 'ray'?)" in msg
    assert "executor: unknown key 'adress' (did you mean 'address'?)" in msg
    plain = write(folder / "p.yaml", "queries: [{id: a, question: Q, context: x}]\n")
    with pytest.raises(ConfigError, match="--address is for the ray executor"):
        load_spec(plain, address="127.0.0.1:1")
    spec = load_spec(write(folder / "r.yaml", "executor: ray\nqueries: [{id: a, question: Q, context: x}]\n"),
                     executor="local")
    assert spec.executor == "local"
    assert load_spec(plain, executor="ray", address="h:1").address == "h:1"


# ------------------------------------------------------------------ the one job loop
def test_job_loop_hands_back_results_and_stops_on_a_fatal_error() -> None:
    from rlm.errors import ModelUnreachable
    from rlm.jobs import CancelToken, Outcome, run_jobs

    got: list[tuple[int, int]] = []
    reported: list[dict] = []

    class Rec:
        def start(self, total: int, to_run: int, skipped: int) -> None:
            reported.append({"start": (total, to_run, skipped)})

        def query_done(self, record: dict) -> None:
            reported.append(record)

        def finish(self) -> None:
            reported.append({"finish": True})

    def accept(item: int, result: int) -> dict:
        got.append((item, result))
        return {"id": item}

    n = run_jobs(LocalExecutor(2), lambda i: i * i if i != 3 else None, [1, 2, 3, 4],
                 Outcome(accept), token=CancelToken(), reporter=Rec(), total=6, skipped=2)
    assert n == 3 and sorted(got) == [(1, 1), (2, 4), (4, 16)]           # None: stopped, nothing kept
    assert reported[0] == {"start": (6, 4, 2)} and reported[-1] == {"finish": True}

    gate = threading.Event()
    started: list[int] = []

    def job(i: int) -> int:
        started.append(i)
        if i == 0:
            raise ModelUnreachable("down")
        gate.wait(5)
        return i

    token = CancelToken()
    with pytest.raises(ModelUnreachable):
        run_jobs(LocalExecutor(1), job, list(range(5)), Outcome(accept), token=token, grace_s=0.2)
    gate.set()
    assert token.stopped and started[0] == 0 and len(started) <= 2     # the queued rest never started


def test_job_loop_turns_non_fatal_executor_errors_into_results() -> None:
    from rlm.errors import SandboxError
    from rlm.jobs import CancelToken, Outcome, run_jobs

    def job(i: int) -> str:
        if i == 1:
            raise SandboxError("lost with its node")
        return f"ok {i}"

    kept: dict[int, str] = {}
    run_jobs(LocalExecutor(1), job, [0, 1, 2],
             Outcome(lambda i, r: kept.__setitem__(i, r), lambda i, exc: f"error: {exc}"), token=CancelToken())
    assert kept == {0: "ok 0", 1: "error: lost with its node", 2: "ok 2"}


# ------------------------------------------------------------------ the Ray executor without a cluster
def test_ray_is_imported_only_when_a_ray_executor_is_made() -> None:
    import subprocess
    import sys

    code = ("import sys, rlm.jobs, rlm.jobs.ray_executor, rlm.cli.batch\n"
            "assert 'ray' not in sys.modules, 'ray imported eagerly'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_node_image_check_names_the_node_for_a_missing_or_stale_image(monkeypatch) -> None:
    import rlm.sandbox.engine as engine_module
    from rlm.errors import ImageMissing
    from rlm.jobs import ray_executor

    images = {"rlm-sandbox:latest": {"rlm.image.hash": "a" * 64}}

    class FakeEngine:  # the node's Docker engine, as far as this check sees it
        def image_labels(self, name: str) -> dict | None:
            return images.get(name)

        def close(self) -> None:
            pass

    monkeypatch.setattr(engine_module, "Engine", FakeEngine)
    monkeypatch.setattr(ray_executor, "_node", lambda: ("f" * 56, "node-b"))
    monkeypatch.setattr(ray_executor, "_checked", set())
    ray_executor.check_node_image("rlm-sandbox:latest", frozenset({"a" * 64}))
    with pytest.raises(ImageMissing) as info:
        ray_executor.check_node_image("rlm-sandbox:latest", frozenset({"b" * 64}))
    assert "node node-b (ffffffffffff): the sandbox image rlm-sandbox:latest is stale" in info.value.message
    assert "hash aaaaaaaaaaaa, the driver expects bbbbbbbbbbbb" in info.value.message
    with pytest.raises(ImageMissing, match=r"node node-b \(ffffffffffff\): the sandbox image other:1 is not built"):
        ray_executor.check_node_image("other:1", None)
