"""Terminal-safe text and unsplittable JSON lines (rlm.core.text): what the host does with hostile strings."""

from __future__ import annotations

import json
import random

import pytest

from rlm.core.text import (
    first_line,
    json_line,
    jsonl_lines,
    jsonl_objects,
    one_line,
    strip_escapes,
    terminal_text,
    unsafe_chars,
)

ESC = "\x1b"
# A8: 16 ESC bytes: a clipboard write (OSC 52), a title change (OSC 0/2), a screen clear, a cursor
# home, a hyperlink, a DCS string, colours and a charset switch
A8_PAYLOAD = (f"{ESC}]52;c;cm0gLXJmIH4K{ESC}\\{ESC}]0;owned{ESC}\\{ESC}]2;t2\x07{ESC}[2J{ESC}[H"
              f"{ESC}]8;;http://evil.example{ESC}\\link{ESC}]8;;{ESC}\\{ESC}Pq#0;2{ESC}\\{ESC}[31mred{ESC}[0m"
              f"{ESC}(0")
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e",
        "\u200f", "\u061c"]


def test_the_a8_payload_leaves_only_its_text():
    assert A8_PAYLOAD.count(ESC) == 16
    assert terminal_text("Error" + A8_PAYLOAD + "Class") == "Errorlinkred" + "Class"


@pytest.mark.parametrize("char", BIDI, ids=[f"U+{ord(c):04X}" for c in BIDI])
def test_bidi_controls_are_removed(char):
    assert terminal_text(f"answer: 1{char}2 abc{char}") == "answer: 12 abc"
    assert one_line(f"x{char}y") == "xy"


def test_a12_right_to_left_override_in_an_answer():
    # "invoice for $100 txt.exe" read right to left after U+202E
    assert terminal_text("report\u202etxt.exe") == "reporttxt.exe"


@pytest.mark.parametrize("sep", ["\u2028", "\u2029"])
def test_line_and_paragraph_separators_become_newlines_or_a_mark(sep):
    assert terminal_text(f"a{sep}b") == "a\nb"
    assert one_line(f"a{sep}b") == "a ⏎ b"
    assert first_line(f"a{sep}b") == "a"


def test_every_control_but_newline_and_tab_is_removed():
    every = "".join(chr(i) for i in range(0xA0)) + "".join(BIDI) + "\u2028\u2029\ud800\udfff"
    clean = terminal_text(every)
    assert unsafe_chars(clean) == []
    assert set(clean) <= {chr(i) for i in range(0x20, 0x7F)} | {"\n", "\t", "\ufffd"}


def test_carriage_returns_cannot_overwrite_a_line():
    assert terminal_text("ok 100%\rFAIL") == "ok 100%\nFAIL"
    assert terminal_text("a\r\nb") == "a\nb"


def test_lone_surrogates_become_a_replacement_char_that_encodes():
    clean = terminal_text("a\ud800b\udfffc")
    assert clean == "a\ufffdb\ufffdc"
    clean.encode("utf-8")


def test_plain_text_and_unicode_come_back_unchanged():
    text = "héllo — 世界 ✓\n\tindented [bold]not markup[/bold] 👩‍💻"
    assert terminal_text(text) is text or terminal_text(text) == text
    assert terminal_text(None) == "" and terminal_text(42) == "42"


def test_unterminated_strings_keep_their_text_and_lose_the_introducer():
    assert terminal_text(f"{ESC}]0;title without end") == "0;title without end"
    assert terminal_text("\x9dno end either") == "no end either"
    assert terminal_text(f"{ESC}[12;") == "12;"


def test_an_escape_inside_a_control_string_ends_it():
    assert terminal_text(f"{ESC}]0;t{ESC}[31mred") == "red"


def test_strip_escapes_keeps_other_controls():
    assert strip_escapes(f"{ESC}[1mbold{ESC}[0m\r\n") == "bold\r\n"


@pytest.mark.parametrize("hostile", ["\x9d" * 200_000, f"{ESC}]" * 100_000, f"{ESC}[" * 100_000,
                                     "\x9b" * 200_000, f"{ESC}]0;x" * 50_000, ("\x90" + "y" * 10) * 20_000])
def test_hostile_runs_of_introducers_are_stripped_in_one_pass(hostile):
    """Each of these took the former regex quadratic time (8 s for 32,000 U+009D; hours for a MB)."""
    clean = terminal_text(hostile)
    assert unsafe_chars(clean) == [] and ESC not in clean


def test_random_strings_never_keep_an_unsafe_char():
    rng = random.Random(7)
    alphabet = [chr(i) for i in range(0xA0)] + BIDI + ["\u2028", "\u2029", "\ud800", "[", "]", "a", "é", "\\"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        assert unsafe_chars(terminal_text(text)) == [], repr(text)
        assert "\n" not in one_line(text) and "\t" not in one_line(text)


def test_one_line_and_first_line_cut_to_a_width():
    assert one_line("  a\n\n b\tc  ") == "a ⏎ b c"
    assert one_line("x" * 10, 5) == "xxxx…"
    assert first_line("\n \n first\nsecond") == "first"
    assert first_line("") == "" and one_line(None) == ""


# --------------------------------------------------------------------------- JSON lines

HOSTILE_VALUE = {"code": "x = '\u2028'\nprint(x)", "output": "a\u2029b\x85c\x1e\x1c\x0b\x0c\r",
                 "answer": "\u202eevil\x9b31m", "lone": "\ud800", "nested": ["\u2028", {"k\u2029": 1}], "é": "世界"}


def test_json_line_is_one_line_for_every_splitter_and_exact():
    line = json_line(HOSTILE_VALUE)
    assert line.splitlines() == [line] and "\n" not in line
    assert json.loads(line) == HOSTILE_VALUE
    line.encode("utf-8")  # a lone surrogate is escaped, not raw
    assert unsafe_chars(line) == []  # safe to print raw: bidi and C1 controls are escaped too
    assert "世界" in line  # non-ASCII stays readable


def test_json_line_passes_default():
    assert json.loads(json_line({"x": {1, 2} and object()}, default=lambda o: "obj")) == {"x": "obj"}


def test_jsonl_lines_split_only_on_newline():
    raw = json.dumps({"a": "x\u2028y"}, ensure_ascii=False) + "\r\n" + json.dumps({"b": "\x85"}, ensure_ascii=False)
    assert len(raw.splitlines()) == 4  # what a reader must not do
    assert [o for o in jsonl_objects(jsonl_lines(raw))] == [{"a": "x\u2028y"}, {"b": "\x85"}]


def test_jsonl_objects_skip_torn_deep_and_non_object_lines():
    lines = ['{"ok": 1}', '{"torn": "mid', "[1, 2]", "", "[" * 100_000 + "]" * 100_000, '{"ok": 2}']
    assert list(jsonl_objects(lines)) == [{"ok": 1}, {"ok": 2}]


def test_json_line_escapes_exactly_the_characters_it_finds():
    from rlm.core import text

    every = "".join(map(chr, range(0x110000)))
    found = set(text._JSON_RAW.findall(every))
    assert found == set(map(chr, text._JSON_ESCAPES))
    assert unsafe_chars(json_line(every)) == []
    # surrogates apart (JSON reads an escaped high and low surrogate side by side as one character)
    apart = "".join(c + "x" if 0xD800 <= ord(c) < 0xE000 else c for c in every)
    assert json.loads(json_line(apart)) == apart
