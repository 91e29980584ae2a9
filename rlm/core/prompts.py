"""The words the root model reads: the system prompt and the per-turn user messages.

The system prompt is the product's main prompt.  It tells the model what `context` is
(metadata and a short preview only; the model never sees the data itself), how the REPL
works, which functions exist under which budgets, how to finish, and that its first reply
must be a single ```repl block (small models need to be told).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rlm.core.hints import constant_name, csv_field, number_regex
from rlm.core.parsing import fenced
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
        fenced(shorten_preview(info.preview), "text"),
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
        "before, 300 after); `line.before(pattern)` is the nearest line at or above it that matches "
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
        "file header as the preview shows it, `def `, a heading), as in the second and third examples.",
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
    """Short worked examples (a lookup, the section a line is in, the function that calls another, the
    value of a constant defined from others, a filtered count, a comparison, distinct ids, pairs), for
    questions unlike the real one."""
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
    caller = "\n".join([
        "for h in grep(r\"parse_date\\(\"):   # \\( : a call, not an import",
        "    print(repr(h), \"is in\", h.before(r\"def \"))",
    ])
    constant = "\n".join([
        "values = {}   # every constant assignment of the code, run in the REPL: imports are followed",
        "for _ in range(3):   # again: a definition may use a name assigned further down",
        "    for line in grep(r\"^[A-Z][A-Z0-9_]* *= \"):",
        "        try:",
        "            exec(line, values)",
        "        except Exception:",
        "            pass",
        "print(values.get(\"RETRY_LIMIT\"), grep(r\"^RETRY_LIMIT *= \"))",
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
        + fenced(lookup, "repl")
        + f"\nThe output shows {seen}, so: `FINAL(8443)`\n"
        "Question: \"In which section is the backup schedule described?\"\n"
        + fenced(enclosing, "repl")
        + "\nThe output shows `'Backups run nightly at 02:00.' is in ## Operations`, so: `FINAL(Operations)`\n"
        "Question: \"Which function calls parse_date()?\"\n"
        + fenced(caller, "repl")
        + "\nThe output shows `'def parse_date(text):' is in def parse_date(text):` (its own definition) and "
        "`'    day = parse_date(row[0])' is in def load_rows(path):`, so: `FINAL(load_rows)`\n"
        "Question: \"What is the value of the constant RETRY_LIMIT defined in net/config.py?\"\n"
        + fenced(constant, "repl")
        + "\nThe output shows `40 ['RETRY_LIMIT = BASE_RETRIES * 4']`, so: `FINAL(40)`\n"
        "Question: \"How many orders were refunded in March?\"\n"
        + fenced(count, "repl")
        + "\nThe output shows `212 refund lines, 17 in March` and five March lines that are refunds, "
        "so: `FINAL(17)`\n"
        "Question: \"Which region is named least often: north, south or east?\"\n"
        + fenced(compare, "repl")
        + "\nThe output shows `{'north': 41, 'south': 12, 'east': 30} least often: south`, so: `FINAL(south)`\n"
        "Question: \"How many different customers asked for a refund?\"\n"
        + fenced(distinct, "repl")
        + "\nThe output shows `38 customers: ['1021', '1187', '1230', '1302', '1456']`, so: `FINAL(38)`\n"
        "Question: \"List every pair of customers who asked for both a refund and a discount.\"\n"
        + fenced(pairs, "repl")
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


# --------------------------------------------------------------------------- user messages


def first_user_prompt(question: str, *, sub_calls: bool = True, preview: str = "") -> str:
    """The first user message: the question, and how to begin (with, when the preview writes a
    word of the question before a number, the regular expression that takes it, or, when its
    lines are comma-separated fields that a header names, which field is the question's)."""
    lines = preview.splitlines()
    found = number_regex(question, lines)
    field = csv_field(question, lines) if found is None else None
    spelled = (f" The preview writes `{found[0]}`: `re.search(r\"{found[1]}\", line)` takes that number "
               "from a line." if found else
               f" The preview's lines are comma-separated fields, `{field[0]}`: `line.split(\",\")[{field[1]}]` "
               f"is the {field[2]} of a line." if field else "")
    fact = ("`grep` for a distinctive word of the question and pass the text around the lines to "
            "`llm_query` with the question, as in the first example" if sub_calls else
            "`grep` for a distinctive word of the question and print the lines")
    constant = constant_name(question, lines)
    if constant is not None:   # a value the code computes: the lookup example's sub-model would guess it
        return (f"Question: {question}\n\nReply with a single ```repl block. `{constant}` is a constant of the "
                "code: run the code's assignments as in the fourth example, and print "
                f"`values.get(\"{constant}\")`.")
    return (
        f"Question: {question}\n\n"
        f"Reply with a single ```repl block. For a fact: {fact}. For the file, function or section "
        "a line is in: print `h.before(pattern)` next to each line, as in the second and third examples. For "
        "the value of a constant in code: run the code's assignments, as in the fourth. To count, compute or "
        "list: code over all the matching lines, as in the examples after it."
        + spelled
    )


def iteration_prompt(outputs: list[tuple[str, str]], iteration: int, max_iterations: int, *,
                     question: str = "", repeated: bool = False, repeats: list[str] | None = None,
                     hints: list[str] | None = None, variable: str | None = None, failed: bool = False) -> str:
    """What the code of turn ``iteration`` (1-based) printed, and what to do next.

    ``outputs`` holds (code, output) pairs; the output is already truncated.  The code is not
    echoed (it is in the model's own reply; small models copy what they are shown).  The
    question is repeated every turn; ``repeated``: every output was seen before in this run;
    ``repeats``: what to change in blocks that repeat earlier code (from ``repeat_notice``);
    ``hints``: what to change in blocks that failed or found nothing (from ``cell_hint``);
    ``variable``: the variable the last cell built, named where the model is told how to
    answer with one (small models copy a placeholder such as ``variable_name`` literally);
    ``failed``: a block of this turn raised an error.
    """
    parts = []
    if not outputs:
        parts.append("(no code ran)")
    for n, (_code, output) in enumerate(outputs, start=1):
        label = f"Output of block {n}" if len(outputs) > 1 else "Output"
        parts.append(f"{label}:\n{fenced(output if output.strip() else NO_OUTPUT, 'text')}")
    parts.extend(hints or [])
    parts.extend(repeats or [])
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
        search = ("`grep` for another word of the question, or compute the answer with code over all the matching "
                  f"lines. {remaining} turns left.")
        if variable:   # a result the code built: answering with the variable is the likely next step
            parts.append(f"{ask}Read the output above. If it states the answer to the question, reply with only "
                         "FINAL(the answer) and no code; when the answer is a list or long text your code built "
                         f"in a variable, FINAL_VAR({variable}). If it does not, write a new ```repl block: {search}")
        elif failed:   # a traceback holds no answer to read off
            parts.append(f"{ask}Read the output above. If it states the answer to the question, reply with only "
                         f"FINAL(the answer) and no code. If it does not, write a new ```repl block: {search}")
        else:          # asked outright, small models read the answer off the output instead of searching again
            parts.append(f"{ask}What is the answer, according to this output? Reply with only FINAL(the answer). "
                         f"If the output does not hold it, write a new ```repl block instead: {search}")
    return "\n\n".join(parts)


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
        parts.append(f"{label}:\n" + "\n".join(fenced(out, "text") for out in shown))
    names = list(variables)[:FINAL_REQUEST_VARIABLES]
    if names:
        parts.append("Variables your code built, latest first: " + ", ".join(f"`{n}`" for n in names) + ".")
    if question:
        parts.append(f"Question: {question}")
    parts.append("Reply with only FINAL(your answer), the answer taken from what the code found, "
                 "or FINAL_VAR(variable_name) when one of your variables holds the answer (a list, a long "
                 "text). No code block.")
    return "\n\n".join(parts)


def placeholder_answer(text: str) -> str:
    """FINAL held the instructions' stand-in for an answer (``your answer``), not an answer."""
    return (f"FINAL({text.strip()}) was not taken: `{text.strip()}` is the stand-in the instructions use. "
            "Write the answer itself inside the parentheses, as the output shows it, for example FINAL(42).")


def question_name_answer(text: str) -> str:
    """FINAL held only a name the question itself gives (asked which function calls ``f()``, the
    answer ``f``); said after the output the model read, shown again.  (An invitation to send the
    name again if it is the answer made the 1.5B model search again instead.)"""
    name = text.strip()
    return (f"FINAL({name}) was not taken. The answer is not `{name}`: that is the name the question asks "
            "about. Which other name or value in this output answers the question?")


def count_for_list_answer(text: str, variable: str | None) -> str:
    """FINAL held a number where the question asks for a list (``FINAL(91)`` for "List every
    pair ..."): the items are the answer, not how many there are."""
    where = (f"If `{variable}` holds the list, write FINAL_VAR({variable}); else build the list in a "
             "variable and answer with FINAL_VAR and its name." if variable else
             "Build the list in a variable, one item per line, and answer with FINAL_VAR and its name.")
    return (f"FINAL({text.strip()}) was not taken: the question asks for the list itself, every item, "
            f"not how many there are. {where}")


def empty_answer() -> str:
    """The answer was empty (``FINAL_VAR(answer)`` of a variable that holds nothing)."""
    return ("The answer was empty, so it was not taken. If your code found nothing, its pattern does not match "
            "how the text is written: print a few lines of `context`, fix the code and run it again.")


def final_var_missing(name: str) -> str:
    """FINAL_VAR named a variable the REPL does not have."""
    return (
        f"FINAL_VAR({name}) failed: there is no variable named `{name}` in the REPL. Call "
        "SHOW_VARS() to see your variables, assign the answer to one, or answer with "
        "FINAL(your answer)."
    )
