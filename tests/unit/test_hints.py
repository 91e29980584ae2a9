"""The advice on a cell: what to change in one that failed, found nothing or repeats earlier code."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from rlm.core.hints import (
    cell_hint,
    csv_field,
    grep_patterns,
    number_regex,
    probe_code,
    regex_literals,
    repeat_instruction,
    repeat_notice,
    sample_pattern,
    search_word,
)
from rlm.core.parsing import binds_names


def test_repeat_instruction_is_concrete_for_each_kind_of_failure() -> None:

    missing_module = repeat_instruction(error_name="NameError", output="NameError: name 're' is not defined")
    assert "add `import re` as the first line" in missing_module
    missing_var = repeat_instruction(error_name="NameError", output="NameError: name 'hits' is not defined")
    assert "`hits` is not defined" in missing_var and "assign `hits`" in missing_var
    assert "not valid Python" in repeat_instruction(error_name="SyntaxError", output="SyntaxError: x")
    assert "KeyError" in repeat_instruction(error_name="KeyError", output="KeyError: 'a'")
    assert "slice" in repeat_instruction(error_name=None, output="", timed_out=True)
    ok = repeat_instruction(error_name=None, output="42")
    assert "FINAL(your answer)" in ok and "different code" in ok
    json_line = repeat_instruction(error_name="TypeError", output="TypeError: string indices must be integers")
    assert "a line is a str, not a dict" in json_line and "json.loads(line)" in json_line
    narrow = repeat_instruction(error_name=None, output="0 records", code='hits = grep(r"intent: request")',
                                question="How many records have the intent label 'request'?")
    assert 'grep(r"request")' in narrow


@pytest.mark.parametrize("question, code, word", [
    ("How many records have the intent label 'request'?", 'grep(r"intent: request")', "request"),
    ("How many records have the intent label 'request'?", 'grep(r"request")', "intent"),
    ("Which service restarted most often in March?", "", "restarted"),
    ("Which file defines the function?", 'grep("x")', None),
])
def test_search_word_is_a_word_of_the_question_not_yet_searched(question, code, word) -> None:

    assert search_word(question, code) == word


def test_repeat_notice_names_the_turn_and_the_block() -> None:

    notice = repeat_notice(1, 1, 2, reused=True, instruction="Add `import re` as the first line.")
    assert "turn 2" in notice and "not run again" in notice and "import re" in notice
    assert "Block 2 is the same" in repeat_notice(2, 3, 1, reused=False, instruction="x")


@pytest.mark.parametrize("code, output, error, expected", [
    ('n = len(grep(r"low"))', "0", None, 'print(grep(r"low")[:3])'),
    ("print(ids)", "set()", None, "print(context[:500])"),
    ("x = grep('say \"hi\"')", "[]", None, "print(grep(r'say \"hi\"')[:3])"),
    ('n = len(grep(r"low"))', "0 pairs, all in the variable answer", None, "found nothing"),
    ('n = len(grep(r"low"))', "10 pairs", None, None),
    ('n = len(grep(r"low"))', "0 pairs\n(1, 2)", None, None),
    ("m.group(1)", "AttributeError: 'NoneType' object has no attribute 'group'", "AttributeError", "`if m:`"),
    ("import x", "NameError: name 're' is not defined", "NameError", "import re"),
    ("hits", "NameError: name 'hits' is not defined", "NameError", None),   # the traceback says enough
    ("d['k']", "KeyError: 'k'", "KeyError", None),
])
def test_cell_hint_only_for_failures_small_models_do_not_fix_alone(code, output, error, expected) -> None:

    hint = cell_hint(code, output, error)
    assert (hint is None) if expected is None else (hint is not None and expected in hint)


def test_cell_hint_shows_the_lines_and_names_the_regex_that_misses_them() -> None:

    code = 'for line in grep(r"low"):\n    m = re.search(r"customer\\D*(\\d+)", line, re.IGNORECASE)\n    n = re.search(r"user", line)'
    lines = ["Date: Mar 24 || User: 93519 || Priority: low"]
    hint = cell_hint(code, "0 pairs", None, lines, unmatched=["customer\\D*(\\d+)"])
    assert hint is not None and "User: 93519" in hint
    assert "`customer\\D*(\\d+)` matches none of them" in hint and "`user`" not in hint
    assert "none of them" not in (cell_hint('grep(r"low")', "[]", None, ["low one"]) or "")
    # which regular expressions miss the lines is computed by the probe, in the kernel (here: a stand-in grep)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(probe_code("low", code), {"grep": lambda pattern: [line for line in lines if pattern in line]})  # noqa: S102
    assert json.loads(out.getvalue()) == {"lines": lines, "unmatched": ["customer\\D*(\\d+)"]}   # IGNORECASE: user fits


@pytest.mark.parametrize("line, expected", [
    ("Date: Mar 24, 2023 || User: 93519 || Intent: question", ("User: 93519", r"User\D*(\d+)")),
    ("[2023-06-27] user#53923 <question> text", ("user#53923", r"user\D*(\d+)")),
    ('{"date": "2023-01-02", "user_id": 51862}', ('user_id": 51862', r"user_id\D*(\d+)")),
    ("2023/01/07,51781,question,text", None),                           # no word of the question before it
    ("Records (labels: question). Each line is (date, user, intent, text).", None),  # a word, but no number
])
def test_number_regex_takes_the_number_a_word_of_the_question_names(line, expected) -> None:

    assert number_regex("List every pair of user ids such that both users have a record.", [line]) == expected


@pytest.mark.parametrize("lines, expected", [
    (["CSV: date,user_id,topic,text", "2023/01/07,51781,sports,a", "2023/01/08,51782,travel,b"],
     ("date,user_id,topic,text", 1, "user_id")),
    (["Each line is one record (date, user, topic, text).", "Date: Mar 24 || User: 93519", "x"], None),  # prose
    (["date,user,topic,text", "one line with, a comma"], None),         # the other lines are not such rows
    (["date,time,topic,text", "2023/01/07,10:00,sports,a", "2023/01/08,11:00,travel,b"], None),  # no user field
])
def test_csv_field_finds_the_column_a_word_of_the_question_names(lines, expected) -> None:
    assert csv_field("List every pair of user ids such that both users have a record labelled 'sports'.",
                     lines) == expected


def test_a_grep_that_matched_no_line_is_told_how_the_lines_write_its_words() -> None:
    code = 'hits = grep(r"intent: request")\nprint(len(hits), "records")'
    output = "grep('intent: request') matched no line; each word alone: grep('intent') 439 lines\n0 records"
    samples = ['{"date": "2023-06-11", "user_id": 23736, "intent": "request", "text": "Pylon signal."}']
    hint = cell_hint(code, output, None, samples, "How many records have the intent label 'request'?",
                     sampled="request")
    assert hint is not None and 'These lines write `intent": "request`: `grep(r"intent\\W+request")` finds them.' in hint
    other = cell_hint(code, output, None, ["2023/01/07,51781,request,a"], "How many ... 'request'?", sampled="request")
    assert other is not None and "These lines write" not in other     # the words are not in those lines


def test_int_of_a_whole_line_is_told_to_take_the_number_out_of_it() -> None:
    output = ("Traceback ...\nValueError: invalid literal for int() with base 10: 'Date: Sep 06, 2023 || "
              "User: 90835 || Sentiment: neutral || Instance: Umber river.'")
    question = "List every pair of user ids such that both users have a record labelled 'positive'."
    hint = cell_hint("users.add(int(line))", output, "ValueError", question=question)
    assert hint is not None and 'int(re.search(r"User\\D*(\\d+)", line).group(1))' in hint
    assert "int() was given a whole line" in repeat_instruction(error_name="ValueError", output=output)
    assert cell_hint("int(x)", "ValueError: invalid literal for int() with base 10: 'abc'", "ValueError") is None


def test_number_regex_skips_a_quoted_term_of_the_question() -> None:

    csv = '2023/01/07,51781,question,"86760 juniper granite"'
    assert number_regex("List every pair of user ids such that both have a record labelled 'question'.", [csv]) is None


@pytest.mark.parametrize("code, output, error, pattern", [
    ('n = len(grep(r"low"))\nprint(n)', "0", None, "low"),
    ('hits = grep(r"a")\nprint(grep(r"b"))', "[]", None, "a"),
    ('n = len(grep(r"low"))', "12", None, None),                   # found something
    ('n = len(grep(r"low"))', "NameError: x", "NameError", None),  # failed: the error is the news
    ("print(len(ids))", "0", None, None),                          # found nothing, but with no grep
])
def test_a_cell_that_found_nothing_is_shown_its_first_greps_lines(code, output, error, pattern) -> None:
    assert sample_pattern(code, output, error) == pattern


def test_a_grep_that_matched_no_line_is_shown_the_lines_of_the_questions_term() -> None:
    code = "ids = set()\nfor line in grep(r\"topic=sports\"):\n    ids.add(line.split(',')[1])\nprint(len(ids), 'ids')"
    output = ("grep('topic=sports') matched no line; each word alone: grep('topic') 1 lines, grep('sports') 124 "
              "lines\n0 ids")
    question = "List every pair of user ids such that both users have a record labelled 'sports'."
    assert sample_pattern(code, output, None, question) == "sports"    # after grep's own line: still nothing
    samples = ['2023/01/07,51781,sports,"a b"', '2023/01/08,40896,sports,"c"']
    hint = cell_hint(code, output, None, samples, question, sampled="sports",
                     preview=["Records. CSV without a header: date,user,topic,text", *samples])
    assert hint is not None and 'grep(r"topic=sports") matched no line; These are lines `grep(r"sports")`' in hint
    assert 'fields, `date,user,topic,text`: `line.split(",")[1]` is the user of a line.' not in hint  # split used
    regex = cell_hint("for l in grep('sports'):\n    m = re.search(r'user (\\d+)', l)\nprint(len(ids))", "0", None,
                      samples, question, preview=["CSV without a header: date,user,topic,text"],
                      unmatched=["user (\\d+)"])
    assert regex is not None and '`line.split(",")[1]` is the user of a line.' in regex


@pytest.mark.parametrize("error, output", [
    ("AttributeError", "AttributeError: 'NoneType' object has no attribute 'group'"),
    ("TypeError", "TypeError: string indices must be integers"),
    ("NameError", "NameError: name 'collections' is not defined"),
    ("ModuleNotFoundError", "ModuleNotFoundError: No module named 'auth'"),
    ("TypeError", "TypeError: Repl.llm_query() got an unexpected keyword argument 'text'"),
])
def test_a_known_fix_is_the_same_at_the_first_failure_and_on_a_repeat(error, output) -> None:
    first = cell_hint("x", output, error)
    assert first is not None and first == repeat_instruction(error_name=error, output=output)


def test_an_import_of_a_file_of_the_context_is_told_to_search_the_text_instead() -> None:
    hint = cell_hint("import auth.record_251", "ModuleNotFoundError: No module named 'auth'", "ModuleNotFoundError")
    assert hint is not None and "no module `auth`" in hint and "grep(" in hint


def test_a_keyword_llm_query_does_not_take_is_told_to_go_into_the_prompt() -> None:
    hint = cell_hint("llm_query('q', text=t)", "TypeError: Repl.llm_query() got an unexpected keyword argument "
                     "'text'", "TypeError")
    assert hint is not None and "no argument `text`" in hint and '+ text)' in hint


@pytest.mark.parametrize("code, binds", [
    ("x = 1", True), ("x[0] = 1", True), ("n += 1", True), ("x: int = 1", True),
    ("for h in grep(r'a'):\n    m = re.search(r'b', h)", True), ("print(y := 2)", True),
    ("print(grep(r'a', width=80))", False), ("print(x == 1)", False), ("for h in grep(r'a'):\n    print(h)", False),
    ("!ls", False),
])
def test_binds_names_tells_code_that_computes_from_code_that_only_prints(code, binds) -> None:
    assert binds_names(code) is binds


def test_the_host_reads_the_patterns_of_hostile_code_in_linear_time() -> None:
    """The host's own patterns over model code have no backreference or lazy scan per call: a line of
    100,000 unclosed ``grep('`` reads at once (no pattern of the model runs on the host at all)."""
    code = "grep('" * 100_000 + "\n" + 're.search("' * 100_000 + '\nhits = grep(r"moon\'s"); re.search(r\'(a+)+$\', x)'
    assert grep_patterns(code)[-1] == "moon's"
    assert search_word("Which moon?", code) == "moon"
    assert regex_literals(code)[-1] == "(a+)+$"
