"""The REPL's grep and map_chunks helpers (guest code, loaded here as the image loads it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from rlm.sandbox import protocol

GUEST = Path(__file__).resolve().parents[2] / "sandbox_image"


@pytest.fixture(scope="module")
def helpers():
    sys.modules.setdefault("protocol", protocol)  # in the image it is a flat module next to helpers.py
    spec = importlib.util.spec_from_file_location("rlm_guest_helpers", GUEST / "helpers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TEXT = "alpha one\nbeta two\nAlpha three alpha\n\ngamma"


def _pairs(hits) -> list[tuple[int, str]]:
    return [(h.offset, str(h)) for h in hits]


def test_grep_gives_each_matching_line_once_with_the_offset_where_it_starts(helpers):
    hits = helpers.grep(TEXT, "alpha")
    assert hits == ["alpha one", "Alpha three alpha"] and _pairs(hits) == [(0, "alpha one"), (19, "Alpha three alpha")]
    assert [TEXT[h.offset:h.offset + 5] for h in hits] == ["alpha", "Alpha"]


def test_grep_anchors_are_the_start_and_end_of_each_line(helpers):
    assert helpers.grep(TEXT, r"^beta") == ["beta two"]          # not only the text's first line
    assert helpers.grep(TEXT, r"alpha$") == ["Alpha three alpha"]
    assert _pairs(helpers.grep(TEXT, r"^gamma$")) == [(38, "gamma")]


def test_grep_lines_are_strings_that_print_and_join_like_strings(helpers):
    import copy
    import json
    import re

    hits = helpers.grep(TEXT, "alpha")
    assert all(isinstance(h, str) for h in hits)
    assert repr(hits) == "['alpha one', 'Alpha three alpha']" and "\n".join(hits) == "alpha one\nAlpha three alpha"
    assert hits[1].split()[1] == "three" and re.search(r"three", hits[1]) and "one" in hits[0]
    assert json.dumps(hits) == '["alpha one", "Alpha three alpha"]'
    assert [h.offset for h in copy.deepcopy(hits)] == [0, 19]


def test_a_line_gives_the_text_around_it(helpers):
    text = "# file: a.py\ndef f():\n    return g()\n# file: b.py\ndef g():\n    return 1\n"
    call, = helpers.grep(text, r"return g")
    assert call.around(before=30, after=0) == text[max(0, call.offset - 30):text.index("\n# file: b")]
    assert "# file: a.py" in call.around() and "def g" in call.around()
    assert call.around(before=0, after=0) == "    return g()"
    docs = ["x\nneedle here\ny", "other"]
    hit, = helpers.grep(docs, "needle")
    assert hit.offset == 0 and hit.around(before=2, after=2) == "x\nneedle here\ny"
    import copy
    assert copy.deepcopy(hit).around() == "needle here"
    one_line = "a" * 50_000 + "NEEDLE" + "b" * 50_000      # a text without line ends
    long, = helpers.grep(one_line, "needle")
    assert "NEEDLE" in long.around(500, 100) and len(long.around(500, 100)) <= 300 + 600   # a copy keeps the line, not the text around


def test_a_line_gives_the_nearest_line_at_or_above_it_that_matches_a_pattern(helpers):
    text = "--- a.py ---\ndef f(x):\n    return g(x)\n\n--- b.py ---\ndef g(y):\n    y += 1\n    return y\n"
    inner, = helpers.grep(text, r"y \+= 1")
    assert inner.before(r"^def ") == "def g(y):" and inner.before(r"^def ").offset == text.index("def g")
    assert inner.before(r"^--- ") == "--- b.py ---" and inner.before(r"^def ").before(r"^---") == "--- b.py ---"
    call, = helpers.grep(text, r"return g")
    assert call.before("def") == "def f(x):" and call.before(r"^--- ") == "--- a.py ---"
    assert call.before("DEF F") == "def f(x):"                     # case ignored, like grep
    assert call.before(r"^class ") == "" and call.before(r"^class ").offset == call.offset   # none above
    assert inner.before(r"return g") == "    return g(x)"           # skips lines that do not match
    first, = helpers.grep(text, r"a\.py")
    assert first.before("def") == ""                                # the first line has nothing above it
    assert first.before(r"^--- ") == "--- a.py ---"                 # a header is in its own file
    definition, = helpers.grep(text, r"def g")
    assert definition.before(r"^def ") == "def g(y):" and definition.before(r"^def ").offset == definition.offset
    docs = ["intro", "## Setup\nstep one\nneedle here"]
    hit, = helpers.grep(docs, "needle")
    assert hit.before("^## ") == "## Setup" and hit.before("^## ").offset == 1   # a list: the document's index
    assert hit.before("intro") == ""                                # never another document


def test_grep_over_documents_gives_the_document_index(helpers):
    docs = ["no match here", "a match\nand another match", {"key": "match"}]
    assert _pairs(helpers.grep(docs, "match")) == [(0, "no match here"), (1, "a match"), (1, "and another match"),
                                                   (2, '{"key": "match"}')]


def test_grep_searches_an_invalid_regex_literally(helpers):
    assert _pairs(helpers.grep("f(x) = 1\ng(y)", "f(x")) == [(0, "f(x) = 1")]


def test_grep_cuts_long_lines_around_the_match(helpers):
    line = "a" * 5000 + "NEEDLE" + "b" * 5000
    shown, = helpers.grep(line, "needle", width=100)
    assert shown.offset == 0 and "NEEDLE" in shown and len(shown) <= 106


def test_chunks_cut_at_line_ends_and_lose_nothing(helpers):
    text = "".join(f"{i}\n" for i in range(2000))
    pieces = helpers.chunks(text, 1000)
    assert "".join(pieces) == text
    assert all(len(p) <= 1000 and p.endswith("\n") for p in pieces)


def test_chunks_of_a_text_without_line_ends_are_cut_at_the_size(helpers):
    pieces = helpers.chunks("x" * 2500, 1000)
    assert [len(p) for p in pieces] == [1000, 1000, 500]


def test_map_chunks_sends_the_instruction_with_each_piece(helpers):
    seen: list[list[str]] = []

    def batched(prompts: list[str]) -> list[str]:
        seen.append(prompts)
        return [str(len(p)) for p in prompts]

    answers = helpers.map_chunks(batched, "one\ntwo\nthree\n" * 100, "Count the words.", 500)
    assert len(seen) == 1 and len(answers) == len(seen[0]) > 1
    assert all(p.startswith("Count the words.\n\nText (part ") for p in seen[0])
    assert helpers.map_chunks(batched, "", "Anything?") == []


def test_grep_shows_the_same_window_for_patterns_that_hit_the_same_place(helpers):
    line = "word " * 1000 + "The secret access code is 985440. " + "word " * 1000
    shown = {helpers.grep(line, p)[0] for p in ("secret access code", "access code", "code is")}
    assert len(shown) == 1 and "985440" in shown.pop()


def test_a_pattern_of_several_words_that_matches_nothing_gets_a_hint_per_word(helpers):
    text = "Date: x || Intent: request || a\nIntent: praise\n"
    hint = helpers.no_match_hint(text, "intent = request")
    assert hint == ("grep('intent = request') matched no line; each word alone: grep('intent') 2 lines, "
                    "grep('request') 1 lines")
    assert helpers.no_match_hint(text, "request") is None          # one word: nothing to suggest
    assert helpers.no_match_hint(text, "alpha beta") is None       # no word matches either


# -- search: BM25 over passages ------------------------------------------------------------------------------

LOGBOOK = ("Day 1. Wind from the north-west, the barque Meridian sailed from Valdane harbour.\n"
           "The cook reported the salted pork spoiled.\n\n"
           "Day 2. Calm sea. The bosun mended the foresail.\n\n"
           "Day 3. The Meridian sighted the lighthouse of Korsund at dawn; the pilot came aboard.\n\n"
           "Day 4. Korsund: the pilot was named Edda Strand, and she took us past the reef.")


def test_search_ranks_paragraphs_and_keeps_their_offsets(helpers):
    hits = helpers.search(LOGBOOK, "who was the pilot at Korsund", k=2)
    assert {h.offset for h in hits} == {LOGBOOK.index("Day 3"), LOGBOOK.index("Day 4")}
    assert all(LOGBOOK[h.offset:h.offset + len(h)] == h for h in hits)   # each hit is the text at its offset
    assert hits[0].score >= hits[1].score > 0 and hits[0].index is None
    assert "Edda Strand" in " ".join(hits)


def test_search_returns_nothing_for_words_no_passage_has(helpers):
    assert helpers.search(LOGBOOK, "telescope nebula", k=5) == []
    assert helpers.search(LOGBOOK, "", k=5) == [] and helpers.search("", "pilot") == []


def test_search_uses_lines_when_the_text_has_no_blank_line(helpers):
    text = "comet seen low in the east\nclouds all night\nthe comet's tail pointed west"
    hits = helpers.search(text, "comet tail", k=5)
    assert hits[0] == "the comet's tail pointed west" and hits[0].offset == text.index("the comet's")
    assert "clouds all night" not in hits


def test_search_over_a_list_of_documents_gives_each_hit_its_document_index(helpers):
    docs = ["Recipe: barley soup with leeks.", "Recipe: plum cake. Bake for forty minutes.", "Recipe: leek pie."]
    hits = helpers.search(docs, "how long to bake the plum cake", k=1)
    assert hits == ["Recipe: plum cake. Bake for forty minutes."] and hits[0].index == 1 and hits[0].offset == 0
    assert "Bake" in hits[0].around()


def test_search_cuts_a_long_paragraph_into_passages_that_each_keep_their_offset(helpers):
    text = " ".join(f"word{i}" for i in range(2_000)) + " quasar"
    hits = helpers.search(text, "quasar", k=3)
    assert len(hits) == 1 and len(hits[0]) <= helpers.PASSAGE_CHARS and text[hits[0].offset:].startswith(hits[0])



def test_a_long_paragraph_is_cut_after_a_sentence_so_a_found_passage_holds_the_whole_sentence(helpers):
    filler = "The harbour wall was rebuilt in stone after the winter gales. " * 5   # 310 characters
    needle = "The keeper of the lighthouse in those years was a retired pilot named Ona Varga."
    text = filler + needle + " " + "Gulls nest on the breakwater every spring. " * 10
    hits = helpers.search(text, "keeper lighthouse", k=1)
    assert len(hits) == 1 and needle in hits[0] and text[hits[0].offset:].startswith(hits[0])
    assert all(end == len(text.rstrip()) or text[end - 2:end] == ". " for _start, end in helpers.passages(text))

# ------------------------------------------------------------------------------ a folder's documents
def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for name, text in {"b.txt": "beacon lit at dusk\n", "a/z.py": "def lamp():\n    return 'on'\n",
                       "a/b/c.md": "# Fog\n\nThe horn sounds in fog.\n", "a.txt": "anchor\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "link").symlink_to(root / "a", target_is_directory=True)   # listed by os.walk, not entered
    return root


def test_a_folder_loads_as_documents_that_are_str_with_their_relative_path(helpers, tmp_path):
    from rlm.core.context import folder_paths

    root = _folder(tmp_path)
    docs = helpers.load_folder(str(root), lambda p: Path(p).read_text())
    assert [d.path for d in docs] == ["a.txt", "b.txt", "a/z.py", "a/b/c.md"] == folder_paths(root)
    assert isinstance(docs[2], str) and docs[2] == "def lamp():\n    return 'on'\n" and len(docs) == 4
    assert docs[2].upper().startswith("DEF") and type(docs[2][:3]) is str   # str methods give plain str
    assert "a/z.py" in repr(docs[2]) and "def lamp" in repr(docs[2])
    import copy

    assert copy.deepcopy(docs[3]).path == copy.copy(docs[3]).path == "a/b/c.md"


def test_grep_lines_and_search_passages_say_which_file_they_come_from(helpers, tmp_path):
    docs = helpers.load_folder(str(_folder(tmp_path)), lambda p: Path(p).read_text())
    hits = helpers.grep(docs, "return|horn")
    assert [(h.path, h.offset, str(h)) for h in hits] == [("a/z.py", 2, "    return 'on'"),
                                                          ("a/b/c.md", 3, "The horn sounds in fog.")]
    assert hits[0].before("^def ").path == "a/z.py" and hits[1].before("^# ") == "# Fog"
    assert [line.path for line in helpers.grep(["plain text, no path"], "plain")] == [None]
    found = helpers.search(docs, "fog horn", k=1)
    assert [(p.path, p.index) for p in found] == [("a/b/c.md", 3)] and "a/b/c.md" in repr(found[0])
    assert copy_path(hits[0]) == "a/z.py"


def copy_path(line) -> str:
    import copy

    return copy.copy(line).path
