"""Code blocks, FINAL answers, output truncation and terminal sanitizing."""

from __future__ import annotations

import pytest

from rlm.core import parsing
from rlm.core.parsing import (
    Final,
    find_code_blocks,
    find_final,
    sanitize_for_terminal,
    truncate_output,
)

F = "```"

CODE_BLOCK_CASES = [
    ("none", "Just prose, no code.", []),
    ("repl", f"{F}repl\nprint(1)\n{F}", ["print(1)"]),
    ("python", f"{F}python\nx = 1\n{F}", ["x = 1"]),
    ("py", f"{F}py\nx = 2\n{F}", ["x = 2"]),
    ("python3", f"{F}python3\nx = 3\n{F}", ["x = 3"]),
    ("upper case", f"{F}REPL\nx = 4\n{F}", ["x = 4"]),
    ("mixed case", f"{F}Python\nx = 5\n{F}", ["x = 5"]),
    ("space before language", f"{F} repl\nx = 6\n{F}", ["x = 6"]),
    ("extra info words", f"{F}python title=demo\nx = 7\n{F}", ["x = 7"]),
    ("several in order", f"a\n{F}repl\none()\n{F}\nb\n{F}python\ntwo()\n{F}\n", ["one()", "two()"]),
    ("other languages ignored", f"{F}text\nnot code\n{F}\n{F}json\n{{}}\n{F}\n{F}repl\nok()\n{F}", ["ok()"]),
    ("bare fence is not code", f"{F}\nprint('quoted output')\n{F}", []),
    ("unclosed last block", f"{F}repl\nprint(1)\nprint(2)", ["print(1)\nprint(2)"]),
    ("trailing whitespace stripped", f"{F}repl\n\n\nx = 1   \n\n   \n{F}", ["x = 1"]),
    ("empty block skipped", f"{F}repl\n\n   \n{F}\n{F}repl\ny = 1\n{F}", ["y = 1"]),
    ("indentation kept inside", f"{F}repl\nfor i in range(2):\n    print(i)\n{F}", ["for i in range(2):\n    print(i)"]),
    ("indented fence dedented", f"1. step\n   {F}python\n   x = 1\n   if x:\n       y = 2\n   {F}", ["x = 1\nif x:\n    y = 2"]),
    ("longer fence holds backticks", f"````repl\ns = '''\n{F}\n'''\n````", ["s = '''\n```\n'''"]),
    ("tilde fence", "~~~python\nz = 1\n~~~", ["z = 1"]),
    ("fence inside text block is content", f"````text\n{F}repl\nnot_run()\n{F}\n````", []),
    ("CRLF line endings", f"{F}repl\r\nx = 1\r\n{F}\r\n", ["x = 1"]),
    ("inline triple backticks not a fence", f"use {F}repl{F} blocks", []),
    ("one-line fence is inline code", f"{F}print(1){F}", []),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in CODE_BLOCK_CASES],
                         ids=[c[0] for c in CODE_BLOCK_CASES])
def test_find_code_blocks(text: str, expected: list[str]) -> None:
    assert find_code_blocks(text) == expected


def A(value: str) -> Final:
    return Final("answer", value)


def V(name: str) -> Final:
    return Final("var", name)


FINAL_CASES = [
    ("seed: in prose", "The answer is FINAL(42)", A("42")),
    ("alone", "FINAL(Paris)", A("Paris")),
    ("stripped", "FINAL(   Paris  )", A("Paris")),
    ("double quotes removed", 'FINAL("42")', A("42")),
    ("single quotes removed", "FINAL('42')", A("42")),
    ("triple quotes removed", 'FINAL("""a "quoted" word""")', A('a "quoted" word')),
    ("only one level of quotes", "FINAL(\"'x'\")", A("'x'")),
    ("two strings keep quotes", 'FINAL("a" and "b")', A('"a" and "b"')),
    ("escaped quote unescaped", r'FINAL("say \"hi\"")', A('say "hi"')),
    ("nested parens", "FINAL(f(x) = (1 + (2 * 3)))", A("f(x) = (1 + (2 * 3))")),
    ("paren inside quotes", 'FINAL("closing ) paren")', A("closing ) paren")),
    ("open paren inside quotes", "FINAL('a ( b')", A("a ( b")),
    ("apostrophe in prose", "FINAL(the author's choice (Bob))", A("the author's choice (Bob)")),
    ("unbalanced quote falls back", "FINAL(she said 'hi) and left", A("she said 'hi")),
    ("multi-line", "FINAL(\n  line one\n  line two\n)", A("line one\n  line two")),
    ("bold", "**FINAL(x)**", A("x")),
    ("inline code", "`FINAL(7)`", A("7")),
    ("space before paren", "FINAL (7)", A("7")),
    ("empty", "FINAL()", A("")),
    ("empty quotes", 'FINAL("")', A("")),
    ("unbalanced", "FINAL(42", None),
    ("unbalanced nested", "FINAL(f(x)", None),
    ("no final", "I am still working on it.", None),
    ("word boundary", "MY_FINAL(x)", None),
    ("word boundary letters", "NOTFINAL(x)", None),
    ("other suffix", "FINAL_ANSWER(x)", None),
    ("case-sensitive", "final(42)", None),
    ("last one wins", "FINAL(1) then FINAL(2)", A("2")),
    ("last well-formed wins", "FINAL(1) then FINAL(2", A("1")),
    ("final var", "FINAL_VAR(result)", V("result")),
    ("final var spaces", "FINAL_VAR(  result  )", V("result")),
    ("final var quoted", 'FINAL_VAR("result")', V("result")),
    ("final var single quoted", "FINAL_VAR('my_var2')", V("my_var2")),
    ("final var invalid identifier", "FINAL_VAR(1abc)", None),
    ("final var expression", "FINAL_VAR(a + b)", None),
    ("final var keyword", "FINAL_VAR(None)", None),
    ("final var empty", "FINAL_VAR()", None),
    ("final var after final", "FINAL(1)\nFINAL_VAR(x)", V("x")),
    ("final after final var", "FINAL_VAR(x) FINAL(2)", A("2")),
    ("inside repl block ignored", f"{F}repl\nFINAL(42)\n{F}", None),
    ("inside python block ignored", f"{F}python\nFINAL_VAR('x')\n{F}", None),
    ("inside unclosed block ignored", f"Let me finish.\n{F}repl\nFINAL(42)", None),
    ("prose wins over code", f"{F}repl\nFINAL(1)\n{F}\nSo FINAL(2)", A("2")),
    ("prose before code still counts", f"FINAL(3)\n{F}repl\nFINAL(1)\n{F}", A("3")),
    ("inside text fence counts", f"{F}\nFINAL(5)\n{F}", A("5")),
    ("does not span a code block", f"FINAL(a\n{F}repl\nx)\n{F}\n", None),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in FINAL_CASES],
                         ids=[c[0] for c in FINAL_CASES])
def test_find_final(text: str, expected: Final | None) -> None:
    assert find_final(text) == expected


# --------------------------------------------------------------------------- truncation


def test_truncate_within_limit_is_untouched() -> None:
    assert truncate_output("hello", 5) == ("hello", 0)
    assert truncate_output("", 0) == ("", 0)


def test_truncate_keeps_head_and_tail_with_marker() -> None:
    text = "a" * 100 + "b" * 100
    out, cut = truncate_output(text, 20)
    assert cut == 180
    assert out == "a" * 10 + "\n[... 180 characters truncated ...]\n" + "b" * 10


def test_truncate_odd_limit_gives_extra_char_to_tail() -> None:
    out, cut = truncate_output("0123456789", 5)
    assert cut == 5
    assert out.startswith("01\n") and out.endswith("\n789")


def test_truncate_does_not_double_newlines() -> None:
    text = "head\n" + "x" * 50 + "\ntail"
    out, cut = truncate_output(text, 10)
    assert out == "head\n[... 50 characters truncated ...]\ntail"
    assert cut == len(text) - 10


def test_truncate_zero_keeps_only_marker() -> None:
    assert truncate_output("abc", 0) == ("[... 3 characters truncated ...]", 3)


def test_truncate_large_counts_exact() -> None:
    text = "x" * 1_000_000
    out, cut = truncate_output(text, 2_000)
    assert cut == 998_000
    assert "[... 998000 characters truncated ...]" in out
    assert out.count("x") == 2_000


def test_truncate_negative_limit_rejected() -> None:
    with pytest.raises(ValueError):
        truncate_output("abc", -1)


# --------------------------------------------------------------------------- sanitizing

SANITIZE_CASES = [
    ("csi colours", "\x1b[31;1mred\x1b[0m text", "red text"),
    ("csi 256 colours", "\x1b[38;5;196mx\x1b[m", "x"),
    ("osc title with bel", "\x1b]0;pwned title\x07after", "after"),
    ("osc hyperlink with st", "\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "link"),
    ("cursor movement", "a\x1b[2J\x1b[H\x1b[10;20Hb\x1b[1A", "ab"),
    ("private mode", "\x1b[?1049hx\x1b[?25l", "x"),
    ("save restore cursor", "\x1b7x\x1b8", "x"),
    ("charset designation", "\x1b(0q\x1b(B", "q"),
    ("reset terminal", "\x1bcok", "ok"),
    ("bell", "ding\x07dong", "dingdong"),
    ("c1 csi", "\x9b31mred", "red"),
    ("c1 osc", "\x9d0;title\x9cok", "ok"),
    ("c1 control", "a\x85b\x90c", "abc"),
    ("dcs string", "\x1bPq#0;2;0;0;0\x1b\\done", "done"),
    ("other c0 controls", "a\x00b\x08c\x0bd\x0ce\x7f", "abcde"),
    ("newline and tab kept", "a\n\tb", "a\n\tb"),
    ("carriage return becomes newline", "progress 10%\rprogress 100%", "progress 10%\nprogress 100%"),
    ("crlf becomes newline", "a\r\nb", "a\nb"),
    ("lone escape", "end\x1b", "end"),
    ("unicode kept", "héllo — 世界", "héllo — 世界"),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in SANITIZE_CASES],
                         ids=[c[0] for c in SANITIZE_CASES])
def test_sanitize_for_terminal(text: str, expected: str) -> None:
    assert sanitize_for_terminal(text) == expected


def test_sanitize_output_has_no_controls() -> None:
    nasty = "".join(chr(i) for i in range(0x00, 0xA0)) + "\x1b[31mX"
    clean = sanitize_for_terminal(nasty)
    assert all(c in "\n\t" or (0x20 <= ord(c) < 0x7F) for c in clean)
    assert "\x1b" not in clean


# ------------------------------------------------------------------------------ recovery helpers (18.5)
@pytest.mark.parametrize("code, error, expected", [
    ("FINAL(0 <= x < 256)", "NameError", "0 <= x < 256"),
    ("# the range\nFINAL(0 <= x < 256)\n", "NameError", "0 <= x < 256"),
    ("FINAL(x + 1)", "NameError", "x + 1"),
    ("FINAL(The answer is 42)", "SyntaxError", "The answer is 42"),
    ("FINAL('quoted' words)", "SyntaxError", "'quoted' words"),
    ("FINAL (a b c)", "SyntaxError", "a b c"),
    # references to a value the model meant to build are not answers
    ("FINAL(answer)", "NameError", None),
    ("FINAL(result['total'])", "NameError", None),
    ("FINAL(str(total))", "NameError", None),
    ("FINAL(f'{total}')", "NameError", None),
    ("FINAL('Total: ' + str(total))", "NameError", None),
    ("FINAL(stats.total)", "NameError", None),
    # not a FINAL-only cell, or another error
    ("x = 1\nFINAL(a b)", "SyntaxError", None),
    ("FINAL(x); print(1)", "NameError", None),
    ("FINAL(0 <= x < 256)", "ZeroDivisionError", None),
    ("FINAL(0 <= x < 256)", None, None),
    ("FINAL()", "SyntaxError", None),
    ("FINAL(a b", "SyntaxError", None),
])
def test_literal_final_answer(code, error, expected):
    assert parsing.literal_final_answer(code, error) == expected


@pytest.mark.parametrize("code, seen, expected", [
    ("FINAL(processInvoice)", "'The function that calls it is `processInvoice`.'", "processInvoice"),
    ("FINAL(save_record)", "def save_record(data):", "save_record"),
    ("FINAL(answer)", "no such word here", None),
    ("FINAL(total)", "subtotal: 4, total_x: 5, obj.total", None),   # only a whole word counts
    ("FINAL(render/event_27.py)", "defined in the file `render/event_27.py`.", "render/event_27.py"),
    ("FINAL(billing.ledger_4)", "see billing.ledger_4 for it", "billing.ledger_4"),
    ("FINAL(render/event_27.py)", "no path here", None),
    ("FINAL(str(total))", "str(total) is shown", None),             # a call is a value to build
])
def test_a_bare_name_is_the_answer_when_an_output_showed_it(code, seen, expected):
    assert parsing.literal_final_answer(code, "NameError", seen) == expected


def test_assigned_names_are_the_names_code_binds():
    code = "a = 1\nb += 2\nfor c, d in x:\n    e: int = 3\nwith open(f) as g:\n    pass\nif (h := 4):\n    print(i)"
    assert set(parsing.assigned_names(code)) == {"a", "b", "c", "d", "e", "g", "h"}
    assert parsing.assigned_names("not python at all(") == []


def test_assigned_names_end_with_the_last_binding():
    code = "import re\nanswer = None\nids = set()\nfor line in grep('x'):\n    ids.add(line)\nanswer = '\\n'.join(ids)"
    assert parsing.assigned_names(code) == ["ids", "line", "answer"]


@pytest.mark.parametrize("text, question, expected", [
    ("answer", "List every pair of users.", "answer"),
    (" answer ", "List every pair of users.", "answer"),
    ("low", "Which label is least common: low or high?", None),     # a word of the question is an answer
    ("unassigned", "List every pair.", None),
    ("two words", "List every pair.", None),
    ("class", "List every pair.", None),
])
def test_names_a_variable(text, question, expected):
    assert parsing.names_a_variable(text, {"answer", "low", "class"}, question) == expected


def test_normalize_code_ignores_whitespace_only_differences():
    a = "import re\nhits = re.findall(r'x',  context)\n\nprint(len(hits))"
    b = "import re   \nhits \t= re.findall(r'x', context)\r\nprint(len(hits))\n\n"
    assert parsing.normalize_code(a) == parsing.normalize_code(b)
    assert parsing.normalize_code(a) != parsing.normalize_code(a.replace("'x'", "'y'"))


@pytest.mark.parametrize("text, expected", [
    ("```repl\nFINAL(0 <= x < 256)\n```", "0 <= x < 256"),
    ("```python\nprint(1)\n```", "print(1)"),
    ("~~~\n42\n~~~", "42"),
    ("FINAL(unclosed 12", "unclosed 12"),
    ("The answer is FINAL_VAR(total)", "The answer is total"),
    ("Final(urgent)", "urgent"),
    ("  plain words  ", "plain words"),
])
def test_clean_answer_drops_fences_and_final_wrappers(text, expected):
    assert parsing.clean_answer(text) == expected


@pytest.mark.parametrize("code, output, expected", [
    ("pairs = [1]\nanswer = '\\n'.join(pairs)\nprint(len(pairs), 'pairs, all in the variable answer')",
     "1 pairs, all in the variable answer", "answer"),
    ("hits = grep('x')\nfor h in hits:\n    print(h.before('def '))", "def f(x):", None),  # a loop's variable
    ("total = 3\nprint(total)", "3", None),                                                # not named
    ("x = (", "", None),
])
def test_result_name_is_a_variable_the_output_names(code, output, expected):
    assert parsing.result_name(code, output) == expected


# -- linear time on hostile replies (the figures: benchmarks/parse_speed.py) ---------------------------------


def test_a_megabyte_of_unclosed_final_is_no_answer():
    assert parsing.find_final("FINAL(" * 170_000) is None
    assert parsing.find_final("FINAL('''" * 110_000) is None


def test_a_well_formed_final_after_many_unclosed_ones_is_still_found():
    reply = "FINAL(\"x' " * 100_000 + "\n\nThe answer: FINAL(Edda Strand)"
    final = parsing.find_final(reply)
    assert final == parsing.Final("answer", "Edda Strand")
    assert parsing.find_final("FINAL(" * 100_000 + ")") == parsing.Final("answer", "")
