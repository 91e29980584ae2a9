"""What a run knows of the cells that ran, and what an answer is.

A stand-in (``your answer``, ``answer``, ``None``) is never an answer (``is_placeholder``).  The
opt-in ``legacy`` policy also refuses, once, an answer that only repeats a code name the question
gives (``repeats_question_name``) or is only a number where the question asks for a list
(``count_for_list``): both read the question's words, so they are not in the ``general`` policy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

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


# stand-ins for an answer (a small model copies one from instructions, or prints an unset value)
_PLACEHOLDERS = frozenset({"your answer", "the answer", "your final answer", "final answer", "answer here",
                           "your answer here", "the answer itself", "variable_name", "...", "<answer>",
                           "answer", "none", "null", "undefined", "the answer here"})


def is_placeholder(text: str) -> bool:
    """``text`` is a stand-in for an answer (``your answer``, ``answer``, ``None``, ``...``), not an answer."""
    bare = text.strip().strip("`'\"").strip().lower()
    return bare in _PLACEHOLDERS or bare.rstrip(".") in _PLACEHOLDERS


# a code name: a dotted path, snake_case, camelCase, or a word with digits (``rotate_token``,
# ``computeCache``, ``LEDGER_RATE_1``, ``render/batch_9.py``), not a plain word such as a label
_CODE_NAME = re.compile(r"[A-Za-z_][\w./-]*")
_CHOICE = re.compile(r"(?<!\w)(?:or|one of|either)(?!\w)", flags=re.IGNORECASE)


def repeats_question_name(answer: str, question: str) -> bool:
    """``answer`` is only a code name the question itself gives (asked which function calls
    ``rotate_token()``, a small model answers ``rotate_token``), for a question that offers no
    choice (``... one of: a, b``, ``a or b``): it does not answer what the question asks."""
    bare = answer.strip(" \t\n`'\".")
    bare = bare[:-2] if bare.endswith("()") else bare
    if _CHOICE.search(question) or not _CODE_NAME.fullmatch(bare):
        return False
    if not any(c.isdigit() or c in "_./" for c in bare) and not re.search(r"[a-z][A-Z]", bare):
        return False   # a plain word (a label, "yes") may well be the answer the question names
    return re.search(rf"(?<![\w./]){re.escape(bare)}(?![\w/]|\.\w)", question) is not None


_LIST_ASKED = re.compile(r"(?<!\w)(?:list (?:every|all|each)|one \w+ per line)(?!\w)", flags=re.IGNORECASE)
_COUNT = re.compile(r"\d{1,3}(?:,\d{3})*|\d+")


def count_for_list(answer: str, question: str) -> bool:
    """``answer`` is only a number where ``question`` asks for a list (``List every pair ...``, ``one
    id per line``): a small model answers how many items it found instead of the items."""
    return _COUNT.fullmatch(answer.strip(" \t\n`'\".")) is not None and _LIST_ASKED.search(question) is not None


def copies_final(reply: str, final: parsing.Final, prompt: str) -> bool:
    """``final`` (found in ``reply``) is in a line the reply copied from ``prompt``, the message it
    answers (a small model echoes the turn's instructions, ``... when the answer is a list ...,
    FINAL_VAR(answer). If it does not, ...``): that is no answer.  A line that is only the FINAL
    the prompt suggests is one."""
    call = f"FINAL_VAR({final.value})" if final.kind == "var" else f"FINAL({final.value})"
    for line in reply.splitlines():
        text = line.strip()
        if call in text and len(text) > len(call) + 10 and text in prompt:
            return True
    return False


ECHO_MIN_CHARS = 12  # a shorter first line ("0", "[]") is no sign that a block copies an output


def echoes_output(code: str, cells: Iterable[KnownCell]) -> bool:
    """``code`` is a copy of an output of ``cells`` (small models echo the last user turn in a code
    block, and, once they have, keep doing it): it is not Python, and its first line is in an
    output, a whole line or the part of one the model copied (``grep('a') 1 lines`` from a line
    that begins ``grep('a b') matched no line; ...``)."""
    first = _first_line(code)
    if len(first) < ECHO_MIN_CHARS or parsing.is_python(code):
        return False
    return any(first in cell.output for cell in cells)


def _first_line(text: str) -> str:
    """The first line of ``text`` that is not blank, stripped ("" when there is none)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
