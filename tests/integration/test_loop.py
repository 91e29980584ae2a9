"""The RLM loop end to end: scripted OpenAI-compatible server over real HTTP, the real openai client,
the real sandbox (container, kernel, bridge).  Marker ``docker``."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlm.config import settings_from_mapping
from rlm.core import prompts
from rlm.core.orchestrator import Orchestrator
from rlm.core.result import RunResult
from rlm.errors import ModelUnreachable
from rlm.llm.fake_server import FakeModelServer, repl
from rlm.llm.openai_client import OpenAICompatibleClient
from rlm.sandbox import SandboxSession

pytestmark = pytest.mark.docker

ROOT, SUB = "root-model", "sub-model"
MARKER = "CONTEXT-START-MARKER-51ab"


@dataclass
class Outcome:
    result: RunResult
    server: FakeModelServer
    events: list[dict]

    @property
    def root_requests(self) -> list[dict]:
        return [r for r in self.server.requests if r["model"] == ROOT]

    @property
    def sub_requests(self) -> list[dict]:
        return [r for r in self.server.requests if r["model"] != ROOT]

    def feedback(self, n: int) -> str:
        """The last user message of the n-th root request (0-based)."""
        return [m for m in self.root_requests[n]["messages"] if m["role"] == "user"][-1]["content"]

    def cells(self) -> list[dict]:
        return [e for e in self.events if e["kind"] == "cell"]


@pytest.fixture
def context_file(tmp_path) -> Path:
    path = tmp_path / "doc.txt"
    path.write_text(f"{MARKER}\n" + "alpha beta gamma\n" * 200 + "The secret code is 7421.\n" + "delta\n" * 100)
    return path


@pytest.fixture
def run_loop(engine, tmp_path, context_file):
    servers: list[FakeModelServer] = []

    def go(root: list, *, context: Path | None = None, sub=None, sub_fail_when: str | None = None,
           question: str = "What is the secret code?", **overrides) -> Outcome:
        server = FakeModelServer(root_model=ROOT, models=[SUB], root=root, sub=sub, sub_fail_when=sub_fail_when)
        servers.append(server)
        settings = settings_from_mapping({"base_url": server.url, "root_model": ROOT, "sub_model": SUB,
                                          "trace_dir": str(tmp_path / "traces"), "max_retries": 2,
                                          "cell_timeout_s": 20, **overrides})
        trace = tmp_path / f"run-{len(servers)}.jsonl"
        with OpenAICompatibleClient(settings.model, backoff_base_s=0.01) as client:
            orch = Orchestrator(settings, client, session_factory=lambda path: SandboxSession(
                context=path, settings=settings.sandbox, engine=engine))
            result = orch.run(question, context or context_file, trace_path=trace)
        events = [json.loads(line) for line in trace.read_text().splitlines()]
        return Outcome(result, server, events)

    yield go
    for server in servers:
        server.close()


def test_needle_found_by_regex_over_a_1mb_context(run_loop, tmp_path):
    rng = random.Random(7)
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]
    hay = " ".join(rng.choice(words) for _ in range(180_000))[:1_000_000]
    at = len(hay) // 2 + 12_345
    text = MARKER + " " + hay[:at] + " The magic number is 918273. " + hay[at:]
    path = tmp_path / "big.txt"
    path.write_text(text)
    out = run_loop([
        repl("print(type(context).__name__, len(context))"),
        repl("import re\nm = re.search(r'magic number is (\\d+)', context)\nprint(m.start(), m.group(1))"),
        repl("FINAL(m.group(1))"),
    ], context=path)
    assert (out.result.answer, out.result.status, out.result.iterations) == ("918273", "ok", 3)
    assert f"str {len(text)}" in out.feedback(1)
    assert "918273" in out.feedback(2)
    # the root model never receives the context, and the trace never holds it
    assert all(len(json.dumps(r)) < 60_000 for r in out.root_requests)
    trace_text = Path(out.result.trace).read_text()
    assert len(trace_text) < 60_000
    assert hay[5_000:5_100] not in trace_text and hay[-100:] not in trace_text
    assert MARKER not in trace_text
    start = out.events[0]
    assert start["kind"] == "run_start" and start["context"]["total_chars"] == len(text)
    assert start["context"]["source"] == "big.txt"


def test_llm_query_round_trip(run_loop):
    out = run_loop([
        repl("r = llm_query('What colour is the sky? ' + context[:30])\nprint('SUB SAID:', r)"),
        "FINAL_VAR(r)",
    ], sub={"colour": "blue", "default": "no idea"})
    assert (out.result.answer, out.result.status) == ("blue", "ok")
    assert out.result.sub_calls == 1
    assert "SUB SAID: blue" in out.feedback(1)
    (sub_request,) = out.sub_requests
    assert sub_request["model"] == SUB
    assert sub_request["messages"][-1]["content"].startswith("What colour is the sky? " + MARKER)
    assert out.result.usage[SUB].calls == 1 and out.result.usage[ROOT].calls == 2
    sub_events = [e for e in out.events if e["kind"] == "sub_call"]
    assert len(sub_events) == 1 and sub_events[0]["ok"] and sub_events[0]["reply_chars"] == 4


def test_batched_calls_with_one_failing_slot(run_loop):
    out = run_loop([
        repl("rs = llm_query_batched(['q0 fine', 'q1 FAILME', 'q2 fine', 'q3 fine'])\n"
             "print([r[:6] for r in rs])\nFINAL(' | '.join(rs))"),
    ], sub={"default": "ok-answer"}, sub_fail_when="FAILME", max_retries=0)
    parts = out.result.answer.split(" | ")
    assert parts[0] == parts[2] == parts[3] == "ok-answer"
    assert parts[1].startswith("Error: ") and "HTTP 500" in parts[1]
    assert out.result.sub_calls == 4
    subs = [e for e in out.events if e["kind"] == "sub_call"]
    assert sorted(e["ok"] for e in subs) == [False, True, True, True]
    assert out.cells()[0]["error"] is None


def test_final_var_and_a_missing_variable(run_loop):
    out = run_loop([
        repl("answer_text = 'the code is ' + context.split('secret code is ')[1].split('.')[0]"),
        "FINAL_VAR(not_defined)",
        "FINAL_VAR(answer_text)",
    ])
    assert (out.result.answer, out.result.iterations) == ("the code is 7421", 3)
    firing = [e for e in out.events if e["kind"] == "rule" and e["id"] == "placeholder-answer"]
    assert len(firing) == 1 and firing[0]["message"] in out.feedback(2) and "`not_defined`" in out.feedback(2)


def test_final_in_code_ends_after_that_cell(run_loop):
    out = run_loop([repl("FINAL('from code')") + "\n" + repl("print('never runs')")])
    assert out.result.answer == "from code"
    assert [c["code"] for c in out.cells()] == ["FINAL('from code')"]


def test_cell_errors_are_data(run_loop):
    out = run_loop([repl("1/0"), "FINAL(recovered)"])
    assert out.result.answer == "recovered"
    assert "ZeroDivisionError" in out.feedback(1)
    assert out.cells()[0]["error"] == "ZeroDivisionError"


def test_cell_timeout_then_an_answer(run_loop):
    out = run_loop([
        repl("import time\nkept = 5\ntime.sleep(30)"),
        repl("FINAL(str(kept))"),
    ], cell_timeout_s=1)
    assert (out.result.answer, out.result.status) == ("5", "ok")
    first = out.cells()[0]
    assert first["timed_out"] is True and first["duration_s"] < 10
    assert "timed out after 1 s" in out.feedback(1)


def test_iteration_limit(run_loop):
    out = run_loop([repl("a = 1"), repl("b = 2"), "I could not finish. FINAL(best guess)"], max_iterations=2)
    assert (out.result.status, out.result.answer, out.result.iterations) == ("max_iterations", "best guess", 2)
    assert len(out.root_requests) == 3
    ask = out.feedback(2)
    assert ask.startswith("You have reached the turn limit") and "Question:" in ask and "FINAL(" in ask
    assert "(no output)" not in ask   # an empty last output is not shown
    assert out.events[-1]["status"] == "max_iterations"


def test_think_block_is_stripped(run_loop):
    out = run_loop([
        {"think": "Maybe FINAL(wrong) right away?", "content": repl("x = 1 + 1\nprint(x)")},
        {"think": "It printed 2. FINAL(also wrong)", "content": "FINAL(2)"},
    ])
    assert (out.result.answer, out.result.iterations) == ("2", 2)
    replies = [e["text"] for e in out.events if e["kind"] == "model_reply"]
    assert all("<think>" not in r and "wrong" not in r for r in replies)
    assert [c["code"] for c in out.cells()] == ["x = 1 + 1\nprint(x)"]


def test_none_content_then_success(run_loop):
    out = run_loop([{"content": None}, "FINAL(after none)"])
    assert (out.result.answer, out.result.iterations) == ("after none", 1)
    assert len(out.root_requests) == 2
    assert out.result.usage[ROOT].calls == 2


def test_http_500_then_success(run_loop):
    out = run_loop([{"status": 500, "message": "overloaded"}, "FINAL(after 500)"])
    assert (out.result.answer, out.result.status, out.result.iterations) == ("after 500", "ok", 1)
    assert len(out.root_requests) == 2


def test_sub_call_budget_exceeded_raises_in_the_cell(run_loop):
    out = run_loop([
        repl("a = llm_query('one')\nprint('first:', a)\nb = llm_query('two')"),
        "FINAL(done)",
    ], max_sub_calls=1)
    assert out.result.answer == "done"
    assert out.result.sub_calls == 1
    assert len(out.sub_requests) == 1
    cell = out.cells()[0]
    assert cell["error"] == "SubCallError"
    assert "first: sub-answer" in cell["output"]
    feedback = out.feedback(1)
    assert "SubCallError" in feedback and "sub-call budget exceeded" in feedback and "MAX_SUB_CALLS=1" in feedback


def test_disabled_and_too_long_sub_calls_are_refused_in_the_cell(run_loop):
    out = run_loop([
        repl("try:\n    llm_query('x' * 50)\nexcept SubCallError as e:\n    print('REFUSED:', e)"),
        "FINAL(done)",
    ], max_sub_call_chars=10)
    assert "REFUSED: prompt of 50 characters exceeds MAX_SUB_CALL_CHARS=10" in out.feedback(1)
    out = run_loop([repl("llm_query('hi')"), "FINAL(done)"], enable_sub_calls=False)
    assert "disabled" in out.feedback(1) and out.result.sub_calls == 0 and not out.sub_requests


def test_rebound_context_is_restored(run_loop, context_file):
    out = run_loop([
        repl("context = 'gone'"),
        repl("print('LEN', len(context))"),
        "FINAL(ok)",
    ])
    assert prompts.context_restored_note() in out.feedback(1)
    assert f"LEN {len(context_file.read_text())}" in out.feedback(2)
    assert any(e["kind"] == "note" and "rebound" in e["text"] for e in out.events)


def test_unreachable_server_raises_and_leaves_no_container(engine, tmp_path, context_file):
    settings = settings_from_mapping({"base_url": "http://127.0.0.1:9/v1", "root_model": ROOT, "max_retries": 0,
                                      "trace_dir": str(tmp_path)})
    with OpenAICompatibleClient(settings.model) as client:
        orch = Orchestrator(settings, client, session_factory=lambda path: SandboxSession(
            context=path, settings=settings.sandbox, engine=engine))
        with pytest.raises(ModelUnreachable, match="cannot reach the model server"):
            orch.run("q", context_file, trace_path=tmp_path / "t.jsonl")
    end = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[-1])
    assert end["kind"] == "run_end" and end["status"] == "error"
    # the engine fixture fails the session if any container of this process is left behind


def test_one_session_keeps_variables_across_questions(engine, tmp_path, context_file):
    with FakeModelServer(root_model=ROOT, models=[SUB],
                         root=[repl("hits = context.count('alpha')"), "FINAL(stored)",
                               repl("FINAL(f'hits={hits}')")]) as server:
        settings = settings_from_mapping({"base_url": server.url, "root_model": ROOT, "trace_dir": str(tmp_path)})
        with OpenAICompatibleClient(settings.model) as client, \
                SandboxSession(context=context_file, settings=settings.sandbox, engine=engine) as session:
            orch = Orchestrator(settings, client)
            first = orch.run("count", trace_path=tmp_path / "a.jsonl", session=session)
            second = orch.run("recall", trace_path=tmp_path / "b.jsonl", session=session)
            assert not session.closed
    assert (first.answer, second.answer) == ("stored", "hits=200")


def test_rlm_query_runs_a_child_rlm_in_its_own_sandbox(run_loop, tmp_path):
    out = run_loop([
        repl("part = context[context.index('The secret'):][:60]\n"
             "r = rlm_query('Find the code in the context', context=part)\nprint('CHILD:', r)"),
        # the child's only turn: it sees only `part` as its context
        repl("import re\nprint(len(context))\nFINAL(re.search(r'code is (\\d+)', context).group(1))"),
        "FINAL_VAR(r)",
    ])
    assert (out.result.answer, out.result.status, out.result.sub_calls) == ("7421", "ok", 1)
    assert "CHILD: 7421" in out.feedback(2)  # request 1 was the child's
    child_system = out.root_requests[1]["messages"][0]["content"]
    assert "recursive sub-call (depth 1 of 1)" in child_system
    assert "60 characters" in child_system
    children = list(tmp_path.glob("child-*.jsonl"))
    assert len(children) == 1
    assert json.loads(children[0].read_text().splitlines()[-1])["answer"] == "7421"


def test_a_final_cell_that_is_not_python_answers_with_its_literal_text(run_loop):
    out = run_loop([repl("FINAL(0 <= x < 256)"), "FINAL(never asked)"])
    assert (out.result.answer, out.result.status, out.result.iterations) == ("0 <= x < 256", "ok", 1)
    assert len(out.root_requests) == 1
    assert out.cells()[0]["error"] == "NameError"
    assert any(e["kind"] == "note" and "literal text is the answer" in e["text"] for e in out.events)
    out = run_loop([repl("FINAL(The code is 7421)")])
    assert (out.result.answer, out.result.iterations) == ("The code is 7421", 1)
    assert out.cells()[0]["error"] == "SyntaxError"


def test_an_identical_failing_cell_is_not_run_twice(run_loop):
    cell = "hits = [int(x) for x in re.findall(r'code is (\\d+)', context)]\nprint(statistics.median(hits))"
    out = run_loop([repl(cell), repl(cell), repl("import statistics\n" + cell), "FINAL(7421)"], policy="legacy")
    assert out.result.answer == "7421"
    assert [c["code"] for c in out.cells()] == [cell, "import statistics\n" + cell]
    assert "add `import statistics` as the first line" in out.feedback(2)   # re is there already, statistics is not
    assert "7421" in out.feedback(3)


LOGBOOK = ("Day 1. Wind from the north-west; the barque Meridian left Valdane harbour.\n\n"
           + "Day {n}. Calm sea; the bosun mended the foresail.\n\n" * 40
           + "Day 90. The Meridian sighted the lighthouse of Korsund at dawn and took a pilot aboard.\n\n"
           + "Day 91. At Korsund the pilot was Edda Strand, who had sailed with the Meridian's captain before.\n")


def test_search_in_the_repl_ranks_passages_with_their_offsets(run_loop, tmp_path):
    path = tmp_path / "logbook.txt"
    path.write_text(LOGBOOK)
    code = ("hits = search('who was the pilot at Korsund', k=2)\n"
            "print([(h.offset, context[h.offset:h.offset + 7]) for h in hits])\n"
            "FINAL(hits[0].split('pilot was ')[1].split(',')[0])")
    out = run_loop([repl(code)], context=path, question="Who piloted the ship into Korsund?")
    assert out.result.status == "ok" and out.result.answer == "Edda Strand"
    shown = out.cells()[-1]["output"]
    assert f"({LOGBOOK.index('Day 91')}, 'Day 91.')" in shown and f"({LOGBOOK.index('Day 90')}, 'Day 90.')" in shown


def test_search_over_a_list_of_documents_names_each_hit_s_document(run_loop, tmp_path):
    path = tmp_path / "recipes.jsonl"
    docs = ["Barley soup: simmer the leeks for ten minutes.", "Plum cake: bake for forty minutes at 180 degrees.",
            "Leek pie: bake for an hour."]
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    code = "hit = search('how long to bake the plum cake', k=1)[0]\nFINAL(f'{hit.index} {hit.offset}')"
    out = run_loop([repl(code)], context=path, question="How long does the plum cake bake?")
    assert out.result.status == "ok" and out.result.answer == "1 0"


def test_an_empty_result_is_shown_its_lines_and_its_regex_checked_in_the_sandbox(run_loop, tmp_path):
    """Legacy's empty-result rule: the model's regular expression is tried on the sampled lines in the kernel
    (a catastrophic one costs the sandbox's cell, never the host)."""
    path = tmp_path / "sky.txt"
    path.write_text("".join(f"1998-01-{d:02d} seeing: poor, Jupiter low\n" for d in range(1, 20)))
    code = "nights = [l for l in grep(r'seeing') if re.search(r'visibility=(\\w+)', l)]\nprint(len(nights))"
    out = run_loop([repl(code), "FINAL(19)"], context=path, question="On how many nights was the seeing poor?",
                   policy="legacy")
    assert out.result.answer == "19" and [c["code"] for c in out.cells()] == [code]   # the probe is no cell of the model's
    told = out.feedback(1)
    assert "1998-01-01 seeing: poor, Jupiter low" in told and "`visibility=(\\w+)` matches none of them" in told
    assert [e["id"] for e in out.events if e["kind"] == "rule"].count("empty-result") == 1
