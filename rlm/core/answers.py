"""What a run knows of the cells that ran, and whether a reply's answer is taken.

An answer is not taken when it copies the instructions' stand-in for one (``FINAL(your
answer)``), and, the first time, when it only repeats a code name the question gives (asked
which function calls ``rotate_token()``, a small model answers ``rotate_token``), is only a
number where the question asks for a list (``FINAL(91)`` for "List every pair ...") or is
empty: the model is told why, and the turn goes on.  At the iteration limit only the first rule holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from rlm.core import parsing, prompts

LAST_OUTPUT_SHOWN_CHARS = 1_000  # an output up to this length goes with the last-chance request
LAST_CHANCE_OUTPUTS = 3  # the last outputs of the run (short ones) the last-chance request shows


@dataclass(frozen=True)
class KnownCell:
    """A cell that ran: what the model was shown, to answer an identical block without running it."""

    code: str            # normalised (parsing.normalize_code)
    iteration: int
    output: str          # as shown to the model (sanitised, truncated, with notes)
    error_name: str | None
    timed_out: bool
    built: str | None   # the variable it built its result in (parsing.result_name)


def last_outputs(cells: Iterable[KnownCell]) -> list[str]:
    """The last distinct short outputs of ``cells`` (at most ``LAST_CHANCE_OUTPUTS``), oldest first."""
    shown: list[str] = []
    for cell in reversed(sorted(cells, key=lambda c: c.iteration)):
        text = cell.output.strip()
        if text and text != prompts.NO_OUTPUT and len(text) <= LAST_OUTPUT_SHOWN_CHARS and text not in shown:
            shown.append(text)
        if len(shown) == LAST_CHANCE_OUTPUTS:
            break
    return shown[::-1]


def seen_outputs(cells: Iterable[KnownCell]) -> str:
    """Every output of ``cells``, as the model was shown them."""
    return "\n".join(cell.output for cell in cells)


class Refusal(NamedTuple):
    """An answer not taken: what the model is told, and whether to show it the last output again
    (the evidence it misread) with that."""

    text: str
    reread: bool = False


class AnswerCheck:
    """Judges the answers of one run's replies; each refusal is told to ``note`` (the trace)."""

    def __init__(self, question: str, note: Callable[[str], None]) -> None:
        self.question = question
        self.note = note
        self.refused: set[str] = set()  # answers that only repeated a name of the question (asked once)
        self.counted = False  # a count was refused where the question asks for a list (once a run)
        self.emptied = False  # an empty answer was refused (once a run)

    def refusal(self, answer: str, variable: str | None = None) -> Refusal | None:
        """Why a turn's ``answer`` is not taken, for the model; None: it is taken.  ``variable``:
        the variable the run's code last built its result in."""
        if self.placeholder(answer):
            return Refusal(prompts.placeholder_answer(answer))
        bare = answer.strip()
        if not bare and not self.emptied:
            self.emptied = True
            self.note("the answer is empty: asked once more")
            return Refusal(prompts.empty_answer())
        if not self.counted and parsing.count_for_list(answer, self.question):
            self.counted = True
            self.note(f"the answer {bare[:20]!r} is a number where the question asks for a list: asked once more")
            return Refusal(prompts.count_for_list_answer(answer, variable))
        if bare not in self.refused and parsing.repeats_question_name(answer, self.question):
            self.refused.add(bare)
            self.note(f"the answer {bare[:60]!r} is only a name the question gives: asked once more")
            return Refusal(prompts.question_name_answer(answer), reread=True)
        return None

    def placeholder(self, answer: str) -> bool:
        """``answer`` is a stand-in the instructions use (``your answer``): noted, and not taken."""
        if not parsing.is_placeholder(answer):
            return False
        self.note(f"the answer {answer.strip()[:40]!r} copies the instructions' stand-in for an answer: not taken")
        return True
