"""Advice on a cell for the opt-in ``legacy`` policy (rlm/core/policy/legacy.py): what to change in
one that failed, found nothing, repeats earlier code or copies an output, in words a small model
acts on.  Some of it reads the question's words and guesses the context's format (the number after
a word, comma-separated fields, a constant's value): that is why none of it is in the ``general``
policy.

Each function reads what the host knows of a cell (its code, its truncated output, the name of
the error it raised) and returns the sentence to add to the next user turn, or None.  No pattern
from the model's code runs here: which of a cell's regular expressions match the sampled lines is
computed in the sandbox (``unmatched``); the host's own patterns are linear.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rlm.core.parsing import binds_names, fenced
from rlm.sandbox.protocol import NO_MATCH_NOTE

_MODULES = frozenset({"re", "json", "math", "collections", "itertools", "statistics", "string", "datetime",
                      "functools", "random", "textwrap", "csv", "heapq", "bisect", "operator", "time", "os",
                      "sys", "unicodedata", "difflib", "fractions", "decimal"})
_NOT_DEFINED = re.compile(r"name '(?P<name>\w+)' is not defined")
_NO_MODULE = re.compile(r"No module named '(?P<name>[\w.]+)'")
_BAD_KEYWORD = re.compile(r"(?P<func>\w+)\(\) got an unexpected keyword argument '(?P<arg>\w+)'")


# a string literal's text: a quote, anything but that quote and a line end, the same quote (linear: no
# backreference, no lazy scan to the end of the line for each call)
_LITERAL = r"""r?(?:'(?P<single>[^'\n]*)'|"(?P<double>[^"\n]*)")"""
_GREP_CALL = re.compile(r"grep\(\s*" + _LITERAL)
_TERMS = re.compile(r"[^\W\d_]{3,}")   # the words of a pattern (``intent: request`` -> intent, request)
_QUOTED = re.compile(r"'([^'\n]{2,40})'|\"([^\"\n]{2,40})\"")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_-]{3,}")
_COMMON = frozenset("""about after also answer any are been before being both but can could does each every
file find from give have here how into its least line lines list many more most much must number once only
other over record records same should such than that their them then there these they this those through
under very what when where which while whose with would your labelled labeled label common
function functions define defines defined value values integer constant path name names number numbers""".split())
_STR_INDEX = "string indices must be integers"
_NO_MATCH = "'NoneType' object has no attribute"
_NO_MATCH_HINT = ("It failed because re.search (or re.match) found no match in one of the lines and returned "
                  "None, which has no .group(): write `m = re.search(...)`, then `if m:` before `m.group(1)`, "
                  "as in the examples (some lines, a header for one, do not hold the pattern).")
_STR_INDEX_HINT = ("It failed because a line is a str, not a dict: `line['key']` does not work. Take the value "
                   "out of the line with re.search, for example `re.search(r\"key\\D*(\\d+)\", line).group(1)`, "
                   "or, for a line that is a JSON object, `json.loads(line)['key']`.")
_EMPTY = re.compile(r"(0|\[\]|set\(\)|\{\}|''|\"\"|0 [A-Za-z].*)", re.DOTALL)


def found_nothing(output: str) -> bool:
    """The output of a cell is an empty result: ``0``, ``[]``, ``set()``, ``0 pairs, ...`` (after the
    line grep prints for a pattern that matched nothing, if any)."""
    lines = [line for line in output.strip().splitlines() if line.strip() and NO_MATCH_NOTE not in line]
    return len(lines) == 1 and _EMPTY.fullmatch(lines[0].strip()) is not None


def grep_patterns(code: str) -> list[str]:
    """The patterns ``code`` passes to ``grep`` as string literals, in order."""
    return [_literal(m) for m in _GREP_CALL.finditer(code)]


def _literal(m: re.Match[str]) -> str:
    """The text of the string literal ``_LITERAL`` matched."""
    return m.group("single") if m.group("single") is not None else m.group("double")


def sample_pattern(code: str, output: str, error_name: str | None, question: str = "") -> str | None:
    """The pattern of the first ``grep`` in a cell that ran and found nothing, whose lines the cell
    is to be shown (``cell_hint``'s ``samples``), or, when a grep of it matched no line, a word of
    ``question`` it did not grep for (``search_word``); None for any other cell."""
    patterns = grep_patterns(code) if error_name is None and found_nothing(output) else []
    if patterns and NO_MATCH_NOTE in output:
        return search_word(question, code) if question else None
    return patterns[0] if patterns else None


def _undefined(output: str) -> str | None:
    """The name a NameError's traceback says is not defined (the last one it names)."""
    names = _NOT_DEFINED.findall(output)
    return names[-1] if names else None


_INT_OF_LINE = re.compile(r"invalid literal for int\(\) with base 10: '(?P<line>[^'\n]{16,})'")


def known_fix(error_name: str, output: str, question: str = "") -> str | None:
    """The fix for an error small models do not mend alone, told at its first occurrence: re.search
    without a match, a str indexed like a dict, a module used without its import, an import of a
    module the REPL does not have (a file of the context), a keyword argument a function does not
    take (``llm_query(prompt, text=...)``), int() of a whole line; None for others."""
    whole = _INT_OF_LINE.search(output) if error_name == "ValueError" else None
    if whole is not None:
        found = number_regex(question, [whole["line"]])
        take = (f"`int(re.search(r\"{found[1]}\", line).group(1))`" if found else
                "`int(re.search(r\"(\\d+)\", line).group(1))` with the words before the number in the regex")
        return f"It failed because int() was given a whole line, not a number: take the number out of it, {take}."
    if error_name == "AttributeError" and _NO_MATCH in output:
        return _NO_MATCH_HINT
    if error_name == "TypeError" and _STR_INDEX in output:
        return _STR_INDEX_HINT
    name = _undefined(output) if error_name == "NameError" else None
    if name in _MODULES:
        return f"It failed because the module `{name}` is not imported: add `import {name}` as the first line."
    keyword = _BAD_KEYWORD.search(output) if error_name == "TypeError" else None
    if keyword is not None and keyword["func"] in ("llm_query", "llm_query_batched"):
        return (f"It failed because {keyword['func']}() has no argument `{keyword['arg']}`: the text goes into "
                "the prompt itself, for example `llm_query(\"Question ... Text:\\n\" + text)`.")
    if keyword is not None:
        return (f"It failed because {keyword['func']}() has no argument `{keyword['arg']}`: call it as the "
                "instructions show it.")
    missing = _NO_MODULE.search(output) if error_name == "ModuleNotFoundError" else None
    if missing is not None:
        return (f"It failed because the REPL has no module `{missing['name']}`: the files of the context are "
                "text in `context`, not modules to import, and only Python's standard library is installed. "
                "Remove that import and find what you need in the text with grep(...).")
    return None


def cell_hint(code: str, output: str, error_name: str | None, samples: Sequence[str] = (),
              question: str = "", *, sampled: str | None = None, preview: Sequence[str] = (),
              unmatched: Sequence[str] = ()) -> str | None:
    """What to change in a cell that just ran for the first time and failed in a way small models
    do not fix alone (re.search without a match, a str indexed like a dict, a missing import), or
    whose result is empty (``0``, ``[]``, ``0 pairs``: its pattern does not match how the lines
    are written; ``samples``: lines its ``grep`` returns, shown with the regular expressions of the
    code that match none of them, and, where a word of ``question`` is written before a number in
    them, the regular expression that takes that number, or, where they are comma-separated fields
    that a line of ``preview`` names, the field; ``sampled``: the pattern ``samples`` came from,
    when not the code's first; ``unmatched``: the code's regular expressions that match none of
    ``samples``, as the sandbox found); None when its output speaks for itself."""
    if error_name is not None:
        return known_fix(error_name, output, question)
    if not found_nothing(output):
        return None
    grepped = grep_patterns(code)
    call = _grep_call(grepped[0]) if grepped else ""
    if sampled is not None and grepped and sampled != grepped[0] and samples:
        call = _grep_call(sampled)
        question_word = f"{_grep_call(grepped[0])} matched no line; "
    else:
        question_word = ""
    if not samples:
        look = f"`print({call}[:3])`" if call else "`print(context[:500])`"
        return ("Your code found nothing. Unless nothing is the answer, its pattern does not match how the text "
                f"is written: look at a few lines first, {look}, then write the regular expression from what "
                "they show (the words and punctuation around the value, exactly as printed).")
    missing = list(unmatched)
    shown = fenced("\n".join(samples), "text")
    fix = ("write the regular expression from the words and punctuation around the value exactly as these "
           "lines show them, then run the computation again.")
    if missing:
        regexes = " and ".join(f"`{p}`" for p in missing)
        verb = "matches" if len(missing) == 1 else "match"
        fix = f"{regexes} {verb} none of them: {fix}"
        suggestion = number_regex(question, samples)
        field = csv_field(question, [*preview, *samples]) if suggestion is None else None
        if suggestion is not None:
            spelled, regex = suggestion
            fix += f" These lines write `{spelled}`, so for example `re.search(r\"{regex}\", line)`."
        elif field is not None:
            fix += (f" These lines are comma-separated fields, `{field[0]}`: `line.split(\",\")[{field[1]}]` "
                    f"is the {field[2]} of a line.")
    else:
        fix = fix[0].upper() + fix[1:]
    written = _written(grepped[0], samples) if question_word else None
    if written is not None:
        fix += f" These lines write `{written[0]}`: `grep(r\"{written[1]}\")` finds them."
    return f"Your code found nothing. {question_word}These are lines `{call}` returns:\n{shown}\n{fix}"


def _written(pattern: str, samples: Sequence[str]) -> tuple[str, str] | None:
    """How ``samples`` write the words of a grep ``pattern`` that matched no line (``intent: request``
    where the lines write ``intent": "request``): that text, and a regex of the words with any
    punctuation between; None when no line has them in that order."""
    words = _TERMS.findall(pattern)
    if len(words) < 2:
        return None
    for line in samples:
        m = re.search(r"\W{1,8}".join(re.escape(w) for w in words), line, flags=re.IGNORECASE)
        if m is not None:
            return m.group(0), r"\W+".join(re.escape(w) for w in words)
    return None


def _grep_call(pattern: str) -> str:
    quote = "'" if '"' in pattern else '"'
    return f"grep(r{quote}{pattern}{quote})"


def number_regex(question: str, samples: Sequence[str]) -> tuple[str, str] | None:
    """Where a word of ``question`` (or its singular; not a quoted one) is written just before a number in ``samples``
    (``User: 93519``, ``user#93519``, ``"user_id": 93519``): that text as the lines write it, and a
    regular expression that takes the number; None when no word of the question is."""
    words = _question_words(question)
    for line in samples:
        for word in words:
            m = re.search(rf"\b({re.escape(word)}\w*)\W{{1,4}}\d+", line, re.IGNORECASE)
            if m:
                return m.group(0), f"{re.escape(m.group(1))}\\D*(\\d+)"
    return None


_FIELD_NAMES = re.compile(r"(?<![\w,])[A-Za-z_][\w ]{0,20}(?:,[A-Za-z_][\w ]{0,20}){2,}(?![\w,])")


def csv_field(question: str, lines: Sequence[str]) -> tuple[str, int, str] | None:
    """Where ``lines`` (a preview) name comma-separated fields (``date,user,intent,text``) and a word of
    ``question`` (or its singular) is one of them, and other lines hold that many fields: the field
    names as written, the field's index and its name; None otherwise."""
    words = _question_words(question)
    for line in lines:
        for m in _FIELD_NAMES.finditer(line):
            fields = [f.strip() for f in m.group(0).split(",")]
            rows = [other for other in lines if other is not line and other.count(",") >= len(fields) - 1]
            if len(rows) < 2:
                continue
            for index, field in enumerate(fields):
                if any(field.lower() == w or field.lower().startswith(w + "_") for w in words):
                    return m.group(0), index, field
    return None


def _question_words(question: str) -> list[str]:
    """The uncommon words of ``question`` and their singulars, lower case; not a quoted term (a
    value asked about, such as a label, not a field's name)."""
    words: list[str] = []
    quoted = {w.lower() for pair in _QUOTED.findall(question) for w in _WORD.findall(pair[0] or pair[1])}
    for word in _WORD.findall(question):
        if word.lower() in quoted:
            continue
        for form in (word, word[:-1] if word.lower().endswith("s") else ""):
            if len(form) >= 3 and form.lower() not in _COMMON and form.lower() not in words:
                words.append(form.lower())
    return words


_CONSTANT = re.compile(r"(?<![\w.])[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+(?![\w(])")
_VALUE_ASKED = re.compile(r"\b(?:value|evaluate|equals?|worth|set to)\b", flags=re.IGNORECASE)
_PYTHON_LINE = re.compile(r"^(?:[A-Z][A-Z0-9_]* *=|def |class |from \S+ import |import )")


def constant_name(question: str, lines: Sequence[str]) -> str | None:
    """The constant (``CACHE_TTL_3``, upper case with an underscore) whose value ``question`` asks
    for, when ``lines`` (a preview) are Python code; None otherwise."""
    m = _CONSTANT.search(question)
    if m is None or not _VALUE_ASKED.search(question) or not any(_PYTHON_LINE.match(line) for line in lines):
        return None
    return m.group(0)


_RE_CALL = re.compile(r"re\.(?:search|match|fullmatch|findall|finditer)\(\s*" + _LITERAL)


def regex_literals(code: str) -> list[str]:
    """The patterns ``code`` passes to ``re.search`` and its kin as string literals, in order, once each."""
    return list(dict.fromkeys(_literal(m) for m in _RE_CALL.finditer(code)))


def probe_code(pattern: str, code: str, *, lines: int = 3, line_chars: int = 200) -> str:
    """The cell the host runs in the kernel for a cell that found nothing: it prints, as one JSON
    line, the first ``lines`` lines ``grep(pattern)`` returns (each cut to ``line_chars``) and which of
    ``code``'s regular expressions match none of them.  The model's patterns run there, in the
    sandbox, under the cell's timeout: never on the host."""
    flags = "re.IGNORECASE" if ignores_case(code) else "0"
    return "\n".join([
        "def _rlm_probe():",
        "    import json, re",
        f"    lines = [str(x)[:{int(line_chars)}].replace('\\n', ' ') for x in grep({pattern!r})[:{int(lines)}]]",
        "    def matches(p, t):",
        "        try:",
        f"            return re.search(p, t, {flags}) is not None",
        "        except re.error:",
        "            return True",
        f"    unmatched = [p for p in {regex_literals(code)!r} if lines and not any(matches(p, t) for t in lines)]",
        "    return json.dumps({'lines': lines, 'unmatched': unmatched})",
        "try:",
        "    print(_rlm_probe())",
        "finally:",
        "    del _rlm_probe",
    ])


def ignores_case(code: str) -> bool:
    """``code`` asks its regular expressions to ignore case."""
    return re.search(r"IGNORECASE|re\.I\b", code) is not None


def search_word(question: str, code: str = "") -> str | None:
    """One word of the question to grep for alone: a quoted term first, else its longest
    uncommon word; never the pattern the code already searched for."""
    tried = {_literal(m).lower() for m in _GREP_CALL.finditer(code)}
    quoted = [a or b for a, b in _QUOTED.findall(question)]
    words = sorted((w for w in _WORD.findall(question) if w.lower() not in _COMMON), key=len, reverse=True)
    for word in [*quoted, *words]:
        if word.lower() not in tried:
            return word
    return None


def repeat_instruction(*, error_name: str | None, output: str, timed_out: bool = False, code: str = "",
                       question: str = "", built: str | None = None) -> str:
    """What to change in a block whose code repeats earlier code, given what that code did
    (``code`` and ``question``, when given, make the suggestion concrete)."""
    if timed_out:
        return ("It timed out: it does too much for one block. Work on a slice of `context` (for example "
                "the first 100,000 characters) or use re.finditer instead of Python loops over characters.")
    fix = known_fix(error_name, output, question) if error_name else None
    if fix is not None:
        return fix
    name = _undefined(output) if error_name == "NameError" else None
    if name:
        return (f"It failed because `{name}` is not defined: assign `{name}` in the same block before using "
                "it (SHOW_VARS() lists your variables), or, if you know the answer, write FINAL(your "
                "answer) outside any code block.")
    if error_name == "SyntaxError":
        return ("It is not valid Python: fix the line the error points at. Text that is not code belongs in "
                "quotes, and an answer in words goes outside the code block as FINAL(your answer).")
    if error_name:
        return (f"It failed with {error_name}: change the line the traceback points at before you send "
                "the block again.")
    if "grep(" in code and not binds_names(code):
        return ("You have seen these lines; do not print them again. If the output states the answer, reply "
                "with only FINAL(your answer). If the answer needs all of them (a count, a list, ids), write a "
                "block that loops over the `grep(...)` lines, takes the value out of each line with re.search "
                "(the words around it exactly as these lines show them; `if m:` before `m.group(1)`) and "
                "computes the answer, as in the examples.")
    word = search_word(question, code) if "grep(" in code else None
    other = (f"for example `grep(r\"{word}\")` (one word of the question alone finds more lines)" if word
             else "search for another word of the question")
    with_var = f", or only FINAL_VAR({built}) when the variable `{built}` holds the answer" if built else ""
    return (f"You already have its output. If it answers the question, reply with only FINAL(your answer){with_var}. "
            f"If not, write different code: {other}, or print another part of `context`.")


def reused_output(earlier_turn: int) -> str:
    """Stands for the output of a block not run again: the one shown after turn ``earlier_turn``."""
    return f"(not run again: the same output as after turn {earlier_turn}, shown above)"


ECHO_STANDS_FOR = "```repl\n# (a copy of the output, not code: it was not run)\n```"


def echo_notice(block: int, n_blocks: int) -> str:
    """Says that a block copied an output instead of holding code."""
    which = f"Block {block}" if n_blocks > 1 else "Your reply"
    return (f"{which} copied the output above into a code block instead of writing code, so it was not run. "
            "Do not copy outputs. If the output states the answer, reply with only FINAL(your answer); if "
            "not, write new Python code.")


def repeat_notice(block: int, n_blocks: int, earlier_turn: int, *, reused: bool, instruction: str) -> str:
    """Says that a block repeats the code of an earlier turn, and what to change."""
    which = f"Block {block}" if n_blocks > 1 else "Your code"
    done = (f"so it was not run again; its output is the one shown after turn {earlier_turn}" if reused
            else "and it printed the same output again")
    return f"{which} is the same as the code you sent in turn {earlier_turn}, {done}. {instruction}"
