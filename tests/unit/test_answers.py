"""Whether an answer is taken: the rules that judge a reply's answer, and an echoed output."""

from __future__ import annotations

import pytest

from rlm.core.answers import KnownCell, count_for_list, echoes_output, is_placeholder, repeats_question_name


@pytest.mark.parametrize("answer, question, repeats", [
    ("rotate_token", "Which function calls rotate_token()?", True),
    ("`rotate_token()`.", "Which function calls rotate_token()?", True),
    ("flushRecord", "In which file is flushRecord defined?", True),
    ("storage/token_3.py", "What is EVENT_COUNT_3, defined in storage/token_3.py?", True),
    ("flush_report", "Which function calls rotate_token()?", False),        # another name
    ("token_3", "What is EVENT_COUNT_3, defined in storage/token_3.py?", False),  # part of a path
    ("praise", "Which label is labelled 'praise' most?", False),           # a plain word may be the answer
    ("parse_v2", "Is the parser parse_v1 or parse_v2?", False),            # the question offers a choice
    ("7025", "What is the value of 7025?", False),
])
def test_an_answer_that_only_repeats_a_code_name_of_the_question_is_recognised(answer, question, repeats):
    assert repeats_question_name(answer, question) is repeats


@pytest.mark.parametrize("answer, question, counted", [
    ("91", "List every pair of user ids such that both have a record labelled 'low'.", True),
    ("`1,204`.", "List all customers who asked for a refund.", True),
    ("12", "Which ids match? Give one id per line.", True),
    ("(1, 2)\n(1, 3)", "List every pair of user ids ...", False),      # the list itself
    ("91", "How many pairs of user ids are there?", False),             # a count is asked
    ("4821", "List the vault code.", False),                              # not a list of items
])
def test_a_number_where_the_question_asks_for_a_list_is_recognised(answer, question, counted):
    assert count_for_list(answer, question) is counted


@pytest.mark.parametrize("text, placeholder", [
    ("your answer", True), ("Your answer.", True), ("`the answer`", True), ("...", True), ("variable_name", True),
    ("42", False), ("answer", True), ("None", True), ("", False), ("the answer is 42", False), ("Nonesuch", False),
])
def test_a_stand_in_for_an_answer_is_told_from_an_answer(text, placeholder):
    assert is_placeholder(text) is placeholder


def test_an_echo_is_a_copied_output_line_that_is_not_python():
    cells = [KnownCell("find()", 1, "grep('topic sports') matched no line; each word alone: grep('topic') 462 lines",
                       None, False, None)]
    assert echoes_output("grep('topic') 462 lines\n0 pairs", cells)
    assert not echoes_output("print('hello there, world')", cells)   # Python runs
    assert not echoes_output("0 pairs", cells)                          # too short to tell
