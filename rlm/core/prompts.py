"""The words the root model reads: the system prompt and the per-turn user messages.

The system prompt is the product's main prompt.  It tells the model what `context` is
(metadata and a short preview only; the model never sees the data itself), how the REPL
works, which functions exist under which budgets, how to finish, and that its first reply
must be a single ```repl block (small models need to be told).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rlm.sandbox.protocol import MAP_CHUNK_CHARS

PREVIEW_CHARS = 500
NO_OUTPUT = "(no output)"   # what the model is shown for a cell that printed nothing
FINAL_REQUEST_VARIABLES = 8  # variable names shown in the last-chance request


@dataclass(frozen=True)
class ContextInfo:
    """Metadata about the context; produced by the context loader."""

    kind: str          # "str" | "list" | "dict" | ...
    total_chars: int
    n_documents: int
    preview: str
    source: str        # file name or "inline"


@dataclass(frozen=True)
class Budgets:
    """The limits of one run, as the model is told them."""

    max_iterations: int
    max_output_chars: int
    enable_sub_calls: bool
    max_sub_calls: int
    max_sub_call_chars: int
    max_depth: int
    depth: int = 0


# --------------------------------------------------------------------------- system prompt


def system_prompt(info: ContextInfo, budgets: Budgets) -> str:
    """The root model's system prompt for one run.

    What is the same for every run comes first and the context's own metadata last, so a
    server that caches prompt prefixes reads the long common part once for many questions.
    """
    parts = [
        _intro(budgets),
        _repl_section(budgets),
        _functions_section(budgets),
        _strategy_section(budgets),
        _finishing_section(),
        _example_section(budgets),
        _rules_section(budgets),
        _context_section(info, budgets),
    ]
    return "\n\n".join(parts).strip() + "\n"


def _intro(budgets: Budgets) -> str:
    text = (
        "You answer a question about a context that is far too large to read at once. "
        "You cannot see the context directly. It is loaded in a Python REPL (a Jupyter "
        "kernel) as the variable `context`, and you learn about it only by writing code "
        "and reading what the code prints."
    )
    if budgets.depth > 0:
        text += (
            f" You are a recursive sub-call (depth {budgets.depth} of {budgets.max_depth}): "
            "answer the question you were given, concisely, so the caller can use it."
        )
    return text


def _context_section(info: ContextInfo, budgets: Budgets) -> str:
    lines = [
        "## The context",
        f"- type: {info.kind}",
        f"- total length: {info.total_chars:,} characters",
        f"- documents: {info.n_documents:,}",
        f"- source: {info.source}",
        f"- {_shape_hint(info)}",
    ]
    if budgets.enable_sub_calls:
        pieces = max(1, -(-info.total_chars // MAP_CHUNK_CHARS))
        lines.append(f"- `map_chunks` over the whole context: {pieces:,} pieces, so {pieces:,} sub-calls")
    lines += [
        f"- preview (first {PREVIEW_CHARS} characters at most; NOT the whole context):",
        _fenced(shorten_preview(info.preview), "text"),
    ]
    return "\n".join(lines)


def _shape_hint(info: ContextInfo) -> str:
    if info.kind == "str":
        return "`context` is one string: search it with `grep` or `re`, slice it, split it into lines."
    if info.kind == "list":
        return (f"`context` is a list of {info.n_documents:,} documents: check the type of "
                "an element before you process them all.")
    if info.kind == "dict":
        return "`context` is a dict: look at its keys first."
    return f"`context` is a {info.kind}: inspect its structure before processing it."


def shorten_preview(preview: str, limit: int = PREVIEW_CHARS) -> str:
    """The preview cut to ``limit`` characters, with a visible mark when cut."""
    if len(preview) <= limit:
        return preview
    return preview[:limit].rstrip() + " [...]"


def _repl_section(budgets: Budgets) -> str:
    return (
        "## The REPL\n"
        "Write Python in a fenced block marked `repl`. Every block runs in the same kernel, "
        "so variables and imports persist from turn to turn. After each turn you receive "
        f"what each block printed, cut to {budgets.max_output_chars:,} characters (start and "
        "end kept), so print counts, short slices and summaries, never whole documents. "
        "Errors come back as tracebacks: fix the code and try again. Never assign to "
        "`context`; keep your own data in new variables."
    )


def _functions_section(budgets: Budgets) -> str:
    lines = [
        "## Functions in the REPL",
        "- `grep(pattern, text=None) -> list[str]`: every line of `context` (or of `text`) that "
        "matches the regular expression `pattern`, case ignored; long lines are cut around the "
        "match. Each line is a str, and `line.offset` is where it starts (for a list of "
        "documents, the document's index); `line.around()` is the text around it (1,000 characters "
        "before, 300 after); `line.before(pattern)` is the nearest line above it that matches "
        "`pattern`: the function (`line.before(r\"def \")`), file or section it is in. "
        "`len(grep(p))` counts matching lines.",
    ]
    if budgets.enable_sub_calls:
        lines += [
            "- `llm_query(prompt, model=None) -> str`: ask a sub-model. It sees only the "
            f"prompt you pass (at most {budgets.max_sub_call_chars:,} characters), so put "
            "the question and the text it needs into the prompt.",
            "- `llm_query_batched(prompts, model=None) -> list[str]`: many prompts at once, "
            "answered in parallel, in order; much faster than a loop of `llm_query`.",
            f"- `map_chunks(instruction, text=None, chunk_chars={MAP_CHUNK_CHARS}) -> list[str]`: "
            "cuts `context` (or `text`) into pieces at line ends and asks the sub-model "
            "`instruction` about every piece at once (one sub-call per piece); the answers, in "
            "order; slow on a big context.",
        ]
        if budgets.depth < budgets.max_depth:
            lines.append(
                "- `rlm_query(prompt, context=None) -> str`: a recursive run with its own REPL, "
                "for a sub-problem whose text is itself too large for one `llm_query`; pass "
                "that text as `context`."
            )
        else:
            lines.append("- `rlm_query` is not available at this depth.")
        lines.append(
            f"- Budget: at most {budgets.max_sub_calls:,} sub-calls in this run; each prompt of "
            "a batch counts as one. Use them for reading and judging text, not for things "
            "code can do."
        )
    else:
        lines.append(
            "- Sub-model calls are disabled in this run: `llm_query`, `llm_query_batched`, "
            "`map_chunks` and `rlm_query` are not available. Work with code alone."
        )
    lines += [
        "- `SHOW_VARS()`: list the variables you have defined.",
        "- `FINAL(answer)` and `FINAL_VAR(name)`: finish (below).",
    ]
    return "\n".join(lines)


def _strategy_section(budgets: Budgets) -> str:
    steps = [
        "1. The preview at the end of this message shows how the context begins: start at once "
        "with `grep` for a distinctive word of the question (a name, an id, a label) and print "
        "how many lines match and the first few.",
        "2. A question about one fact: the matching lines usually hold it. Read them and answer. "
        "When the answer is what a line is in (its file, function or section), print "
        "`h.before(pattern)` next to each line, with a pattern for the lines that start one (a "
        "file header as the preview shows it, `def `, a heading), as in the second example.",
        "3. A question that counts, sums, compares or lists over many records: compute it with "
        "code over ALL matching lines (`len`, `collections.Counter`, `re.search` on each line, "
        "a `set` of ids), print the result and a few of the lines it used, check them, then "
        "answer with the computed value. Never count by reading printed samples.",
    ]
    if budgets.enable_sub_calls:
        steps.append(
            "4. Only when no pattern can find the answer (it depends on what the text means): "
            "`map_chunks`, or `llm_query_batched` on the lines you found, then combine the "
            "answers with code."
        )
    return "## How to work\n" + "\n".join(steps) + (
        "\nUse code for exact work (counting, matching, arithmetic). Do not guess: if you "
        "have not seen the evidence in the output, look for it."
    )


def _finishing_section() -> str:
    return (
        "## Finishing\n"
        "When you are sure, write `FINAL(your answer)` in your reply, outside any code "
        "block; the text inside the parentheses is the answer, exactly as written. To answer "
        "with a value you built in the REPL, write `FINAL_VAR(variable_name)`. Both also work "
        "as function calls inside a code block, e.g. `FINAL_VAR(\"result\")`. The first "
        "FINAL ends the run, so do not write it before you have checked the answer."
    )


def _example_section(budgets: Budgets) -> str:
    """Short worked examples (a lookup, the section a line is in, a filtered count, a comparison, distinct
    ids, pairs), for questions unlike the real one."""
    lookup = "hits = grep(r\"billing.*port\")\nprint(len(hits), \"lines\")\n"
    if budgets.enable_sub_calls:
        lookup += ("print(llm_query(\"Which port does the billing service listen on? Text:\\n\" + "
                   "\"\\n---\\n\".join(h.around(500, 100) for h in hits[:3])))")
        seen = "`1 lines` and `8443`"
    else:
        lookup += "print(hits[:10])"
        seen = "`['billing service listens on port 8443']`"
    enclosing = "\n".join([
        "for h in grep(r\"backup\")[:10]:",
        "    print(repr(h), \"is in\", h.before(r\"^## \"))",
    ])
    pairs = "\n".join([
        "# the preview's lines read: 2024-03-02 | client 1021 | refund | ...",
        "# so the customer id is the number after \"client \"",
        "def ids(pattern):",
        "    found = set()",
        "    for line in grep(pattern):",
        "        m = re.search(r\"client (\\d+)\", line)",
        "        if m:",
        "            found.add(int(m.group(1)))",
        "    return found",
        "both = sorted(ids(r\"refund\") & ids(r\"discount\"))   # a - b: in a but not in b",
        "pairs = [f\"({a}, {b})\" for a, b in itertools.combinations(both, 2)]",
        "answer = \"\\n\".join(pairs)",
        "print(len(both), \"customers,\", len(pairs), \"pairs, all in the variable answer\")",
    ])
    count = "\n".join([
        "import re",
        "lines = grep(r\"refund\")",
        "march = [line for line in lines if re.search(r\"march|-03-\", line, flags=re.IGNORECASE)]",
        "print(len(lines), \"refund lines,\", len(march), \"in March\")",
        "print(march[:5])",
    ])
    compare = "\n".join([
        "counts = {name: len(grep(name)) for name in [\"north\", \"south\", \"east\"]}",
        "print(counts, \"least often:\", min(counts, key=counts.get))",
    ])
    distinct = "\n".join([
        "import re",
        "ids = set()",
        "for line in grep(r\"refund\"):",
        "    m = re.search(r\"client (\\d+)\", line)  # the preview's lines read: 2024-03-02 | client 1021 | refund",
        "    if m:",
        "        ids.add(m.group(1))",
        "print(len(ids), \"customers:\", sorted(ids)[:5])",
    ])
    return (
        "## Examples (for other questions: adapt the idea, do not copy the words)\n"
        "Question: \"Which port does the billing service listen on?\"\n"
        + _fenced(lookup, "repl")
        + f"\nThe output shows {seen}, so: `FINAL(8443)`\n"
        "Question: \"In which section is the backup schedule described?\"\n"
        + _fenced(enclosing, "repl")
        + "\nThe output shows `'Backups run nightly at 02:00.' is in ## Operations`, so: `FINAL(Operations)`\n"
        "Question: \"How many orders were refunded in March?\"\n"
        + _fenced(count, "repl")
        + "\nThe output shows `212 refund lines, 17 in March` and five March lines that are refunds, "
        "so: `FINAL(17)`\n"
        "Question: \"Which region is named least often: north, south or east?\"\n"
        + _fenced(compare, "repl")
        + "\nThe output shows `{'north': 41, 'south': 12, 'east': 30} least often: south`, so: `FINAL(south)`\n"
        "Question: \"How many different customers asked for a refund?\"\n"
        + _fenced(distinct, "repl")
        + "\nThe output shows `38 customers: ['1021', '1187', '1230', '1302', '1456']`, so: `FINAL(38)`\n"
        "Question: \"List every pair of customers who asked for both a refund and a discount.\"\n"
        + _fenced(pairs, "repl")
        + "\nThe output shows `4 customers, 6 pairs, all in the variable answer`. The question asks for "
        "the list, and `answer` holds all of it, so: `FINAL_VAR(answer)`"
    )


def _rules_section(budgets: Budgets) -> str:
    return (
        "## Rules\n"
        "- Your first reply must be a single ```repl code block and nothing else.\n"
        "- After that, each reply holds either ```repl code blocks or a FINAL answer.\n"
        f"- You have at most {budgets.max_iterations} turns.\n"
        "- Never rebind `context`."
    )


def _fenced(body: str, lang: str) -> str:
    """``body`` in a fence longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{body}\n{fence}"


# --------------------------------------------------------------------------- user messages


def first_user_prompt(question: str, *, sub_calls: bool = True, preview: str = "") -> str:
    """The first user message: the question, and how to begin (with, when the preview writes a
    word of the question before a number, the regular expression that takes it)."""
    found = number_regex(question, preview.splitlines())
    spelled = (f" The preview writes `{found[0]}`: `re.search(r\"{found[1]}\", line)` takes that number "
               "from a line." if found else "")
    fact = ("`grep` for a distinctive word of the question and pass the text around the lines to "
            "`llm_query` with the question, as in the first example" if sub_calls else
            "`grep` for a distinctive word of the question and print the lines")
    return (
        f"Question: {question}\n\n"
        f"Reply with a single ```repl block. For a fact: {fact}. For the file, function or section "
        "a line is in: print `h.before(pattern)` next to each line, as in the second example. To "
        "count, compute or list: code over all the matching lines, as in the examples after it."
        + spelled
    )


def iteration_prompt(outputs: list[tuple[str, str]], iteration: int, max_iterations: int, *,
                     question: str = "", repeated: bool = False, repeats: list[str] | None = None,
                     hints: list[str] | None = None, variable: str | None = None) -> str:
    """What the code of turn ``iteration`` (1-based) printed, and what to do next.

    ``outputs`` holds (code, output) pairs; the output is already truncated.  The code is not
    echoed (it is in the model's own reply; small models copy what they are shown).  The
    question is repeated every turn; ``repeated``: every output was seen before in this run;
    ``repeats``: what to change in blocks that repeat earlier code (from ``repeat_notice``);
    ``hints``: what to change in blocks that failed or found nothing (from ``cell_hint``);
    ``variable``: the variable the last cell built, named where the model is told how to
    answer with one (small models copy a placeholder such as ``variable_name`` literally).
    """
    parts = []
    if not outputs:
        parts.append("(no code ran)")
    for n, (_code, output) in enumerate(outputs, start=1):
        label = f"Output of block {n}" if len(outputs) > 1 else "Output"
        parts.append(f"{label}:\n{_fenced(output if output.strip() else NO_OUTPUT, 'text')}")
    parts.extend(hints or [])
    parts.extend(repeats or [])
    final_var = f"FINAL_VAR({variable})" if variable else "FINAL_VAR(variable_name)"
    ask = f"Question: {question}\n" if question else ""
    remaining = max_iterations - iteration
    if remaining <= 1:
        parts.append(f"{ask}This is your last turn: reply with FINAL(...) holding your answer.")
    elif repeats:
        parts.append(f"{ask}Do what is said above: change the code, or answer with FINAL(...) if the output "
                     f"already shows the answer. Never send the same code again. {remaining} turns left.")
    elif repeated:
        parts.append(f"{ask}This output is the same as before: running that code again will not help. "
                     "Answer now with FINAL(...) holding the answer the output shows, or, if it does not "
                     f"show it, write different code. {remaining} turns left.")
    else:
        parts.append(f"{ask}Read the output above. If it states the answer to the question, reply with only "
                     "FINAL(the answer) and no code; when the answer is a list or long text your code "
                     f"built in a variable, {final_var}. If it does not, write a new "
                     "```repl block: `grep` for another word of the question, or compute the answer with "
                     f"code over all the matching lines. {remaining} turns left.")
    return "\n\n".join(parts)


_MODULES = frozenset({"re", "json", "math", "collections", "itertools", "statistics", "string", "datetime",
                      "functools", "random", "textwrap", "csv", "heapq", "bisect", "operator", "time", "os",
                      "sys", "unicodedata", "difflib", "fractions", "decimal"})
_NOT_DEFINED = re.compile(r"name '(?P<name>\w+)' is not defined")


_GREP_CALL = re.compile(r"grep\(\s*r?(['\"])(?P<pattern>.*?)\1")
_QUOTED = re.compile(r"'([^'\n]{2,40})'|\"([^\"\n]{2,40})\"")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_-]{3,}")
_COMMON = frozenset("""about after also answer any are been before being both but can could does each every
file find from give have here how into its least line lines list many more most much must number once only
other over record records same should such than that their them then there these they this those through
under very what when where which while whose with would your labelled labeled label common
function functions define defines defined value values integer constant path name names number numbers""".split())
_STR_INDEX = "string indices must be integers"
_ASSIGNS = re.compile(r"^\s*[A-Za-z_][\w, ]*(\[[^\]]*\])?\s*[-+*/|&]?=(?!=)", re.MULTILINE)  # a line that binds a name
_NO_MATCH = "'NoneType' object has no attribute"
_NO_MATCH_HINT = ("It failed because re.search (or re.match) found no match in one of the lines and returned "
                  "None, which has no .group(): write `m = re.search(...)`, then `if m:` before `m.group(1)`, "
                  "as in the examples (some lines, a header for one, do not hold the pattern).")
_EMPTY = re.compile(r"(0|\[\]|set\(\)|\{\}|''|\"\"|0 [A-Za-z].*)", re.DOTALL)


def found_nothing(output: str) -> bool:
    """The output of a cell is an empty result: ``0``, ``[]``, ``set()``, ``0 pairs, ...``."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return len(lines) == 1 and _EMPTY.fullmatch(lines[0].strip()) is not None


def grep_patterns(code: str) -> list[str]:
    """The patterns ``code`` passes to ``grep`` as string literals, in order."""
    return [m.group("pattern") for m in _GREP_CALL.finditer(code)]


def cell_hint(code: str, output: str, error_name: str | None, samples: Sequence[str] = (),
              question: str = "") -> str | None:
    """What to change in a cell that just ran for the first time and failed in a way small models
    do not fix alone (re.search without a match, a str indexed like a dict, a missing import), or
    whose result is empty (``0``, ``[]``, ``0 pairs``: its pattern does not match how the lines
    are written; ``samples``: lines its ``grep`` returns, shown with the regular expressions of the
    code that match none of them, and, where a word of ``question`` is written before a number in
    them, the regular expression that takes that number); None when its output speaks for itself."""
    if error_name is not None:
        if error_name == "AttributeError" and _NO_MATCH in output:
            return _NO_MATCH_HINT
        if error_name == "TypeError" and _STR_INDEX in output:
            return repeat_instruction(error_name=error_name, output=output)
        if error_name == "NameError":
            names = _NOT_DEFINED.findall(output)
            if names and names[-1] in _MODULES:
                return repeat_instruction(error_name=error_name, output=output)
        return None
    if not found_nothing(output):
        return None
    grepped = grep_patterns(code)
    quote = "'" if grepped and '"' in grepped[0] else '"'
    call = f"grep(r{quote}{grepped[0]}{quote})" if grepped else ""
    if not samples:
        look = f"`print({call}[:3])`" if call else "`print(context[:500])`"
        return ("Your code found nothing. Unless nothing is the answer, its pattern does not match how the text "
                f"is written: look at a few lines first, {look}, then write the regular expression from what "
                "they show (the words and punctuation around the value, exactly as printed).")
    flags = re.IGNORECASE if re.search(r"IGNORECASE|re\.I\b", code) else 0
    missing = [p for p in _regex_literals(code) if not any(_matches(p, line, flags) for line in samples)]
    shown = _fenced("\n".join(samples), "text")
    fix = ("write the regular expression from the words and punctuation around the value exactly as these "
           "lines show them, then run the computation again.")
    if missing:
        regexes = " and ".join(f"`{p}`" for p in missing)
        verb = "matches" if len(missing) == 1 else "match"
        fix = f"{regexes} {verb} none of them: {fix}"
        suggestion = number_regex(question, samples)
        if suggestion is not None:
            spelled, regex = suggestion
            fix += f" These lines write `{spelled}`, so for example `re.search(r\"{regex}\", line)`."
    else:
        fix = fix[0].upper() + fix[1:]
    return f"Your code found nothing. These are lines `{call}` returns:\n{shown}\n{fix}"


def number_regex(question: str, samples: Sequence[str]) -> tuple[str, str] | None:
    """Where a word of ``question`` (or its singular; not a quoted one) is written just before a number in ``samples``
    (``User: 93519``, ``user#93519``, ``"user_id": 93519``): that text as the lines write it, and a
    regular expression that takes the number; None when no word of the question is."""
    words: list[str] = []
    quoted = {w.lower() for pair in _QUOTED.findall(question) for w in _WORD.findall(pair[0] or pair[1])}
    for word in _WORD.findall(question):
        if word.lower() in quoted:   # a quoted term is a value asked about (a label), not a field's name
            continue
        for form in (word, word[:-1] if word.lower().endswith("s") else ""):
            if len(form) >= 3 and form.lower() not in _COMMON and form.lower() not in words:
                words.append(form.lower())
    for line in samples:
        for word in words:
            m = re.search(rf"\b({re.escape(word)}\w*)\W{{1,4}}\d+", line, re.IGNORECASE)
            if m:
                return m.group(0), f"{re.escape(m.group(1))}\\D*(\\d+)"
    return None


_RE_CALL = re.compile(r"re\.(?:search|match|fullmatch|findall|finditer)\(\s*r?(['\"])(?P<pattern>.*?)\1")


def _regex_literals(code: str) -> list[str]:
    return list(dict.fromkeys(m.group("pattern") for m in _RE_CALL.finditer(code)))


def _matches(pattern: str, line: str, flags: int) -> bool:
    try:
        return re.search(pattern, line, flags) is not None
    except re.error:
        return True   # a pattern that does not compile here is not called wrong


def search_word(question: str, code: str = "") -> str | None:
    """One word of the question to grep for alone: a quoted term first, else its longest
    uncommon word; never the pattern the code already searched for."""
    tried = {m.group("pattern").lower() for m in _GREP_CALL.finditer(code)}
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
    if error_name == "NameError":
        names = _NOT_DEFINED.findall(output)
        name = names[-1] if names else None
        if name in _MODULES:
            return f"It failed because the module `{name}` is not imported: add `import {name}` as the first line."
        if name:
            return (f"It failed because `{name}` is not defined: assign `{name}` in the same block before using "
                    "it (SHOW_VARS() lists your variables), or, if you know the answer, write FINAL(your "
                    "answer) outside any code block.")
    if error_name == "SyntaxError":
        return ("It is not valid Python: fix the line the error points at. Text that is not code belongs in "
                "quotes, and an answer in words goes outside the code block as FINAL(your answer).")
    if error_name == "AttributeError" and _NO_MATCH in output:
        return _NO_MATCH_HINT
    if error_name == "TypeError" and _STR_INDEX in output:
        return ("It failed because a line is a str, not a dict: `line['key']` does not work. Take the value "
                "out of the line with re.search, for example `re.search(r\"key\\D*(\\d+)\", line).group(1)`, "
                "or, for a line that is a JSON object, `json.loads(line)['key']`.")
    if error_name:
        return (f"It failed with {error_name}: change the line the traceback points at before you send "
                "the block again.")
    if "grep(" in code and not _ASSIGNS.search(code):
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


def nudge_prompt() -> str:
    """The reply had neither a code block nor a FINAL."""
    return (
        "Your reply had no ```repl code block and no FINAL(...). The context is only "
        "reachable through code: write a ```repl block to keep working, or give your answer "
        "as FINAL(your answer)."
    )


def context_restored_note() -> str:
    """The code rebound `context`; the kernel put the original back."""
    return (
        "Note: your code rebound `context`. It has been restored to the original data; "
        "keep your own data in other variables."
    )


def final_request_system() -> str:
    """The system message of the last-chance request (a new, short conversation)."""
    return ("You answer a question about a large document. Code has already searched the document; "
            "you are shown what it printed. You reply with the answer only, as FINAL(answer).")


def final_request_prompt(question: str = "", last_outputs: Sequence[str] = (), variables: Sequence[str] = ()) -> str:
    """The iteration limit is reached (or the same code keeps coming): ask for the answer, with
    the question, the last outputs and the names of the variables the code built (latest first)
    right there (small models answer from what is nearest)."""
    parts = ["You have reached the turn limit. Do not write more code."]
    shown = [out.strip() for out in last_outputs]   # the caller picks them (non-empty, short, distinct)
    if shown:
        label = "The last output of your code" if len(shown) == 1 else "The last outputs of your code"
        parts.append(f"{label}:\n" + "\n".join(_fenced(out, "text") for out in shown))
    names = list(variables)[:FINAL_REQUEST_VARIABLES]
    if names:
        parts.append("Variables your code built, latest first: " + ", ".join(f"`{n}`" for n in names) + ".")
    if question:
        parts.append(f"Question: {question}")
    parts.append("Reply with only FINAL(your answer), the answer taken from what the code found, "
                 "or FINAL_VAR(variable_name) when one of your variables holds the answer (a list, a long "
                 "text). No code block.")
    return "\n\n".join(parts)


def final_var_missing(name: str) -> str:
    """FINAL_VAR named a variable the REPL does not have."""
    return (
        f"FINAL_VAR({name}) failed: there is no variable named `{name}` in the REPL. Call "
        "SHOW_VARS() to see your variables, assign the answer to one, or answer with "
        "FINAL(your answer)."
    )
