"""The Recursive Language Model loop.

The root model sees metadata about the context, never the context itself.  Each turn it
replies with code (run in the session's kernel) and/or a final answer; the output of the
code, truncated, goes back to it.  Code may call sub-models through the bridge.  The run
ends with FINAL(...) / FINAL_VAR(name) (as text or called in code) or at the iteration
limit, where the model is asked once for its best answer.

Rules for a reply (see README "How replies are read"):
* code blocks (```repl / ```python) run first, in order; if a cell calls FINAL(...), the
  run ends after that cell and later blocks are not run;
* then a FINAL(...) / FINAL_VAR(name) in the text (outside code) ends the run;
* a reply with neither gets a nudge.

Recovery from small models' mistakes (each recorded in the trace as a ``note``):
* a cell that is only ``FINAL(...)`` and fails because its argument is not Python (or is a
  formula over undefined names, ``FINAL(0 <= x < 256)``) answers with the literal text;
* a block whose code (whitespace normalised) is the cell that ran last is not run again: its
  known output is reused, and the model is told what to change; a block that repeats older
  code runs, and if it prints the same output again the model is told the same way;
* ``FINAL(name)`` in text, where ``name`` is a variable the run's code assigned and not a word
  of the question, answers with that variable's value (``FINAL(answer)`` after
  ``answer = "\n".join(pairs)``);
* a block that copies an output of the run (its first line is an output's first line, and it is not
  Python) is not run, and the conversation keeps a short stand-in instead of the copy;
* a new cell that fails in a way small models do not fix alone (``re.search(...).group`` without a
  match, a missing import) or finds nothing (``0 pairs``) is told what to change; one that found
  nothing is shown the first lines its ``grep`` returns and which of its regular expressions match
  none of them;
* the turn after a cell, and the notice for a repeated one, name the variable it built
  (``FINAL_VAR(answer)``), and the first turn names the regular expression that takes the number
  after a word of the question where the preview writes one (``User: 56678``);
* an answer that copies the instructions' stand-in (``your answer``), or, the first time, only
  repeats a code name the question gives, is not taken (rlm/core/answers.py);
* at the iteration limit the answer never keeps code fences or a ``FINAL(`` wrapper.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm.config import Settings
from rlm.core import hints, parsing, prompts
from rlm.core.answers import AnswerCheck, KnownCell, Refusal, copies_final, echoes_output, last_outputs, seen_outputs
from rlm.core.context import ContextSource, inline_text
from rlm.core.result import RunResult
from rlm.core.subcalls import ChildRunner, SubCallHandler
from rlm.core.trace import TraceWriter
from rlm.llm.base import Message, ModelClient, ReportingClient, Usage, report_waits
from rlm.sandbox import Execution, SandboxSession

Progress = Callable[[str, dict[str, Any]], None]
SessionFactory = Callable[[Path | None], SandboxSession]


def _describe_cell(ex: Execution) -> str:
    return ex.output or prompts.NO_OUTPUT


_WAIT_KINDS = ("model_wait", "model_retry")
REUSED_SHOWN_CHARS = 500  # a reused cell's output up to this length is shown again (errors, counts)
SAMPLE_LINES = 3  # lines of grep shown to a cell that found nothing
SAMPLE_LINE_CHARS = 200
STUCK_TURNS = 2  # repeats of a cell whose output is known before the model is asked for its answer


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
        self.echoed = False  # the last reply copied an output into a code block
        self.preview: list[str] = []  # the lines of the context's preview
        self.built: str | None = None  # the variable a cell that ran without error built its result in
        self.check = AnswerCheck(question, self._note)
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
            max_children=self.s.run.max_child_runs)

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
            self.session.set_handler(self.handler)
            answer, status = self._loop()
        except KeyboardInterrupt:
            status, error = "interrupted", "interrupted by the user"
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
                             duration_s=round(result.duration_s, 3), error=error)
            self.trace.close()
        self.o.progress("done", result.to_dict())
        return result

    def _result(self, answer: str | None, status: str, error: str | None) -> RunResult:
        usage: dict[str, Usage] = defaultdict(Usage)
        for source in (self.usage, self.handler.usage):
            for model, u in source.items():
                usage[model].add(u)
        return RunResult(answer=answer, status=status, iterations=self.iterations, sub_calls=self.handler.calls,
                         usage=dict(usage), duration_s=time.perf_counter() - self.started,
                         trace=str(self.trace_path), phases=dict(self.phases), error=error)

    # -- the loop ------------------------------------------------------------------------
    def _context_info(self) -> prompts.ContextInfo:
        ex = self._cell("_rlm_context_info()", record=False)
        raw = ex.meta.get("context_info")
        info: dict[str, Any] = raw if isinstance(raw, dict) else {}
        context_path = self.sess.context_path
        source = self.context.name if self.context else (Path(context_path).name if context_path else "none")
        return prompts.ContextInfo(kind=str(info.get("kind", "none")), total_chars=int(info.get("total_chars", 0)),
                                   n_documents=int(info.get("n_documents", 0)),
                                   preview=parsing.sanitize_for_terminal(str(info.get("preview", ""))),
                                   source=source)

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
                                  "n_documents": info.n_documents, "source": info.source},
                         root_model=self.s.model.root_model, sub_model=self.s.model.effective_sub_model,
                         settings={"max_iterations": self.s.run.max_iterations,
                                   "max_output_chars": self.s.run.max_output_chars,
                                   "enable_sub_calls": self.s.run.enable_sub_calls,
                                   "max_sub_calls": self.s.run.max_sub_calls})
        messages = [{"role": "system", "content": prompts.system_prompt(info, self.o.budgets())},
                    {"role": "user", "content": prompts.first_user_prompt(
                        self.question, sub_calls=self.s.run.enable_sub_calls, preview=info.preview)}]
        for iteration in range(1, self.s.run.max_iterations + 1):
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
                return answer, "ok" if answer is not None else "stuck"
        return self._last_chance(), "max_iterations"

    def _handle_reply(self, reply: str, prompt: str = "") -> tuple[str | None, str]:
        """Run the reply's code, then look for its answer; return (answer, feedback for the model).
        ``prompt``: the message the reply answers (a FINAL in a copy of its text is no answer)."""
        blocks = parsing.find_code_blocks(reply)
        final = parsing.find_final(reply)
        if final is not None and copies_final(reply, final, prompt):
            self._note(f"the reply's {final.kind} FINAL is in text copied from rlm's message: not an answer")
            final = None
        outputs: list[tuple[str, str]] = []
        repeats: list[str] = []
        fixes: list[str] = []
        reused = 0
        failed = False   # a block of this reply raised an error
        reread = False   # the last output is shown again, with why the answer read from it was not taken
        self.echoed = False
        for n, code in enumerate(blocks, start=1):
            if echoes_output(code, self.sent_cells.values()):
                self._note(f"block {n} copies an output of the run, it is not code: not run")
                repeats.append(hints.echo_notice(n, len(blocks)))
                self.echoed = True
                reused += 1
                continue
            normalized = parsing.normalize_code(code)
            known = self.last_cell if self.last_cell is not None and self.last_cell.code == normalized else None
            if known is not None:  # the kernel is in the state this cell left: its output is known
                self._note(f"block {n} is the same as the cell of turn {known.iteration}: not run again, "
                           "its output reused")
                # a long output is not shown again: it is in the conversation already (on a CPU
                # model, re-reading 2,500 characters costs about 30 s per turn)
                outputs.append((code, known.output if len(known.output) <= REUSED_SHOWN_CHARS
                                else hints.reused_output(known.iteration)))
                repeats.append(self._repeat_notice(n, len(blocks), known, reused=True))
                reused += 1
                continue
            ex = self._cell(code)
            names = parsing.assigned_names(code)
            for name in names:
                self.assigned.pop(name, None)
                self.assigned[name] = None
            built = parsing.result_name(code, _describe_cell(ex)) if ex.error_name is None else None
            if built is not None:
                self.built = built
            answer = self._cell_answer(code, ex)
            if answer is not None:
                refusal = self.check.refusal(answer, self.built)
                if refusal is None:
                    return answer, ""
                reread = self._refused(refusal, code, outputs, fixes) or reread
                continue
            failed = failed or ex.error_name is not None
            output, _ = self._shown(ex)
            if ex.context_restored:
                note = prompts.context_restored_note()
                output = f"{output}\n{note}"
                self.trace.event("note", iteration=self.iterations, text=note)
            earlier = self.sent_cells.get(normalized)
            cell = KnownCell(normalized, self.iterations, output, ex.error_name, ex.timed_out, built)
            self.last_cell = self.sent_cells[normalized] = cell
            outputs.append((code, output))
            hint = None
            if earlier is None:
                pattern = hints.sample_pattern(code, output, ex.error_name, self.question)
                samples = self._sample_lines(pattern) if pattern is not None else []
                hint = hints.cell_hint(code, output, ex.error_name, samples, self.question, sampled=pattern,
                                       preview=self.preview)
            if hint is not None:
                self._note(f"block {n}: {hint}")
                fixes.append(hint)
            if earlier is not None and earlier.output.strip() == output.strip():
                self._note(f"block {n} is the same as the cell of turn {earlier.iteration} and printed the same")
                repeats.append(self._repeat_notice(n, len(blocks), earlier, reused=False))
        # stuck: only code whose output is known, and no FINAL or a FINAL_VAR (which ends the run if it resolves)
        self.stuck_turns = (self.stuck_turns + 1 if blocks and reused == len(blocks)
                            and (final is None or final.kind != "answer") else 0)
        if final is not None and final.kind == "answer":
            answer = self._text_answer(final.value)
            refusal = self.check.refusal(answer, self.built)
            if refusal is None:
                return answer, ""
            reread = self._refused(refusal, f"FINAL({final.value})", outputs, fixes) or reread
        elif final is not None:
            value = self._variable(final.value)
            refusal = None if value is None else self.check.refusal(value, self.built)
            if value is None:
                outputs.append((f"FINAL_VAR({final.value!r})", prompts.final_var_missing(final.value)))
            elif refusal is None:
                return value, ""
            else:
                reread = self._refused(refusal, f"FINAL_VAR({final.value})", outputs, fixes) or reread
        if not blocks and final is None:
            self.trace.event("note", iteration=self.iterations, text="reply had neither code nor FINAL: nudged")
            return None, prompts.nudge_prompt()
        repeated = not reread and bool(outputs) and all(out.strip() in self.seen_outputs for _, out in outputs)
        self.seen_outputs.update(out.strip() for _, out in outputs)
        return None, prompts.iteration_prompt(outputs, self.iterations, self.s.run.max_iterations,
                                              question=self.question, repeated=repeated, repeats=repeats,
                                              hints=fixes, variable=self.built, failed=failed)

    def _refused(self, refusal: Refusal, code: str, outputs: list[tuple[str, str]], fixes: list[str]) -> bool:
        """Tell the model why the answer of ``code`` was not taken: as that block's output, or, for
        an answer that misread the last output, after that output shown again (then True)."""
        last = self.last_cell
        if refusal.reread and last is not None and last.error_name is None:
            outputs.append((last.code, last.output))
            fixes.append(refusal.text)
            return True
        outputs.append((code, refusal.text))
        return False

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

    def _sample_lines(self, pattern: str) -> list[str]:
        """The first lines ``grep(pattern)`` returns in the kernel (cut to ``SAMPLE_LINE_CHARS``), to show
        a cell that found nothing how the lines are written; empty when the pattern fails there."""
        code = (f"print('\\n'.join(str(line)[:{SAMPLE_LINE_CHARS}].replace('\\n', ' ') "
                f"for line in grep({pattern!r})[:{SAMPLE_LINES}]))")
        ex = self._cell(code, record=False)
        if ex.error_name is not None:
            return []
        return [line for line in parsing.sanitize_for_terminal(ex.output).splitlines() if line.strip()]

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

    def _repeat_notice(self, block: int, n_blocks: int, known: KnownCell, *, reused: bool) -> str:
        instruction = hints.repeat_instruction(error_name=known.error_name, output=known.output,
                                               timed_out=known.timed_out, code=known.code,
                                               question=self.question, built=known.built)
        return hints.repeat_notice(block, n_blocks, known.iteration, reused=reused, instruction=instruction)

    def _last_chance(self) -> str | None:
        """One more request at the iteration limit (or when the same code keeps coming); the answer
        never keeps fences or a FINAL( wrapper.  The request is a new, short conversation: the
        question and the run's last short outputs (a small model stuck in a long conversation
        keeps resending its code, or answers from its own guesses, even with the answer shown)."""
        messages: list[Message] = [
            {"role": "system", "content": prompts.final_request_system()},
            {"role": "user", "content": prompts.final_request_prompt(self.question,
                                                                     last_outputs(self.sent_cells.values()),
                                                                     list(reversed(self.assigned)))},
        ]
        reply = self._ask(messages)
        final = parsing.find_final(reply)
        if final is not None and final.kind == "answer":
            answer = self._text_answer(parsing.clean_answer(final.value))
            return None if self.check.placeholder(answer) else answer or None
        if final is not None:
            value = self._variable(final.value)
            if value is not None:
                return value
            if final.value in self.assigned:   # a name of the run's code that holds nothing, not an answer
                self._note(f"FINAL_VAR({final.value}) names a variable the code never set: the run ends without "
                           "an answer")
                return None
        finishing = [code for code in parsing.find_code_blocks(reply) if "FINAL" in code]
        if finishing:  # the model answered with a FINAL call in code: run that one cell
            code = finishing[-1]
            given = self._cell_answer(code, self._cell(code))
            if given is not None:
                return None if self.check.placeholder(given) else given
        blocks = parsing.find_code_blocks(reply)
        prose = reply
        for code in blocks:
            prose = prose.replace(code, "")
        if blocks and not parsing.clean_answer(prose):
            self._note("the last reply was code, not an answer: the run ends without one")
            return None
        text = parsing.clean_answer(reply)
        if self.check.placeholder(text):
            return None
        if text != reply.strip():
            self._note("the last reply had no usable FINAL: its text, without code fences or FINAL(, is the answer")
        return text or None
