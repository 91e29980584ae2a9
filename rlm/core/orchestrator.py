"""The Recursive Language Model loop.

The root model sees metadata about the context, never the context itself.  Each turn it
replies with code (run in the session's kernel) and/or a final answer; the output of the
code, truncated, goes back to it.  Code may call sub-models through the bridge.  The run
ends with FINAL(...) / FINAL_VAR(name) (as text or called in code) or at the iteration
limit, where the model is asked once for its best answer.

Rules for a reply (see README "How replies are read"):
* code blocks (```repl / ```python) run first, in order; if a cell calls FINAL(...), the
  turn ends after that cell and later blocks are not run;
* then a FINAL(...) / FINAL_VAR(name) in the text (outside code) gives the answer;
* an answer is taken only when it is one: a stand-in (``your answer``, ``answer``, ``None``),
  an empty text or a name the run never bound is never taken, and a run that ends with no
  other answer has status ``no_answer``.

Each reply goes through five short steps: parse (code blocks, FINAL), run (the blocks, in the
kernel), observe (a typed :class:`~rlm.core.policy.Observation` of the turn), decide (the run's
:class:`~rlm.core.policy.Policy`: which rules fire, each firing traced with its id) and render
(the answer, or the next user message).  What the loop says to the model is the policy's; the
mechanics below hold for every policy:

* a block whose code (whitespace normalised) is the cell that ran last is not run again: its
  known output is reused; after ``STUCK_TURNS`` such replies in a row the model is asked for its answer;
* a cell that is only ``FINAL(...)`` and fails because its argument is not Python answers with
  the literal text; ``FINAL(name)`` in text, for a variable the run's code assigned and not a word
  of the question, answers with that variable's value;
* a FINAL in a line copied from rlm's own message is no answer;
* at the iteration limit the answer never keeps code fences or a ``FINAL(`` wrapper.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm.config import Settings
from rlm.core import hints, parsing, prompts
from rlm.core.answers import KnownCell, copies_final, echoes_output, is_placeholder, last_outputs, seen_outputs
from rlm.core.budget import Budget, BudgetedHandler, Reached, costs
from rlm.core.context import ContextSource, folder_paths, inline_text
from rlm.core.policy import AnswerForm, CellObservation, Decision, Firing, Observation, make_policy
from rlm.core.result import RunResult
from rlm.core.subcalls import ChildRunner, SubCallHandler
from rlm.core.trace import TraceWriter
from rlm.errors import Interrupted
from rlm.llm.base import Message, ModelClient, ReportingClient, Usage, report_waits
from rlm.sandbox import Execution, SandboxSession, contexts
from rlm.sandbox.bridge import BridgeRefusal

Progress = Callable[[str, dict[str, Any]], None]
SessionFactory = Callable[[Path | None], SandboxSession]


def _describe_cell(ex: Execution) -> str:
    return ex.output or prompts.NO_OUTPUT


_WAIT_KINDS = ("model_wait", "model_retry")
REUSED_SHOWN_CHARS = 500  # a reused cell's output up to this length is shown again (errors, counts)
SAMPLE_LINES = 3  # lines of grep shown to a cell that found nothing
SAMPLE_LINE_CHARS = 200
STUCK_TURNS = 2  # repeats of a cell whose output is known before the model is asked for its answer
NO_ANSWER = "no_answer"  # the status of a run that ended without an answer


@dataclass
class _Turn:
    """What running one reply's blocks gave."""

    cells: list[CellObservation] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)   # (code, output as shown)
    answer: str | None = None
    source: str = ""          # how the answer was written (the cell, FINAL(x), FINAL_VAR(x))
    cell_final: bool = False  # a cell called FINAL
    unbound: bool = False     # FINAL_VAR of a name the REPL does not have
    computed: bool = False    # the answer is a value the kernel holds (a cell's FINAL, a variable's value)


class Orchestrator:
    """Runs questions; stateless between calls (a session may be passed in to keep variables)."""

    def __init__(self, settings: Settings, client: ModelClient, *, progress: Progress | None = None,
                 session_factory: SessionFactory | None = None, depth: int = 0) -> None:
        self.settings = settings
        self.client = client
        self.progress = progress or (lambda _kind, _data: None)
        self.session_factory = session_factory or (
            lambda path: SandboxSession(context=path, settings=settings.sandbox))
        self.depth = depth

    # -- public --------------------------------------------------------------------------
    def run(self, question: str, context: Path | str | None = None, *, trace_path: Path | str | None = None,
            session: SandboxSession | None = None) -> RunResult:
        """Answer ``question`` over the context file ``context`` (or over ``session``'s context)."""
        self.budget().check_prices([self.settings.model.root_model, self.settings.model.effective_sub_model])
        run = _Run(self, question, Path(context) if context is not None else None,
                   Path(trace_path) if trace_path else self.default_trace_path(), session)
        return run.execute()

    def default_trace_path(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path(self.settings.run.trace_dir) / f"{stamp}-{uuid.uuid4().hex[:6]}.jsonl"

    def _waits_only(self, kind: str, data: dict[str, Any]) -> None:
        """A child run's progress: only what the user must hear (a silent or retried model server)."""
        if kind in _WAIT_KINDS:
            self.progress(kind, data)

    def budgets(self) -> prompts.Budgets:
        r = self.settings.run
        return prompts.Budgets(max_iterations=r.max_iterations, max_output_chars=r.max_output_chars,
                               enable_sub_calls=r.enable_sub_calls, max_sub_calls=r.max_sub_calls,
                               max_sub_call_chars=r.max_sub_call_chars, max_depth=r.max_depth, depth=self.depth)

    def budget(self) -> Budget:
        r = self.settings.run
        return Budget(max_time_s=r.max_time_s, max_tokens=r.max_tokens, max_cost_usd=r.max_cost_usd,
                      prices=r.price_table)

    def child_runner(self, trace_dir: Path) -> ChildRunner | None:
        """What rlm_query runs: a child RLM in its own session, one level deeper."""
        if self.depth + 1 > self.settings.run.max_depth:
            return None

        def run_child(prompt: str, context_text: str | None) -> tuple[str, dict[str, Usage]]:
            child = Orchestrator(self.settings, self.client, session_factory=self.session_factory,
                                 depth=self.depth + 1, progress=self._waits_only)
            source = inline_text(context_text, max_bytes=self.settings.run.max_context_bytes) \
                if context_text and context_text.strip() else ContextSource(None)
            with source:
                result = child.run(prompt, source.path,
                                   trace_path=trace_dir / f"child-{uuid.uuid4().hex[:6]}.jsonl")
            return result.answer or "", result.usage

        return run_child


class _Run:
    """The state of one run (so the Orchestrator itself stays stateless)."""

    def __init__(self, orch: Orchestrator, question: str, context: Path | None, trace_path: Path,
                 session: SandboxSession | None) -> None:
        self.o = orch
        self.s = orch.settings
        self.question = question
        self.context = context
        self.trace = TraceWriter(trace_path)
        self.trace_path = trace_path
        self.own_session = session is None
        self.session = session
        self.usage: dict[str, Usage] = defaultdict(Usage)
        self.phases = {"sandbox_start_s": 0.0, "model_s": 0.0, "execution_s": 0.0}
        self.iterations = 0
        self.seen_outputs: set[str] = set()  # cell outputs already shown to the model in this run
        self.last_cell: KnownCell | None = None  # the cell that ran last (the kernel's state is after it)
        self.stuck_turns = 0  # replies in a row whose every block repeated the last cell (not run again)
        self.sent_cells: dict[str, KnownCell] = {}  # every cell that ran, by normalised code (last run)
        self.assigned: dict[str, None] = {}           # the names the model's cells assigned, latest last
        self.used: set[str] = set()  # the names the model's cells read
        self.echoed = False  # the last reply copied an output into a code block
        self.preview: list[str] = []  # the lines of the context's preview
        self.built: str | None = None  # the variable a cell that ran without error built its result in
        self.policy = make_policy(self.s.run.policy, self.s.run.ablate, on_fire=self._on_fire)
        self.budget = orch.budget()
        self.reached: Reached | None = None   # the budget that ended the run
        self.started = time.perf_counter()
        self._last_sub_wait = float("-inf")
        self._wait_lock = threading.Lock()
        self.handler = SubCallHandler(
            ReportingClient(orch.client, self._on_sub_call_wait), sub_model=self.s.model.effective_sub_model, temperature=self.s.model.temperature,
            enabled=self.s.run.enable_sub_calls, max_calls=self.s.run.max_sub_calls,
            max_chars=self.s.run.max_sub_call_chars, concurrency=self.s.run.sub_call_concurrency,
            child=orch.child_runner(trace_path.parent), on_call=self._on_sub_call,
            deadline_s=self.s.run.sub_call_timeout_s or self.s.sandbox.cell_timeout_s,
            root_model=self.s.model.root_model, allowed_models=self.s.run.allowed_models,
            max_children=self.s.run.max_child_runs, windows=self.s.model.windows(), memo=self.s.run.memo)

    def _on_sub_call(self, event: dict[str, Any]) -> None:
        self.trace.event("sub_call", **event)
        self.o.progress("sub_call", event)

    def _on_model_wait(self, kind: str, data: dict[str, Any]) -> None:
        """The model server is silent or a request is retried: into the trace, and to the progress sink."""
        self.trace.event("note", iteration=self.iterations, text=str(data.get("message", kind)))
        self.o.progress(kind, data)

    def _on_sub_call_wait(self, kind: str, data: dict[str, Any]) -> None:
        """Like ``_on_model_wait``, marked as a sub-call's; of concurrent sub-calls silent alike
        (a batch), one report per round."""
        if kind == "model_wait":
            now = time.monotonic()
            with self._wait_lock:
                if now - self._last_sub_wait < float(data.get("interval_s", 0.0)) / 2:
                    return
                self._last_sub_wait = now
        self._on_model_wait(kind, {**data, "sub_call": True, "message": f"sub-call: {data.get('message', kind)}"})

    def _note(self, text: str) -> None:
        self.trace.event("note", iteration=self.iterations, text=text)
        self.o.progress("note", {"iteration": self.iterations, "text": text})

    @property
    def sess(self) -> SandboxSession:
        if self.session is None:
            raise RuntimeError("the run's session is not open")
        return self.session

    def execute(self) -> RunResult:
        status, answer, error = "error", None, None
        try:
            if self.session is None:
                t0 = time.perf_counter()
                self.session = self.o.session_factory(self.context)
                self.session.open()
                self.phases["sandbox_start_s"] = time.perf_counter() - t0
                self.o.progress("sandbox_ready", {"seconds": self.phases["sandbox_start_s"]})
            self.session.set_handler(BudgetedHandler(self.handler, self._budget_now, BridgeRefusal)
                                     if self.budget.any else self.handler)
            answer, status = self._loop()
        except KeyboardInterrupt:
            status, error = "interrupted", "interrupted by the user"
            raise
        except Interrupted as exc:   # cancelled: a client that left, a service shutting down
            status, error = "interrupted", str(exc)
            raise
        except Exception as exc:
            status, error = "error", str(exc)
            raise
        finally:
            if self.session is not None:
                self.session.set_handler(None)
                if self.own_session:
                    self.session.close()
            self.handler.close()
            result = self._result(answer, status, error)
            self.trace.event("run_end", answer=answer, status=status, iterations=self.iterations,
                             sub_calls=self.handler.calls, usage={m: u.to_dict() for m, u in result.usage.items()},
                             cost_usd=result.cost_usd, budget=result.budget,
                             duration_s=round(result.duration_s, 3), error=error)
            self.trace.close()
        self.o.progress("done", result.to_dict())
        return result

    def _usage(self) -> dict[str, Usage]:
        """Tokens by model so far: the root model's and the sub-calls' (child runs included)."""
        usage: dict[str, Usage] = defaultdict(Usage)
        for source in (self.usage, self.handler.usage):
            for model, u in list(source.items()):
                usage[model].add(u)
        return dict(usage)

    def _result(self, answer: str | None, status: str, error: str | None) -> RunResult:
        usage = self._usage()
        priced = {m: round(c, 6) for m, c in costs(usage, self.budget.prices or {}).items() if c is not None}
        return RunResult(answer=answer, status=status, iterations=self.iterations, sub_calls=self.handler.calls,
                         usage=usage, duration_s=time.perf_counter() - self.started,
                         trace=str(self.trace_path), phases=dict(self.phases), error=error, cost_usd=priced,
                         budget=self.reached.to_dict() if self.reached is not None else None)

    def _budget_now(self) -> Reached | None:
        """The budget reached at this moment (from a bridge thread, while a cell runs), or None."""
        for _ in range(3):   # the sub-calls' usage may grow while it is read
            try:
                return self.budget.reached(time.perf_counter() - self.started, self._usage())
            except RuntimeError:
                continue
        return None

    def _budget_reached(self) -> Reached | None:
        """The budget the run has reached (traced as a ``budget`` event and said), or None; checked
        between turns, where the run can stop without losing a cell."""
        if not self.budget.any:
            return None
        usage = self._usage()
        reached = self.budget.reached(time.perf_counter() - self.started, usage)
        if reached is not None:
            self.reached = reached
            priced = {m: round(c, 6) for m, c in costs(usage, self.budget.prices or {}).items() if c is not None}
            data = {"iteration": self.iterations, **reached.to_dict(), "text": reached.message,
                    "usage": {m: u.to_dict() for m, u in usage.items()}, "cost_usd": priced}
            self.trace.event("budget", **data)
            self.o.progress("budget", data)
        return reached

    # -- the loop ------------------------------------------------------------------------
    def _context_info(self) -> prompts.ContextInfo:
        ex = self._cell("_rlm_context_info()", record=False)
        raw = ex.meta.get("context_info")
        info: dict[str, Any] = raw if isinstance(raw, dict) else {}
        context_path = self.sess.context_path
        source = self.context.name if self.context else (Path(context_path).name if context_path else "none")
        folder = self.context if self.context is not None else Path(context_path) if context_path else None
        paths = folder_paths(folder) if folder is not None and folder.is_dir() else []
        return prompts.ContextInfo(kind=str(info.get("kind", "none")), total_chars=int(info.get("total_chars", 0)),
                                   n_documents=int(info.get("n_documents", 0)),
                                   preview=parsing.sanitize_for_terminal(str(info.get("preview", ""))),
                                   source=source, n_files=len(paths),
                                   paths=tuple(parsing.sanitize_for_terminal(p).replace("\n", "?")[:prompts.PATH_CHARS]
                                               for p in paths[:prompts.PATHS_SHOWN]),
                                   others=contexts.described(info.get("others"), self.sess))

    def _ask(self, messages: list[Message]) -> str:
        t0 = time.perf_counter()
        with report_waits(self._on_model_wait):
            completion = self.o.client.complete(messages, model=self.s.model.root_model,
                                                temperature=self.s.model.temperature)
        self.phases["model_s"] += time.perf_counter() - t0
        self.usage[completion.model].add(completion.usage)
        data = {"iteration": self.iterations, "text": completion.text, "model": completion.model,
                "usage": completion.usage.to_dict(), "latency_s": round(completion.latency_s, 3)}
        self.trace.event("model_reply", **data)
        self.o.progress("model_reply", data)
        return completion.text

    def _cell(self, code: str, *, record: bool = True) -> Execution:
        t0 = time.perf_counter()
        ex = self.sess.execute(code, timeout=self.s.sandbox.cell_timeout_s)
        self.phases["execution_s"] += time.perf_counter() - t0
        if record:
            output, cut = self._shown(ex)
            data = {"iteration": self.iterations, "code": code, "output": output, "error": ex.error_name,
                    "timed_out": ex.timed_out, "duration_s": round(ex.duration_s, 4), "restarted": ex.restarted,
                    "truncated_chars": cut}
            self.trace.event("cell", **data)
            self.o.progress("cell", data)
        return ex

    def _shown(self, ex: Execution) -> tuple[str, int]:
        """A cell's output as the model and the trace see it (sanitised, cut), and the characters cut."""
        return parsing.truncate_output(parsing.sanitize_for_terminal(_describe_cell(ex)), self.s.run.max_output_chars)

    def _loop(self) -> tuple[str | None, str]:
        info = self._context_info()
        self.preview = info.preview.splitlines()
        self.trace.event("run_start", question=self.question, depth=self.o.depth,
                         context={"kind": info.kind, "total_chars": info.total_chars,
                                  "n_documents": info.n_documents, "source": info.source,
                                  **({"n_files": info.n_files, "paths": list(info.paths)} if info.n_files else {}),
                                  **({"others": [vars(o) for o in info.others]} if info.others else {})},
                         root_model=self.s.model.root_model, sub_model=self.s.model.effective_sub_model,
                         settings={"max_iterations": self.s.run.max_iterations,
                                   "max_output_chars": self.s.run.max_output_chars,
                                   "enable_sub_calls": self.s.run.enable_sub_calls,
                                   "max_sub_calls": self.s.run.max_sub_calls,
                                   "max_time_s": self.s.run.max_time_s, "max_tokens": self.s.run.max_tokens,
                                   "max_cost_usd": self.s.run.max_cost_usd,
                                   "policy": self.policy.profile.name, "ablate": sorted(self.policy.ablated)})
        first = self.policy.decide(self._observation(), stage="first")
        messages = [{"role": "system", "content": prompts.system_prompt(info, self.o.budgets())},
                    {"role": "user", "content": prompts.first_user_prompt(
                        self.question, ending=first.ending, advice=first.advice,
                        sub_calls=self.s.run.enable_sub_calls)}]
        for iteration in range(1, self.s.run.max_iterations + 1):
            reached = self._budget_reached()
            if reached is not None:
                return self._last_chance(budget=reached.message), reached.status
            self.iterations = iteration
            self.o.progress("iteration", {"iteration": iteration, "max": self.s.run.max_iterations})
            prompt = str(messages[-1]["content"])
            reply = self._ask(messages)
            messages.append({"role": "assistant", "content": reply})
            answer, feedback = self._handle_reply(reply, prompt)
            if answer is not None:
                return answer, "ok"
            if self.echoed:   # the echo is not kept: a conversation that holds one gets more of them
                messages[-1]["content"] = hints.ECHO_STANDS_FOR
            messages.append({"role": "user", "content": feedback})
            if self.stuck_turns >= STUCK_TURNS:
                self._note(f"the same code came {self.stuck_turns + 1} times in a row although its output was "
                           "known: asked for the final answer")
                answer = self._last_chance()
                return answer, "ok" if answer is not None else NO_ANSWER
        answer = self._last_chance()
        return answer, "max_iterations" if answer is not None else NO_ANSWER

    # -- one reply: parse -> run -> observe -> decide -> render ----------------------------
    def _handle_reply(self, reply: str, prompt: str = "") -> tuple[str | None, str]:
        """Run the reply's code, then look for its answer; return (answer, feedback for the model).
        ``prompt``: the message the reply answers (a FINAL in a copy of its text is no answer)."""
        blocks, final = self._parse(reply, prompt)
        turn = self._run_blocks(blocks)
        if turn.answer is None and final is not None:
            turn.answer, turn.source, turn.unbound, turn.computed = self._final_answer(final)
        obs = self._observation(turn, has_code=bool(blocks), has_final=final is not None or turn.cell_final)
        decision = self.policy.decide(obs)
        return self._render(obs, turn, decision)

    def _parse(self, reply: str, prompt: str) -> tuple[list[str], parsing.Final | None]:
        blocks = parsing.find_code_blocks(reply)
        final = parsing.find_final(reply)
        if final is not None and copies_final(reply, final, prompt):
            self._note(f"the reply's {final.kind} FINAL is in text copied from rlm's message: not an answer")
            final = None
        return blocks, final

    def _run_blocks(self, blocks: list[str]) -> _Turn:
        """Run the blocks in order (a repeat of the last cell is not run again; with the legacy rule,
        neither is a copy of an output); stop after a cell that gives an answer."""
        turn = _Turn()
        self.echoed = False
        reused = 0
        for n, code in enumerate(blocks, start=1):
            if self.policy.enabled("echoed-output") and echoes_output(code, self.sent_cells.values()):
                self._note(f"block {n} copies an output of the run, it is not code: not run")
                turn.cells.append(CellObservation(n, code, "", echoed=True))
                self.echoed = True
                reused += 1
                continue
            normalized = parsing.normalize_code(code)
            known = self.last_cell if self.last_cell is not None and self.last_cell.code == normalized else None
            if known is not None:  # the kernel is in the state this cell left: its output is known
                self._note(f"block {n} is the same as the cell of turn {known.iteration}: not run again, "
                           "its output reused")
                # a long output is not shown again: it is in the conversation already
                turn.outputs.append((code, known.output if len(known.output) <= REUSED_SHOWN_CHARS
                                     else hints.reused_output(known.iteration)))
                turn.cells.append(CellObservation(n, known.code, known.output, known.error_name, known.timed_out,
                                                  repeat_of=known.iteration, reused=True, built=known.built))
                reused += 1
                continue
            cell, answer = self._run_cell(n, code, normalized)
            if answer is not None:
                turn.answer, turn.source, turn.cell_final, turn.computed = answer, code, True, True
                break
            if cell is not None:
                turn.cells.append(cell)
                turn.outputs.append((code, cell.output))
        answered = turn.answer is not None
        self.stuck_turns = self.stuck_turns + 1 if blocks and reused == len(blocks) and not answered else 0
        return turn

    def _run_cell(self, n: int, code: str, normalized: str) -> tuple[CellObservation | None, str | None]:
        """Run one block: what the turn observes of it, or the answer its FINAL gave."""
        ex = self._cell(code)
        for name in parsing.assigned_names(code):
            self.assigned.pop(name, None)
            self.assigned[name] = None
        self.used.update(parsing.used_names(code))
        built = parsing.result_name(code, _describe_cell(ex)) if ex.error_name is None else None
        if built is not None:
            self.built = built
        answer = self._cell_answer(code, ex)
        if answer is not None:
            return None, answer
        output, _ = self._shown(ex)
        if ex.context_restored:
            note = prompts.context_restored_note()
            output = f"{output}\n{note}"
            self.trace.event("note", iteration=self.iterations, text=note)
        earlier = self.sent_cells.get(normalized)
        self.last_cell = self.sent_cells[normalized] = KnownCell(normalized, self.iterations, output, ex.error_name,
                                                                 ex.timed_out, built)
        same = earlier is not None and earlier.output.strip() == output.strip()
        if same and earlier is not None:
            self._note(f"block {n} is the same as the cell of turn {earlier.iteration} and printed the same")
        empty = ex.error_name is None and hints.found_nothing(output)
        samples, sampled, unmatched = self._probe(code, output) if empty and earlier is None else ((), None, ())
        return CellObservation(n, code, output, ex.error_name, ex.timed_out, empty=empty,
                               repeat_of=earlier.iteration if earlier is not None else None, same_output=same,
                               built=built, samples=samples, sampled=sampled, unmatched=unmatched), None

    def _final_answer(self, final: parsing.Final) -> tuple[str, str, bool, bool]:
        """The answer of the reply's text FINAL: (answer, how it was written, it names no value, it is
        a value the kernel holds)."""
        if final.kind == "answer":
            value = self._text_answer(final.value)
            return value, f"FINAL({final.value})", False, value is not final.value
        held = self._variable(final.value)
        if held is None:
            return final.value, f"FINAL_VAR({final.value})", True, False
        return held, f"FINAL_VAR({final.value})", False, True

    def _observation(self, turn: _Turn | None = None, *, has_code: bool = False,
                     has_final: bool = False) -> Observation:
        turn = turn or _Turn()
        form = self._answer_form(turn.answer, unbound=turn.unbound, computed=turn.computed)
        outputs = [out.strip() for _, out in turn.outputs]
        seen_before = bool(outputs) and all(out in self.seen_outputs for out in outputs)
        self.seen_outputs.update(outputs)
        return Observation(question=self.question, iteration=self.iterations,
                           max_iterations=self.s.run.max_iterations, cells=tuple(turn.cells), has_code=has_code,
                           has_final=has_final, answer=turn.answer, answer_form=form, answer_source=turn.source,
                           built=self.built, preview=tuple(self.preview), extra={"seen_before": seen_before})

    def _answer_form(self, answer: str | None, *, unbound: bool = False, computed: bool = False) -> AnswerForm:
        """What ``answer`` is: none, a stand-in, empty, a name the run never bound, or an answer.
        ``computed``: a value a cell's FINAL call gave (a snake_case value is a value there, not a name)."""
        if answer is None:
            return AnswerForm.NONE
        if unbound or not computed and parsing.unbound_name(answer, set(self.assigned), self.used,
                                                            seen_outputs(self.sent_cells.values()) + "\n" + self.question):
            return AnswerForm.UNBOUND
        if is_placeholder(answer):
            return AnswerForm.PLACEHOLDER
        if not answer.strip():
            return AnswerForm.EMPTY
        return AnswerForm.VALUE

    def _render(self, obs: Observation, turn: _Turn, decision: Decision) -> tuple[str | None, str]:
        """The answer, when it is one and no rule refused it; else the next user message."""
        if obs.answer_form.is_answer and decision.refusal is None:
            return obs.answer, ""
        if obs.answer is not None:
            self._note(f"the answer {obs.answer.strip()[:60]!r} ({obs.answer_form.value}) was not taken")
        if not obs.has_code and not obs.has_final:
            return None, decision.ending or prompts.nudge_prompt()
        outputs, advice = list(turn.outputs), decision.advice
        refusal = decision.refusal
        if refusal is not None:
            last = self.last_cell
            if self.policy.rereads(refusal) and last is not None and last.error_name is None:
                outputs.append((last.code, last.output))
                advice.append(refusal.message)
            else:
                outputs.append((obs.answer_source, refusal.message))
        elif obs.answer is not None:   # refused, its rule ablated: the model still learns it was not taken
            outputs.append((obs.answer_source, prompts.not_taken(obs.answer_source)))
        return None, prompts.turn_prompt(outputs, advice, question=self.question, ending=decision.ending,
                                         turns_left=obs.turns_left)

    def _probe(self, code: str, output: str) -> tuple[tuple[str, ...], str | None, tuple[str, ...]]:
        """For a cell that found nothing, when the policy has a rule that shows why: the first lines
        ``grep`` returns for its pattern, that pattern, and the code's regular expressions that match
        none of those lines, all computed in the kernel (no pattern of the model runs on the host)."""
        if not self.policy.enabled("empty-result"):
            return (), None, ()
        pattern = hints.sample_pattern(code, output, None, self.question)
        if pattern is None:
            return (), None, ()
        probe = hints.probe_code(pattern, code, lines=SAMPLE_LINES, line_chars=SAMPLE_LINE_CHARS)
        ex = self._cell(probe, record=False)
        if ex.error_name is not None:
            return (), None, ()
        try:
            data = json.loads(ex.output.strip().splitlines()[-1])
            lines = [parsing.sanitize_for_terminal(str(x)) for x in data["lines"]][:SAMPLE_LINES]
            unmatched = [str(x) for x in data["unmatched"]]
        except (ValueError, KeyError, IndexError, TypeError):
            return (), None, ()
        lines = [line for line in lines if line.strip()]
        return tuple(lines), pattern, tuple(p for p in unmatched if p in hints.regex_literals(code))

    def _on_fire(self, firing: Firing, obs: Observation) -> None:
        self.trace.event("rule", iteration=obs.iteration, id=firing.rule, slot=firing.slot, message=firing.message,
                         text=f"rule {firing.rule}: {firing.message}")

    def _text_answer(self, text: str) -> str:
        """The answer of ``FINAL(text)`` written as text: the text, or, when it is only the name of a
        variable the code built (``FINAL(answer)`` after ``answer = "\n".join(pairs)``), its value."""
        name = parsing.names_a_variable(text, set(self.assigned), self.question)
        if name is None:
            return text
        value = self._variable(name, record=False)
        if value is None:
            return text
        self._note(f"FINAL({name}) names a variable the code built: its value is the answer")
        return value

    def _cell_answer(self, code: str, ex: Execution) -> str | None:
        """The answer a cell gave: its FINAL call's value, or, for a cell that is only ``FINAL(...)`` and
        failed because its argument is not Python, that argument's text (noted); None otherwise."""
        if ex.final is not None:
            return ex.final
        literal = parsing.literal_final_answer(code, ex.error_name, seen_outputs(self.sent_cells.values()))
        if literal is not None:
            self._note(f"FINAL(...) failed with {ex.error_name}: its argument is not Python, so its "
                       f"literal text is the answer: {literal[:200]}")
        return literal

    def _variable(self, name: str, *, record: bool = True) -> str | None:
        """The value of the REPL variable ``name`` as the answer (``FINAL_VAR``); None when it does not exist."""
        return self._cell(f"FINAL_VAR({name!r})", record=record).final

    def _last_chance(self, *, budget: str | None = None) -> str | None:
        """One more request at the iteration limit (or when the same code keeps coming), when the
        policy's ``iteration-limit`` rule holds; the answer never keeps fences or a FINAL( wrapper, and
        is None when it is no answer (a stand-in, empty, a name never bound).  The request is a new,
        short conversation: the question and the run's last short outputs (a small model stuck in a
        long conversation keeps resending its code, or answers from its own guesses).  ``budget``: the
        budget reached, when that is why (the policy's ``budget-limit`` rule)."""
        obs = self._observation()
        if budget is not None:
            obs.extra["budget"] = budget
        if not self.policy.decide(obs, stage="limit").firings:
            return None
        messages: list[Message] = [
            {"role": "system", "content": prompts.final_request_system()},
            {"role": "user", "content": prompts.final_request_prompt(self.question,
                                                                     last_outputs(self.sent_cells.values()),
                                                                     list(reversed(self.assigned)))},
        ]
        reply = self._ask(messages)
        return self._taken(*self._last_reply_answer(reply))

    def _taken(self, answer: str | None, unbound: bool = False, computed: bool = False) -> str | None:
        """``answer`` when it is one; None (noted) when it is a stand-in, empty or a name never bound."""
        form = self._answer_form(answer, unbound=unbound, computed=computed)
        if answer is not None and not form.is_answer:
            self._note(f"the last answer {answer.strip()[:60]!r} is no answer ({form.value}): the run ends without one")
            return None
        return answer

    def _last_reply_answer(self, reply: str) -> tuple[str | None, bool, bool]:
        """The answer of the last-chance reply, whether it names a value the REPL does not have, and
        whether it is a value the kernel holds."""
        final = parsing.find_final(reply)
        if final is not None and final.kind == "answer":
            text = parsing.clean_answer(final.value)
            value = self._text_answer(text)
            return value, False, value is not text
        if final is not None:
            held = self._variable(final.value)
            return (held, False, True) if held is not None else (final.value, True, False)
        finishing = [code for code in parsing.find_code_blocks(reply) if "FINAL" in code]
        if finishing:  # the model answered with a FINAL call in code: run that one cell
            code = finishing[-1]
            given = self._cell_answer(code, self._cell(code))
            if given is not None:
                return given, False, True
        blocks = parsing.find_code_blocks(reply)
        prose = reply
        for code in blocks:
            prose = prose.replace(code, "")
        if blocks and not parsing.clean_answer(prose):
            self._note("the last reply was code, not an answer: the run ends without one")
            return None, False, False
        text = parsing.clean_answer(reply)
        if text != reply.strip():
            self._note("the last reply had no usable FINAL: its text, without code fences or FINAL(, is the answer")
        return text, False, False
