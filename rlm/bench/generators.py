"""Seeded benchmark generators: contexts of a given size in CHARACTERS, with known answers.

Each generator is ``fn(size, index, seed) -> BenchItem`` and is deterministic for
``(size, index, seed)`` (``random.Random`` seeded with a string, so independent of
``PYTHONHASHSEED``).  Contexts are at most ``size`` characters and within a few percent of
it.  Surfaces vary between items (needle wording, record formats, label sets, file header
styles, question phrasing) so that a model cannot pattern-match a single format.

* ``s_niah``       one needle (a number, a code word or a key) in a haystack of prose,
                   logs and notes full of distractor numbers; scored by ``contains``.
* ``oolong``       aggregation over labelled records (counts, most/least common label,
                   distinct users); counts scored by ``numeric``, labels by ``exact``.
* ``oolong_pairs`` every pair of users meeting a condition on their records; ``f1_pairs``.
* ``code_qa``      a generated Python code base: a constant's value through imports, the
                   one caller of a function, the file defining a function.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from typing import Callable

from rlm.bench.item import BenchItem

MIN_SIZE = 1000
__all__ = ["GENERATORS", "MIN_SIZE", "PUBLIC", "BenchItem", "generate", "parse_sizes"]


def _rng(name: str, size: int, index: int, seed: int) -> random.Random:
    return random.Random(f"rlm-bench:{name}:{seed}:{size}:{index}")


# ------------------------------------------------------------------ shared vocabulary
_WORDS = ("river", "market", "signal", "harbor", "lantern", "copper", "meadow", "orbit", "velvet", "quarry",
          "ember", "canyon", "thimble", "saffron", "glacier", "mosaic", "pylon", "juniper", "tundra", "cobalt",
          "beacon", "falcon", "willow", "granite", "nectar", "prism", "summit", "tidal", "umber", "vortex")
_VERBS = ("reviewed", "shipped", "delayed", "measured", "approved", "archived", "rebuilt", "audited",
          "discussed", "replaced", "calibrated", "inspected")
_NAMES = ("Amara Osei", "Bruno Keller", "Chen Wei", "Dana Okafor", "Elif Yilmaz", "Farah Haddad", "Goran Petrov",
          "Hana Sato", "Ivan Novak", "Jonas Berg", "Kavya Rao", "Lucia Moretti", "Mateo Silva", "Nadia Karimi")
_TOPICS = ("the Orion project", "warehouse 17", "the Lisbon office", "the night shift", "the blue server room",
           "the harbor crane", "the quarterly audit", "the Kestrel prototype", "the east greenhouse",
           "the archive vault", "the Tuesday choir", "the river survey")


def _sentence(rng: random.Random) -> str:
    n = rng.randint(6, 14)
    words = [rng.choice(_WORDS) for _ in range(n)]
    if rng.random() < 0.3:
        words.insert(rng.randint(0, n), str(rng.randint(2, 99999)))
    return " ".join(words).capitalize() + "."


def _filler_block(rng: random.Random) -> str:
    """One paragraph of one of several styles; many hold numbers (distractors)."""
    style = rng.randrange(4)
    if style == 0:  # prose
        return " ".join(_sentence(rng) for _ in range(rng.randint(2, 5)))
    if style == 1:  # logs
        lines = []
        for _ in range(rng.randint(2, 5)):
            lines.append(f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:"
                         f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} {rng.choice(('INFO', 'WARN', 'DEBUG'))} "
                         f"worker-{rng.randint(1, 9)} {rng.choice(_VERBS)} batch {rng.randint(100, 99999)} "
                         f"in {rng.randint(1, 999)} ms")
        return "\n".join(lines)
    if style == 2:  # meeting notes
        who = rng.choice(_NAMES)
        items = [f"- {rng.choice(_NAMES).split()[0]} {rng.choice(_VERBS)} the {rng.choice(_WORDS)} "
                 f"{rng.choice(_WORDS)} ({rng.randint(1, 400)} units)" for _ in range(rng.randint(2, 4))]
        return f"Notes by {who}:\n" + "\n".join(items)
    # a small table
    rows = [f"| {rng.choice(_WORDS):<9} | {rng.randint(1, 9999):>5} | {rng.choice(_WORDS):<9} |"
            for _ in range(rng.randint(2, 4))]
    return "| item      | count | status    |\n" + "\n".join(rows)


def _haystack(rng: random.Random, size: int) -> list[str]:
    blocks: list[str] = []
    total = 0
    while total < size:
        block = _filler_block(rng)
        blocks.append(block)
        total += len(block) + 2
    return blocks


# ------------------------------------------------------------------ S-NIAH
def _code_word(rng: random.Random) -> str:
    return f"{rng.choice(_WORDS)}-{rng.choice(_WORDS)}-{rng.randint(10, 99)}"


def _needle(rng: random.Random) -> tuple[str, str, str, str]:
    """(needle text, question, expected value, form name)."""
    topic = rng.choice(_TOPICS)
    number = str(rng.randint(1_000_000, 9_999_999))
    form = rng.randrange(6)
    if form == 0:
        return (f"The special magic number for {topic} is {number}.",
                rng.choice((f"What is the special magic number for {topic}?",
                            f"Which special magic number is given for {topic}?")), number, "magic_number")
    if form == 1:
        return (f"2024-05-{rng.randint(1, 28):02d} 09:14:02 NOTICE access code for {topic} set to {number}",
                f"What access code was set for {topic}?", number, "log_line")
    if form == 2:
        return (json.dumps({"record": topic, "secret_code": number}),
                f"According to the document, what is the secret_code of the record for {topic}?", number, "json")
    if form == 3:
        word = _code_word(rng)
        return (f"Remember this: the passphrase for {topic} is '{word}'.",
                f"What is the passphrase for {topic}?", word, "passphrase")
    if form == 4:
        key = f"{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"
        return (f"KEY[{topic}] = {key}", f"Find the key assigned to {topic} (written KEY[...] = ...).", key, "key")
    person = rng.choice(_NAMES)
    return (f"{person} wrote down that the locker combination for {topic} is {number}.",
            f"What locker combination for {topic} did {person} write down?", number, "locker")


def s_niah(size: int, index: int, seed: int) -> BenchItem:
    rng = _rng("s_niah", size, index, seed)
    needle, question, value, form = _needle(rng)
    blocks = _haystack(rng, max(size - len(needle) - 2, 0))
    at = rng.randint(0, len(blocks))
    blocks.insert(at, needle)
    context = _fit("\n\n".join(blocks), size, keep=needle)
    return BenchItem(id=f"s_niah-{size}-{index}", benchmark="s_niah", size=size, question=question,
                     context=context, expected=value, scorer="contains",
                     meta={"needle": needle, "form": form, "position": round(context.find(needle) / len(context), 3)})


def _fit(text: str, size: int, *, keep: str) -> str:
    """Cut ``text`` to ``size`` characters without cutting ``keep`` out."""
    if len(text) <= size:
        return text
    pos = text.find(keep)
    cut = text[:size]
    if pos + len(keep) <= size:
        return cut
    # the needle sits in the tail: move it in front of the cut point
    without = text.replace(keep, "", 1)[: size - len(keep) - 2]
    mid = without.rfind("\n\n", 0, len(without) // 2 + 1)
    mid = mid if mid >= 0 else len(without) // 2
    return without[:mid] + "\n\n" + keep + without[mid:]


# ------------------------------------------------------------------ labelled records (OOLONG)
_LABEL_SETS = {
    "sentiment": ("positive", "negative", "neutral"),
    "topic": ("sports", "finance", "health", "travel", "technology"),
    "priority": ("low", "medium", "high", "urgent"),
    "intent": ("question", "complaint", "praise", "request"),
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class _Record:
    user: int
    label: str
    month: int
    day: int
    text: str


def _record_line(rec: _Record, fmt: int, kind: str) -> str:
    text = rec.text
    if fmt == 0:
        return f"Date: {_MONTHS[rec.month - 1]} {rec.day:02d}, 2023 || User: {rec.user} || {kind.capitalize()}: " \
               f"{rec.label} || Instance: {text}"
    if fmt == 1:
        return json.dumps({"date": f"2023-{rec.month:02d}-{rec.day:02d}", "user_id": rec.user, kind: rec.label,
                           "text": text})
    if fmt == 2:
        return f"[2023-{rec.month:02d}-{rec.day:02d}] user#{rec.user} <{rec.label}> {text}"
    return f'2023/{rec.month:02d}/{rec.day:02d},{rec.user},{rec.label},"{text}"'


_FORMAT_NOTES = ("Each line is one record (date, user, {kind}, text).",
                 "One JSON object per line; the field '{kind}' holds the label.",
                 "Lines read [date] user#ID <{kind}> text.",
                 "CSV without a header: date,user,{kind},text")


def _records(rng: random.Random, size: int, users: list[int], labels: tuple[str, ...], fmt: int,
             kind: str) -> tuple[str, list[_Record]]:
    weights = [rng.uniform(0.5, 2.0) for _ in labels]
    header = f"Records ({kind} labels: {', '.join(labels)}). {_FORMAT_NOTES[fmt].format(kind=kind)}"
    lines, recs, total, misses = [header], [], len(header), 0
    while misses < 20:  # near the end, shorter records may still fit
        rec = _Record(user=rng.choice(users), label=rng.choices(labels, weights)[0], month=rng.randint(1, 12),
                      day=rng.randint(1, 28), text=_sentence(rng).replace('"', ""))
        line = _record_line(rec, fmt, kind)
        if total + len(line) + 1 > size:
            misses += 1
            continue
        lines.append(line)
        recs.append(rec)
        total += len(line) + 1
    return "\n".join(lines), recs


def _user_ids(rng: random.Random, n: int) -> list[int]:
    return rng.sample(range(1000, 99999), n)


def oolong(size: int, index: int, seed: int) -> BenchItem:
    rng = _rng("oolong", size, index, seed)
    kind = rng.choice(sorted(_LABEL_SETS))
    labels = _LABEL_SETS[kind]
    fmt = rng.randrange(4)
    users = _user_ids(rng, max(5, min(2000, size // 500)))
    context, recs = _records(rng, size, users, labels, fmt, kind)
    counts = Counter(r.label for r in recs)
    for label in labels:
        counts.setdefault(label, 0)
    ranked = counts.most_common()
    options = ["count", "count_month", "distinct_users"]
    if len(ranked) > 1 and ranked[0][1] != ranked[1][1]:
        options.append("most")
    if len(ranked) > 1 and ranked[-1][1] != ranked[-2][1]:
        options.append("least")
    q = rng.choice(options)
    label = rng.choice(labels)
    if q == "count":
        question = rng.choice((f"How many records have the {kind} label '{label}'?",
                               f"Count the records labelled {label}. Answer with a number."))
        expected, scorer = str(counts[label]), "numeric"
    elif q == "count_month":
        month = rng.randint(1, 12)
        n = sum(1 for r in recs if r.label == label and r.month == month)
        question = f"How many records dated in {_MONTHS[month - 1]} 2023 are labelled '{label}'?"
        expected, scorer = str(n), "numeric"
    elif q == "distinct_users":
        n = len({r.user for r in recs if r.label == label})
        question = f"How many distinct users have at least one record labelled '{label}'?"
        expected, scorer = str(n), "numeric"
    elif q == "most":
        question = rng.choice((f"Which {kind} label is the most common among the records?",
                               f"Which label occurs most often? Answer with one of: {', '.join(labels)}."))
        expected, scorer = ranked[0][0], "exact"
    else:
        question = f"Which {kind} label is the least common among the records? Answer with the label only."
        expected, scorer = ranked[-1][0], "exact"
    return BenchItem(id=f"oolong-{size}-{index}", benchmark="oolong", size=size, question=question, context=context,
                     expected=expected, scorer=scorer,
                     meta={"question_type": q, "format": fmt, "label_kind": kind, "records": len(recs),
                           **({"label": label} if q in ("count", "count_month", "distinct_users") else {})})


def oolong_pairs(size: int, index: int, seed: int) -> BenchItem:
    rng = _rng("oolong_pairs", size, index, seed)
    kind = rng.choice(sorted(_LABEL_SETS))
    labels = _LABEL_SETS[kind]
    fmt = rng.randrange(4)
    n_users = max(6, min(30, 6 + size // 8000))
    users = _user_ids(rng, n_users)
    context, recs = _records(rng, size, users, labels, fmt, kind)
    by_user: dict[int, Counter] = {u: Counter() for u in users}
    for r in recs:
        by_user[r.user][r.label] += 1
    present = [u for u in users if by_user[u]]
    attempts: list[tuple[str, str, str | None]] = []
    for a in labels:
        attempts.append(("both", a, None))
        for other in labels:
            if a != other:
                attempts.append(("both_two", a, other))
                attempts.append(("without", a, other))
    rng.shuffle(attempts)
    cond: tuple[str, str, str | None] = ("both", labels[0], None)
    question, pairs = "", []
    for cond in attempts:
        mode, a, b = cond
        if mode == "both":
            ok = [u for u in present if by_user[u][a] > 0]
            text = f"both users have at least one record labelled '{a}'"
        elif mode == "both_two":
            ok = [u for u in present if by_user[u][a] > 0 and by_user[u][b] > 0]
            text = f"both users have records labelled '{a}' and records labelled '{b}'"
        else:
            ok = [u for u in present if by_user[u][a] > 0 and by_user[u][b] == 0]
            text = f"both users have a record labelled '{a}' and neither has any record labelled '{b}'"
        pairs = [sorted(p) for p in combinations(sorted(ok), 2)]
        if pairs and len(pairs) < len(present) * (len(present) - 1) // 2:
            question = (f"List every pair of user ids such that {text}. Give each pair once, "
                        "as (smaller id, larger id), one pair per line.")
            break
    if not question:  # tiny contexts: fall back to the plain condition
        mode, a, b = cond = ("both", labels[0], None)
        ok = [u for u in present if by_user[u][a] > 0]
        pairs = [sorted(p) for p in combinations(sorted(ok), 2)]
        question = (f"List every pair of user ids such that both users have at least one record labelled '{a}'. "
                    "Give each pair once, as (smaller id, larger id), one pair per line.")
    return BenchItem(id=f"oolong_pairs-{size}-{index}", benchmark="oolong_pairs", size=size, question=question,
                     context=context, expected=[list(p) for p in pairs], scorer="f1_pairs",
                     meta={"condition": list(cond), "format": fmt, "label_kind": kind, "records": len(recs),
                           "users": len(present), "pairs": len(pairs)})


# ------------------------------------------------------------------ CodeQA
_PACKAGES = ("billing", "ingest", "render", "scheduler", "auth", "storage", "metrics", "search")
_NOUNS = ("invoice", "ledger", "token", "queue", "report", "cache", "session", "widget", "record", "batch",
          "quota", "index", "shard", "payload", "account", "event")
_FVERBS = ("load", "save", "compute", "merge", "split", "validate", "render", "flush", "resolve", "encode",
           "decode", "rotate", "sync", "prune", "score", "build")
_HEADERS = ("# ===== file: {path} =====", "==> {path} <==", "--- {path} ---", "### FILE {path}")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def code_qa(size: int, index: int, seed: int) -> BenchItem:
    rng = _rng("code_qa", size, index, seed)
    header = rng.choice(_HEADERS)
    camel = rng.random() < 0.3
    used: set[str] = set()

    def fresh(prefix: str = "") -> str:
        while True:
            name = f"{prefix}{rng.choice(_FVERBS)}_{rng.choice(_NOUNS)}"
            if rng.random() < 0.5:
                name += f"_{rng.choice(_NOUNS)}"
            name = _camel(name) if camel and not prefix else name
            if name not in used:
                used.add(name)
                return name

    constants: dict[str, tuple[str, int, str]] = {}   # NAME -> (module path, value, expression)
    functions: dict[str, str] = {}                    # function -> module path
    const_names: list[str] = []                       # insertion order, for cheap random choice
    func_names: list[str] = []
    callers: dict[str, list[str]] = {}                # callee -> callers
    files: list[str] = []
    total = 0
    k = 0
    while True:
        pkg = rng.choice(_PACKAGES)
        path = f"{pkg}/{rng.choice(_NOUNS)}_{k}.py"
        lines = [header.format(path=path), f'"""{rng.choice(_NOUNS).capitalize()} helpers for {pkg}."""', ""]
        imports: list[str] = []
        body: list[str] = []
        for _ in range(rng.randint(1, 2)):   # constants, some defined from earlier ones
            cname = f"{rng.choice(_NOUNS).upper()}_{rng.choice(('LIMIT', 'SIZE', 'COUNT', 'TTL', 'RATE'))}_{k}"
            if const_names and rng.random() < 0.6:
                ref = rng.choice(const_names)
                ref_path, ref_value, _ = constants[ref]
                delta = rng.randint(2, 40)
                op = rng.choice(("+", "*"))
                value = ref_value + delta if op == "+" else ref_value * min(delta, 5)
                expr = f"{ref} {op} {delta if op == '+' else min(delta, 5)}"
                if ref_path != path:
                    imports.append(f"from {ref_path[:-3].replace('/', '.')} import {ref}")
            else:
                value = rng.randint(3, 500)
                expr = str(value)
            if cname not in constants:
                const_names.append(cname)
            constants[cname] = (path, value, expr)
            body.append(f"{cname} = {expr}")
        body.append("")
        for _ in range(rng.randint(2, 4)):
            fname = fresh()
            functions[fname] = path
            func_names.append(fname)
            callee = rng.choice(func_names) if len(func_names) > 1 and rng.random() < 0.5 else None
            if callee == fname:
                callee = None
            arg = rng.choice(("items", "data", "value", "ctx"))
            doc = f'    """{rng.choice(_FVERBS).capitalize()} the {rng.choice(_NOUNS)} for {rng.choice(_WORDS)}."""'
            stmts = [f"def {fname}({arg}):", doc,
                     f"    total = len({arg}) if hasattr({arg}, '__len__') else {rng.randint(1, 9)}"]
            if callee:
                callers.setdefault(callee, []).append(fname)
                stmts.append(f"    total += {callee}({arg})")
                if functions[callee] != path:
                    imports.append(f"from {functions[callee][:-3].replace('/', '.')} import {callee}")
            stmts.append(f"    return total * {rng.randint(2, 7)}")
            body.extend(stmts + [""])
        text = "\n".join(lines + sorted(set(imports)) + [""] + body)
        if total + len(text) + 1 > size and files:
            # forget what this file defined
            for name in [n for n, v in constants.items() if v[0] == path]:
                del constants[name]
            for name in [n for n, p in functions.items() if p == path]:
                del functions[name]
            for callee in list(callers):
                callers[callee] = [c for c in callers[callee] if c in functions]
                if not callers[callee] or callee not in functions:
                    del callers[callee]
            break
        files.append(text)
        total += len(text) + 1
        k += 1
    context = "\n".join(files)
    while True:  # pad with comment lines up to the size
        line = f"\n# note: {_sentence(rng)}"
        if len(context) + len(line) > size:
            break
        context += line
    chained = [n for n, (_p, _v, e) in constants.items() if not e.isdigit()]
    single_callers = [c for c, who in callers.items() if len(who) == 1]
    options = ["defined_in"] + (["constant"] if chained else []) + (["caller"] if single_callers else [])
    q = rng.choices(options, weights=[{"defined_in": 1, "constant": 2, "caller": 2}[o] for o in options])[0]
    if q == "constant":
        name = rng.choice(sorted(chained))
        path, value, _ = constants[name]
        question = rng.choice((f"What is the integer value of the constant {name} defined in {path}?",
                               f"Evaluate {name} (from {path}); follow imports across files. Answer with a number."))
        expected, scorer = str(value), "numeric"
    elif q == "caller":
        callee = rng.choice(sorted(single_callers))
        question = f"Which function in this code base calls {callee}()? Answer with the function name."
        expected, scorer = callers[callee][0], "contains"
    else:
        fname = rng.choice(sorted(functions))
        question = rng.choice((f"In which file is the function {fname} defined? Answer with the file path.",
                               f"Give the path of the file that defines {fname}()."))
        expected, scorer = functions[fname], "contains"
    return BenchItem(id=f"code_qa-{size}-{index}", benchmark="code_qa", size=size, question=question,
                     context=context, expected=expected, scorer=scorer,
                     meta={"question_type": q, "files": len(files), "header": header.split("{")[0].strip()})


def _demo(size: int, index: int, seed: int) -> BenchItem:
    from rlm.bench.demo import demo

    return demo(size, index, seed)


GENERATORS: dict[str, Callable[[int, int, int], BenchItem]] = {
    "s_niah": s_niah, "oolong": oolong, "oolong_pairs": oolong_pairs, "code_qa": code_qa, "demo": _demo}


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_sizes(text: str) -> list[int]:
    """'8k,32k,1m' -> [8000, 32000, 1000000] (characters; k = 1000, m = 1000000)."""
    from rlm.errors import UsageError

    sizes: list[int] = []
    for part in [p for p in str(text).split(",") if p.strip()]:
        m = _SIZE.match(part)
        if not m:
            raise UsageError(f"cannot read the size {part.strip()!r}",
                             hint="sizes are characters, comma-separated, with an optional k (1000) or "
                                  "m (1000000) suffix, e.g. --sizes 8k,32k,1m")
        value = int(float(m.group(1)) * {"": 1, "k": 1000, "m": 1_000_000}[m.group(2).lower()])
        if value < MIN_SIZE:
            raise UsageError(f"size {part.strip()} is {value} characters; the smallest is {MIN_SIZE}")
        sizes.append(value)
    if not sizes:
        raise UsageError("no sizes given", hint="e.g. --sizes 8k,32k")
    return list(dict.fromkeys(sizes))


def generate(name: str, sizes: list[int], n: int, seed: int, split: str | None = None) -> list[BenchItem]:
    """``n`` items per size of benchmark ``name``: of ``split`` (dev or test, see
    :mod:`rlm.bench.splits`) when given, else the first ``n`` items whatever their split.
    ``hotpotqa`` and ``squad`` read the public data (:mod:`rlm.bench.qa`)."""
    import dataclasses

    from rlm.bench import splits

    splits.check_split(split)
    if name in PUBLIC:
        from rlm.bench.qa import generate_public

        return generate_public(name, sizes, n, seed, split)
    fn = GENERATORS[name]
    chosen = list(splits.indices(name, seed, n, split))
    return [dataclasses.replace(item, split=splits.split_of(name, splits.generated_key(seed, i)))
            for size in sizes for i in chosen for item in (fn(size, i, seed),)]


PUBLIC = ("hotpotqa", "squad")   # questions written by people (rlm.bench.qa), read from the cached wheel
