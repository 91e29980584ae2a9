"""Scorers on hand-made cases."""

from __future__ import annotations

import pytest

from rlm.bench.scorers import contains, exact, f1, f1_pairs, normalize, numeric, parse_number, parse_pairs, score


@pytest.mark.parametrize("answer, expected, value", [
    ("Paris", "paris", 1.0),
    ("  'Paris.' ", "Paris", 1.0),
    ("FINAL(Paris)", "Paris", 1.0),
    ("**positive**", "positive", 1.0),
    ("Dana  Okafor", "dana okafor", 1.0),
    ("The answer is Paris", "Paris", 0.0),
    ("Pariss", "Paris", 0.0),
    ("", "Paris", 0.0),
    ("", "", 0.0),
    ("billing/ledger_3.py", "billing/ledger_3.py", 1.0),
])
def test_exact(answer, expected, value) -> None:
    assert exact(answer, expected) == value


@pytest.mark.parametrize("answer, expected, value", [
    ("The secret code is 4821937.", "4821937", 1.0),
    ("code: 14821937", "4821937", 0.0),            # word boundary: not a substring of a longer number
    ("It was led by Dana Okafor, since 2024", "dana okafor", 1.0),
    ("the passphrase is 'ember-glacier-42'", "ember-glacier-42", 1.0),
    ("ember-glacier-4", "ember-glacier-42", 0.0),
    ("Defined in billing/ledger_3.py.", "billing/ledger_3.py", 1.0),
    ("computeLedgerCache", "computeLedger", 0.0),
    ("compute_ledger_cache calls it", "compute_ledger", 0.0),
    ("No idea", "42", 0.0),
    ("anything", "", 0.0),
])
def test_contains(answer, expected, value) -> None:
    assert contains(answer, expected) == value


@pytest.mark.parametrize("text, number", [
    ("42", 42.0), ("There are 1,234 records", 1234.0), ("-3.5 degrees", -3.5), ("FINAL(17)", 17.0),
    ("no digits", None), ("user42 then 7", 7.0), ("v1.2.3", None), (None, None),
])
def test_parse_number(text, number) -> None:
    assert parse_number(text) == number


@pytest.mark.parametrize("answer, expected, value", [
    ("42", "42", 1.0),
    ("There are 42 such records.", "42", 1.0),
    ("1,000", "1000", 1.0),
    ("41", "42", 0.75),
    ("44", "42", 0.75 ** 2),
    ("2.5", "2.50", 1.0),
    ("2.4", "2.5", 0.0),
    ("none", "42", 0.0),
])
def test_numeric(answer, expected, value) -> None:
    assert numeric(answer, expected) == pytest.approx(value)
    assert numeric(answer, expected, partial=False) == (1.0 if value == 1.0 else 0.0)


def test_f1_sets() -> None:
    assert f1({1, 2, 3}, {1, 2, 3}) == 1.0
    assert f1(set(), set()) == 1.0
    assert f1({1}, set()) == 0.0
    assert f1({4}, {1, 2}) == 0.0
    assert f1({1, 2}, {1, 2, 3, 4}) == pytest.approx(2 * 1.0 * 0.5 / 1.5)   # p = 1, r = 0.5
    assert f1({1, 2, 5, 6}, {1, 2, 3, 4}) == pytest.approx(0.5)


def test_parse_pairs_forms() -> None:
    want = {frozenset(("12", "40")), frozenset(("7", "99"))}
    assert parse_pairs("(12, 40)\n(99, 7)") == want
    assert parse_pairs("[12,40], [7,99]") == want
    assert parse_pairs("pairs: (U0012, U0040) and (U99, U7)") == want
    assert parse_pairs("12 - 40\n7 and 99") == want
    assert parse_pairs([[12, 40], [7, 99]]) == want
    assert parse_pairs("(5, 5)") == set()
    assert parse_pairs("none") == set()


def test_f1_pairs_partial_credit() -> None:
    expected = [[1, 2], [1, 3], [2, 3], [3, 4]]
    assert f1_pairs("(1, 2), (2, 1), (1, 3), (2, 3), (3, 4)", expected) == 1.0   # order and repeats do not matter
    assert f1_pairs("(1, 2)\n(1, 3)", expected) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert f1_pairs("(1, 2), (8, 9)", expected) == pytest.approx(2 * 0.5 * 0.25 / 0.75)


def test_score_dispatch() -> None:
    assert score("contains", "code 77", "77") == 1.0
    assert score("numeric", None, "77") == 0.0
    with pytest.raises(ValueError, match="unknown scorer"):
        score("fuzzy", "a", "a")


def test_normalize() -> None:
    assert normalize('FINAL("Hello,   World!")') == "hello world"
    assert normalize(None) == ""
    assert normalize("3.14 and -x- end.") == "3.14 and x end"


# ---- SQuAD / HotpotQA scoring (hand-written strings)
@pytest.mark.parametrize("text, normal", [
    ("The Blue Whale!", "blue whale"),
    ("  an   apple, a pear; the plum. ", "apple pear plum"),
    ("FINAL(Theodore  Roosevelt)", "theodore roosevelt"),
    ("Anthem", "anthem"),                      # an article only as a whole word
    ("U.S.A.", "usa"),
])
def test_squad_normalisation(text, normal) -> None:
    from rlm.bench.scorers import squad_normalize

    assert squad_normalize(text) == normal


@pytest.mark.parametrize("answer, gold, f1_value, em_value", [
    ("the blue whale", "Blue whale", 1.0, 1.0),
    ("blue whale shark", "blue whale", 0.8, 0.0),          # p 2/3, r 1 -> 0.8
    ("a whale", ["the blue whale", "whale"], 1.0, 1.0),    # the best gold answer counts
    ("green turtle", "blue whale", 0.0, 0.0),
    ("yes", "no", 0.0, 0.0),
    ("yes, it is", "yes", 0.0, 0.0),                        # HotpotQA: yes/no must match exactly
    ("No.", "no", 1.0, 1.0),
    ("", "blue whale", 0.0, 0.0),
])
def test_qa_f1_and_exact_match(answer, gold, f1_value, em_value) -> None:
    from rlm.bench.scorers import metrics, qa_em, qa_f1

    assert qa_f1(answer, gold) == pytest.approx(f1_value)
    assert qa_em(answer, gold) == em_value
    assert metrics("qa_f1", answer, gold) == {"score": round(f1_value, 4), "exact": em_value}


def test_no_answer_scores_zero_on_both() -> None:
    from rlm.bench.scorers import metrics

    assert metrics("qa_f1", None, "whale") == {"score": 0.0, "exact": 0.0}
    assert metrics("numeric", "7", "8") == {"score": 0.75, "exact": 0.0}
    assert metrics("exact", "teal", "Teal") == {"score": 1.0, "exact": 1.0}
