"""No prompt text the loop sends under its default policy knows a benchmark: none shares a run of four
words with the string literals of any module of rlm/bench (generators' templates and vocabulary, the
public readers' questions), nor names a multi-word or proper-noun item of their vocabularies."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm.core import prompts
from rlm.core.policy import AnswerForm, CellObservation, Observation, make_policy

REPO = Path(__file__).resolve().parents[2]
BENCH = sorted((REPO / "rlm" / "bench").glob("*.py"))
PROMPT_SOURCES = [REPO / "rlm" / "core" / "prompts.py", REPO / "rlm" / "core" / "policy" / "general.py"]
N = 4
_WORD = re.compile(r"[a-z0-9]+")


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def literals(path: Path) -> Iterator[str]:
    """Every string literal of ``path`` (f-strings' literal parts included), docstrings left out."""
    tree = ast.parse(path.read_text())
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.value


def vocabulary(path: Path) -> Iterator[str]:
    """The strings of ``path``'s tuple, list and set literals (word lists, names, topics, labels)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            for elt in node.elts:
                if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                    yield elt.value


def grams(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i:i + N]) for i in range(len(words) - N + 1)}


def bench_grams() -> dict[tuple[str, ...], str]:
    out: dict[tuple[str, ...], str] = {}
    for path in BENCH:
        for text in literals(path):
            for gram in grams(text):
                out.setdefault(gram, f"{path.name}: {text[:80]!r}")
    return out


def distinctive_vocabulary() -> set[str]:
    """Items of the benchmarks' word lists that name something (two words or more, or a capitalised
    word): `Amara Osei`, `the Orion project`; single common words (`river`, `question`) are English."""
    items = set()
    for path in BENCH:
        for item in vocabulary(path):
            words = item.split()
            if len(words) >= 2 and all(w.isalpha() for w in words) or (len(words) == 1 and item[:1].isupper()
                                                                       and item[1:].islower() and len(item) > 3):
                items.add(item.lower())
    return items


def prompt_texts() -> Iterator[tuple[str, str]]:
    """Every text the default policy's loop sends, rendered, and every literal they are made of."""
    for kind, docs in (("str", 1), ("list", 40), ("dict", 1)):
        info = prompts.ContextInfo(kind, 1_000_000, docs, "", "context.txt")
        for subs in (True, False):
            for depth in (0, 1):
                budgets = prompts.Budgets(20, 10_000, subs, 100, 100_000, 2, depth)
                yield "system prompt", prompts.system_prompt(info, budgets)
    question = "Q?"
    policy = make_policy("general")
    yield "first message", prompts.first_user_prompt(question)
    yield "first message with sub-calls", prompts.first_user_prompt(question, sub_calls=True)
    cells = (CellObservation(1, "x", "Traceback", error_name="ValueError"),
             CellObservation(2, "y", "7", repeat_of=1, reused=True), CellObservation(3, "z", "8", timed_out=True,
                                                                                  error_name="Timeout"))
    for form in AnswerForm:
        obs = Observation(question, 19, 20, cells=cells, has_code=True, has_final=True, answer="a",
                          answer_form=form, answer_source="FINAL(a)")
        decision = policy.decide(obs)
        yield f"turn ({form.value})", prompts.turn_prompt([("x", "out")], decision.advice, question=question,
                                                          ending=decision.ending)
        for firing in decision.firings:
            yield f"rule {firing.rule}", firing.message
    yield "no code", policy.decide(Observation(question, 2, 20)).ending or ""
    yield "nudge", prompts.nudge_prompt()
    yield "last request", prompts.final_request_system() + "\n" + prompts.final_request_prompt(question, ["out"], ["v"])
    yield "restored", prompts.context_restored_note()
    for path in PROMPT_SOURCES:
        for text in literals(path):
            yield path.name, text


def shared(texts: list[tuple[str, str]], known: dict[tuple[str, ...], str]) -> list[str]:
    return sorted({f"{where}: {' '.join(g)!r} also in {known[g]}" for where, text in texts for g in grams(text)
                   if g in known})


def test_the_check_reads_the_benchmarks_and_the_prompts():
    known = bench_grams()
    assert len(BENCH) >= 5 and len(known) > 200
    assert ("what", "is", "the", "special") in known                     # a template of the generators
    texts = list(prompt_texts())
    assert any("## Examples" in text for _w, text in texts) and len(texts) > 50


def test_no_prompt_text_shares_four_words_with_a_benchmark():
    assert shared(list(prompt_texts()), bench_grams()) == []


def test_no_prompt_text_names_a_benchmark_s_vocabulary():
    items = distinctive_vocabulary()
    assert "amara osei" in items and "the orion project" in items
    found = sorted({f"{where}: {item!r}" for where, text in prompt_texts() for item in items
                    if re.search(rf"(?<!\w){re.escape(item)}(?!\w)", text.lower())})
    assert found == []


@pytest.mark.parametrize("text", ["What is the special magic number for the harbor crane?",
                                  "Notes by Amara Osei about the quarterly audit",
                                  "List every pair of customers who asked for both a refund and a discount."])
def test_the_check_finds_a_benchmark_s_words(text):
    """Not vacuous: a text copied from the generators is found."""
    hits = shared([("planted", text)], bench_grams())
    items = [i for i in distinctive_vocabulary() if i in text.lower()]
    assert hits or items
