"""What the loop saw in one turn, as typed data the rules read (no rule reads a reply or a cell itself)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class AnswerForm(str, Enum):
    """The shape of the answer a turn gave (``FINAL(...)``, ``FINAL_VAR(name)``, a cell's FINAL call)."""

    NONE = "none"                # the turn gave no answer
    VALUE = "value"              # an answer
    PLACEHOLDER = "placeholder"  # a stand-in: ``your answer``, ``answer``, ``None``, ``...``
    EMPTY = "empty"              # nothing, or only whitespace
    UNBOUND = "unbound"          # a variable name the run never bound (FINAL_VAR of a missing one, or
    #                              FINAL(name) of a name the code used and never assigned)

    @property
    def is_answer(self) -> bool:
        return self is AnswerForm.VALUE


@dataclass(frozen=True)
class CellObservation:
    """One code block of the turn, as the host saw it."""

    block: int                    # 1-based, in the reply
    code: str
    output: str                   # as shown to the model (sanitised, cut)
    error_name: str | None = None
    timed_out: bool = False
    empty: bool = False           # it printed nothing, or only an empty value (0, [], set(), '')
    repeat_of: int | None = None  # the turn whose cell had the same code (whitespace aside)
    reused: bool = False          # not run again: the kernel is in the state it left, its output is known
    same_output: bool = False     # ran again and printed what it printed then
    echoed: bool = False          # not code but a copy of an output of the run (not run)
    built: str | None = None      # the variable it built its result in, when its output names it
    samples: tuple[str, ...] = ()   # for an empty result: lines the kernel's grep returns for its pattern
    sampled: str | None = None      # the pattern those lines came from
    unmatched: tuple[str, ...] = ()  # the cell's regular expressions that match none of ``samples``
    #                                  (run in the sandbox: no model pattern runs on the host)

    @property
    def failed(self) -> bool:
        return self.error_name is not None or self.timed_out

    @property
    def first_run(self) -> bool:
        return self.repeat_of is None and not self.echoed


@dataclass(frozen=True)
class Observation:
    """One turn: the question, the turn's place in the run, its cells and its answer."""

    question: str
    iteration: int                 # 0: before the first reply (the first user message)
    max_iterations: int
    cells: tuple[CellObservation, ...] = ()
    has_code: bool = False
    has_final: bool = False        # the reply's text or a cell gave FINAL / FINAL_VAR
    answer: str | None = None
    answer_form: AnswerForm = AnswerForm.NONE
    answer_source: str = ""        # how the answer was written: FINAL(x), FINAL_VAR(x) or the cell
    built: str | None = None       # the variable the run's cells last built a result in
    preview: tuple[str, ...] = ()  # the lines of the context's preview
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def turns_left(self) -> int:
        return self.max_iterations - self.iteration

    @property
    def first_turn(self) -> bool:
        return self.iteration == 0

    @property
    def failed(self) -> tuple[CellObservation, ...]:
        """The cells that ran for the first time and failed."""
        return tuple(c for c in self.cells if c.failed and c.first_run)

    @property
    def repeated(self) -> tuple[CellObservation, ...]:
        """The cells that repeat earlier code (run again with the same output, or not run again)."""
        return tuple(c for c in self.cells if c.reused or c.same_output)
