"""The words the root model reads: the system prompt and the per-turn user messages.

The system prompt is the product's main prompt.  It tells the model what `context` is
(metadata and a short preview only; the model never sees the data itself), how the REPL
works, which functions exist under which budgets, how to finish, and that its first reply
must be a single ```repl block (small models need to be told).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rlm.core.parsing import fenced
from rlm.sandbox.contexts import OtherContext

PREVIEW_CHARS = 500
NO_OUTPUT = "(no output)"   # what the model is shown for a cell that printed nothing
FINAL_REQUEST_VARIABLES = 8  # variable names shown in the last-chance request
PATHS_SHOWN = 20   # a folder's first paths listed in the system prompt
PATH_CHARS = 200   # a longer path is cut in that listing


@dataclass(frozen=True)
class ContextInfo:
    """Metadata about the context; produced by the context loader."""

    kind: str          # "str" | "list" | "dict" | ...
    total_chars: int
    n_documents: int
    preview: str
    source: str        # file name or "inline"
    n_files: int = 0   # a folder: how many files (each a document with .path)
    paths: tuple[str, ...] = ()   # a folder: its first files' paths, relative to it, in context's order
    others: tuple[OtherContext, ...] = ()   # later contexts of a session: context_1, context_2, ...


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
        _decomposition_section(),
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
    if info.n_files:
        shown = "\n".join(path[:PATH_CHARS] for path in info.paths[:PATHS_SHOWN])
        more = info.n_files - min(len(info.paths), PATHS_SHOWN)
        lines += [f"- files: {info.n_files:,}; the paths of the first {min(len(info.paths), PATHS_SHOWN)}"
                  f"{f' ({more:,} more: print [d.path for d in context])' if more > 0 else ''}:",
                  fenced(shown, "text")]
    if budgets.enable_sub_calls:
        lines.append(f"- `map_chunks` over the whole context: {info.total_chars:,} characters cut into pieces that "
                     "fit the sub-model's window, one sub-call per piece")
    lines += [
        f"- preview (first {PREVIEW_CHARS} characters at most; NOT the whole context):",
        fenced(shorten_preview(info.preview), "text"),
    ]
    if info.others:
        lines += ["", "## More contexts", "Later questions brought more contexts; each is a variable of its own "
                  "(`context` is still the first). grep, search and map_chunks read `context` unless given "
                  "`text=`, e.g. `grep('x', text=context_1)`."]
        lines += [f"- `{o.name}`: {o.kind}, {o.total_chars:,} characters, {o.n_documents:,} documents; "
                  f"source: {o.source}" for o in info.others]
    return "\n".join(lines)


def _shape_hint(info: ContextInfo) -> str:
    if info.n_files:
        return (f"`context` is a list of {info.n_documents:,} documents, one per file of a folder. Each is "
                "the file's text (a str) with `.path`, the file's path in the folder: `context[i].path`. "
                "The lines `grep` returns and the passages of `search` carry `.path` too, the file they "
                "come from.")
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
        "`pattern`: the heading, entry or part it is under (`line.before(r\"^Chapter\")`). "
        "`len(grep(p))` counts matching lines.",
        "- `search(query, k=5) -> list[str]`: the `k` passages of `context` (paragraphs, or lines when "
        "it has no blank lines, cut to about 400 characters: print them whole) that best match the words of `query`, best first (BM25 ranking, not "
        "exact matching). Each is a str with `.offset` (where it starts in its document), `.index` (the "
        "document's number when `context` is a list, else None), `.score` and `.around(before, after)`. "
        "Use it when you do not know how the text words what you need.",
    ]
    if budgets.enable_sub_calls:
        lines += [
            "- `llm_query(prompt, model=None) -> str`: ask a sub-model. It sees only the "
            f"prompt you pass (at most {budgets.max_sub_call_chars:,} characters), so put "
            "the question and the text it needs into the prompt.",
            "- `llm_query_batched(prompts, model=None) -> list[str]`: many prompts at once, "
            "answered in parallel, in order; much faster than a loop of `llm_query`.",
            "- `map_chunks(instruction, text=None, chunk_chars=None) -> list[str]`: "
            "cuts `context` (or `text`) into pieces at line ends (sized to fit the sub-model's window "
            "unless `chunk_chars` is given) and asks the sub-model "
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
        "1. The preview at the end of this message shows how the context begins. Start at once: "
        "`search` with the key words of the question, or `grep` for a name or number it gives, and "
        "print what comes back (a few hits, short).",
        "2. Read the passages that came back. When they hold the answer, answer. When they hold only "
        "part of it, search again with what you learned (see \"Questions in several steps\").",
        "3. To count, add up, compare or collect over many places: write code over ALL the matching "
        "lines (`len`, `collections.Counter`, `re.search` on each line, a `set`), print the result and "
        "a few of the lines it used, check them, then answer with the computed value. Never count by "
        "reading printed samples.",
    ]
    if budgets.enable_sub_calls:
        steps.append(
            "4. When no pattern can find the answer (it depends on what the text means): pass the "
            "passages you found to `llm_query` with the question, or use `map_chunks`, then combine "
            "the answers with code."
        )
    return "## How to work\n" + "\n".join(steps) + (
        "\nUse code for exact work (counting, matching, arithmetic). Do not guess: if you "
        "have not seen the evidence in the output, look for it."
    )


def _finishing_section() -> str:
    return (
        "## Finishing\n"
        "When you are sure, write FINAL(...) in your reply, outside any code block, with the answer "
        "itself inside the parentheses, exactly as it should be returned: `FINAL(14 June)`. The answer "
        "only: no explanation, no restating the question. To answer "
        "with a value you built in the REPL, write FINAL_VAR and the variable's name: `FINAL_VAR(names)`. "
        "Both also work as calls inside a code block, `FINAL_VAR(\"names\")`. The first FINAL ends the "
        "run, so do not write it before you have checked the answer; a name you never assigned, or "
        "`None`, is not an answer."
    )


def _example_section(budgets: Budgets) -> str:
    """Short worked examples on material no benchmark uses (a ship's logbook, a collection of recipes,
    a notebook of sky observations): a lookup, the part of the text a line is in, a count, a list."""
    lookup = "hits = search(\"lookout sighted Flores\", k=3)\nfor h in hits:\n    print(h.offset, h)\n"
    if budgets.enable_sub_calls:
        lookup += ("print(llm_query(\"On which day of the voyage was Flores first sighted? Passages:\\n\" + "
                   "\"\\n---\\n\".join(hits)))")
        seen = ("`48211 Day 14. At first light the lookout sighted Flores off the starboard bow ...` and "
                "`Day 14`")
    else:
        seen = "`48211 Day 14. At first light the lookout sighted Flores off the starboard bow ...`"
    enclosing = "\n".join([
        "for h in grep(r\"storm sail\")[:10]:",
        "    print(repr(h), \"| under:\", h.before(r\"^Watch\"))",
    ])
    count = "\n".join([
        "import re",
        "nights = set()",
        "for line in grep(r\"seeing[: ]+poor\"):",
        "    m = re.search(r\"\\d{4}-\\d\\d-\\d\\d\", line)   # the preview's entries start with a date",
        "    if m:",
        "        nights.add(m.group(0))",
        "print(len(nights), \"nights, e.g.\", sorted(nights)[:3])",
    ])
    both = "\n".join([
        "def dishes(word):",
        "    return {h.before(r\"^Recipe:\").strip() for h in grep(word)}",
        "names = sorted(dishes(\"cardamom\") & dishes(\"rose water\"))   # a - b: in a but not in b",
        "print(len(names), \"dishes, all in the variable names:\", names[:3])",
    ])
    return (
        "## Examples (on other material: adapt the idea, never the words)\n"
        "Question: \"On which day of the voyage was Flores first sighted?\"\n"
        + fenced(lookup, "repl")
        + f"\nThe output shows {seen}, so: `FINAL(Day 14)`\n"
        "Question: \"During which watch was the storm sail set?\"\n"
        + fenced(enclosing, "repl")
        + "\nThe output shows `'02:40 storm sail set, wind rising' | under: Watch: middle`, so: `FINAL(middle)`\n"
        "Question: \"On how many nights was the seeing poor?\"\n"
        + fenced(count, "repl")
        + "\nThe output shows `23 nights, e.g. ['1998-01-04', '1998-01-19', '1998-02-02']`, so: `FINAL(23)`\n"
        "Question: \"Which dishes use both cardamom and rose water?\"\n"
        + fenced(both, "repl")
        + "\nThe output shows `4 dishes, all in the variable names: ['Recipe: Kheer', ...]`. All four are the "
        "answer, and `names` holds them, so: `FINAL_VAR(names)`"
    )


def _decomposition_section() -> str:
    """The general pattern of a question that needs several lookups: find A, then A's property."""
    first = "for h in search(\"comet brightest January\", k=3):\n    print(h.offset, h)"
    second = "for h in search(\"Arend tail length\", k=3):\n    print(h.offset, h)"
    return (
        "## Questions in several steps\n"
        "Some questions name a thing only through another fact (\"the tail length of the comet that was "
        "brightest in January\"). Split them: first find the thing, then look up its property with a new "
        "search that names it. Never answer the second step from the first step's passages alone.\n"
        "Question: \"How long was the tail of the comet that was brightest in January?\"\n"
        + fenced(first, "repl")
        + "\nThe output shows `9310 Jan 12: comet Arend now the brightest object in the east ...`: the comet is "
        "Arend. Next turn:\n"
        + fenced(second, "repl")
        + "\nThe output shows `15202 Arend's tail stretched some 12 degrees ...`, so: `FINAL(12 degrees)`"
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


def first_user_prompt(question: str, *, ending: str | None = None, advice: Sequence[str] = (),
                      sub_calls: bool = False) -> str:
    """The first user message: the question, how to begin (``ending``, when the run's policy has a
    rule for the first turn), and any advice its rules give.  ``sub_calls``: the run may call
    ``llm_query``, and the neutral start says to let it read what the search found."""
    start = ending or ("Reply with a single ```repl block that looks into `context` for what the question "
                       "needs: `search` for passages about it, `grep` for an exact name, and print what you find"
                       + (", then ask `llm_query` the question over those passages and print its reply."
                          if sub_calls else "."))
    return "\n\n".join([f"Question: {question}", start, *advice])


def turn_prompt(outputs: list[tuple[str, str]], advice: Sequence[str] = (), *, question: str = "",
                ending: str | None = None, turns_left: int = 1) -> str:
    """What the code of a turn printed, what the policy's rules say about it, and what to do next.

    ``outputs`` holds (code, output) pairs; the output is already truncated.  The code is not
    echoed (it is in the model's own reply; small models copy what they are shown).  The
    question is repeated every turn.  ``ending``: the closing instruction a rule gave, else the
    neutral one.
    """
    parts = []
    if not outputs:
        parts.append("(no code ran)")
    for n, (_code, output) in enumerate(outputs, start=1):
        label = f"Output of block {n}" if len(outputs) > 1 else "Output"
        parts.append(f"{label}:\n{fenced(output if output.strip() else NO_OUTPUT, 'text')}")
    parts.extend(a for a in advice if a)
    close = ending or ("If the outputs hold the answer, reply with only FINAL(...) holding it, and no code. "
                       f"If they do not, write a new ```repl block. {turns_left} turns left.")
    parts.append(f"Question: {question}\n{close}" if question else close)
    return "\n\n".join(parts)


def nudge_prompt() -> str:
    """The reply had neither a code block nor a FINAL (and no rule of the policy said more)."""
    return ("Your reply had no ```repl block and no FINAL(...): write a ```repl block, or give the answer as "
            "FINAL(...).")


def not_taken(source: str) -> str:
    """An answer the loop did not take, when no rule of the policy said why."""
    return f"{source} was not taken: it is not an answer."


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
    parts.append("Reply with only FINAL(...) holding the answer taken from what the code found, or FINAL_VAR "
                 "and a variable's name when one of your variables holds it (a list, a long text). No code block.")
    return "\n\n".join(parts)
