"""Scoring an answer against a known one.

Every scorer returns a float in [0, 1]:

* ``exact``    1 when the normalised answer equals the normalised expected text.
* ``contains`` 1 when the normalised expected text occurs in the normalised answer
               (on word boundaries, so "12" is not found in "512").
* ``numeric``  the first number in the answer against the expected number: 1 when equal,
               else ``0.75 ** |difference|`` for integers (OOLONG's partial credit), 0 for
               non-integers that differ; 0 when the answer holds no number.
* ``f1``       F1 between two sets (OOLONG-Pairs); ``f1_pairs`` first reads the pairs
               out of the answer text with :func:`parse_pairs`.
* ``qa_f1``    the standard SQuAD / HotpotQA token F1 (:func:`qa_f1`), the best over the gold
               answers; its exact match (:func:`qa_em`) is reported beside it.  Both use the
               SQuAD normalisation (:func:`squad_normalize`), not the one below.  A yes/no
               answer scores F1 0 unless it equals the gold one (HotpotQA's official rule).

Normalisation: lower case, ``FINAL(...)`` wrapper and surrounding quotes removed,
punctuation other than ``. - _ / :`` inside words turned into spaces, whitespace collapsed.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

SCORERS = ("exact", "contains", "numeric", "f1_pairs", "qa_f1")

_FINAL_WRAP = re.compile(r"^\s*FINAL(?:_VAR)?\s*\((.*)\)\s*$", re.DOTALL)
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])")
_PAIR_PAREN = re.compile(r"[(\[{]\s*['\"]?([A-Za-z]*\d+)['\"]?\s*[,;&/\s-]\s*['\"]?([A-Za-z]*\d+)['\"]?\s*[)\]}]")
_PAIR_LOOSE = re.compile(r"\b([A-Za-z]*\d+)\s*(?:,|&|-|/|\band\b|\bwith\b|<->|–)\s*([A-Za-z]*\d+)\b")


def normalize(text: Any) -> str:
    """Lower case, unwrap FINAL(...) and quotes, drop most punctuation, collapse spaces."""
    if text is None:
        return ""
    s = unicodedata.normalize("NFKC", str(text)).strip()
    m = _FINAL_WRAP.match(s)
    if m:
        s = m.group(1).strip()
    s = s.strip("\"'`*").lower()
    s = re.sub(r"[^\w.\-/:]+", " ", s)          # keep . - / : (dates, paths, decimals)
    s = re.sub(r"(?<!\w)[.\-/:]+|[.\-/:]+(?!\w)", " ", s)  # but not at word edges
    return " ".join(s.split())


def exact(answer: Any, expected: Any) -> float:
    return 1.0 if normalize(answer) == normalize(expected) and normalize(expected) != "" else 0.0


def contains(answer: Any, expected: Any) -> float:
    want = normalize(expected)
    if not want:
        return 0.0
    return 1.0 if re.search(rf"(?<!\w){re.escape(want)}(?!\w)", normalize(answer)) else 0.0


def parse_number(text: Any) -> float | None:
    """The first number in ``text`` (thousands separators allowed), or None."""
    if text is None:
        return None
    s = str(text)
    m = _FINAL_WRAP.match(s.strip())
    if m:
        s = m.group(1)
    found = _NUMBER.search(s)
    if not found:
        return None
    return float(found.group(0).replace(",", ""))


def numeric(answer: Any, expected: Any, *, partial: bool = True) -> float:
    got, want = parse_number(answer), parse_number(expected)
    if got is None or want is None:
        return 0.0
    if math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9):
        return 1.0
    if partial and got.is_integer() and want.is_integer():
        return 0.75 ** abs(got - want)
    return 0.0


def f1(predicted: Iterable[Any], expected: Iterable[Any]) -> float:
    """F1 of two sets; both empty counts as a perfect match."""
    p, e = set(predicted), set(expected)
    if not p and not e:
        return 1.0
    hits = len(p & e)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(p), hits / len(e)
    return 2 * precision * recall / (precision + recall)


def _canon_id(token: str) -> str:
    """'U0412' and 'u412' and '412' name the same user: keep the digits without leading zeros."""
    digits = re.sub(r"\D", "", token)
    return str(int(digits)) if digits else token.lower()


def parse_pairs(text: Any) -> set[frozenset[str]]:
    """Unordered pairs of ids read from an answer: '(12, 40)', '[12,40]', '12-40', '12 and 40' ...

    Bracketed pairs are preferred; when there are none, loose 'a, b' pairs are read line by line.
    A pair of an id with itself is dropped.
    """
    if text is None:
        return set()
    if isinstance(text, (list, tuple, set)):
        items = [tuple(p) for p in text if isinstance(p, (list, tuple)) and len(p) == 2]
        return {frozenset((_canon_id(str(a)), _canon_id(str(b)))) for a, b in items if str(a) != str(b)}
    s = str(text)
    found = _PAIR_PAREN.findall(s)
    if not found:
        for line in s.splitlines():
            found.extend(_PAIR_LOOSE.findall(line))
    return {frozenset((_canon_id(a), _canon_id(b))) for a, b in found if _canon_id(a) != _canon_id(b)}


def f1_pairs(answer: Any, expected: Any) -> float:
    return f1(parse_pairs(answer), parse_pairs(expected))


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)


def squad_normalize(text: Any) -> str:
    """SQuAD's answer normalisation: lower case, punctuation removed, the articles a/an/the
    removed, whitespace collapsed (the official evaluation script's ``normalize_answer``)."""
    s = "" if text is None else str(text)
    m = _FINAL_WRAP.match(s.strip())
    if m:
        s = m.group(1)
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _golds(expected: Any) -> list[str]:
    return [str(e) for e in expected] if isinstance(expected, (list, tuple)) else [str(expected)]


def _token_f1(prediction: str, gold: str) -> float:
    pred, want = squad_normalize(prediction), squad_normalize(gold)
    if (pred in ("yes", "no", "noanswer") or want in ("yes", "no", "noanswer")) and pred != want:
        return 0.0
    p, g = pred.split(), want.split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def qa_em(answer: Any, expected: Any) -> float:
    """1 when the normalised answer equals any normalised gold answer."""
    got = squad_normalize(answer)
    return 1.0 if any(got == squad_normalize(g) for g in _golds(expected)) else 0.0


def qa_f1(answer: Any, expected: Any) -> float:
    """Token F1 between the normalised answer and the best gold answer."""
    return max(_token_f1("" if answer is None else str(answer), g) for g in _golds(expected))


_BY_NAME = {"exact": exact, "contains": contains, "numeric": numeric, "f1_pairs": f1_pairs, "qa_f1": qa_f1}


def score(kind: str, answer: Any, expected: Any) -> float:
    """Score with the scorer named ``kind`` (one of :data:`SCORERS`); no answer scores 0."""
    if answer is None:
        return 0.0
    try:
        fn = _BY_NAME[kind]
    except KeyError:
        raise ValueError(f"unknown scorer {kind!r}; known: {', '.join(SCORERS)}") from None
    return float(fn(answer, expected))


def metrics(kind: str, answer: Any, expected: Any) -> dict[str, float]:
    """``{"score": primary, "exact": 0 or 1}``: the primary score of ``kind`` and whether the
    answer is exactly right (SQuAD exact match for ``qa_f1``; full marks for the others)."""
    primary = score(kind, answer, expected)
    if kind == "qa_f1":
        exact_match = qa_em(answer, expected) if answer is not None else 0.0
    else:
        exact_match = 1.0 if primary >= 1.0 else 0.0
    return {"score": round(primary, 4), "exact": exact_match}
