"""Benchmark generators: deterministic per seed, sized in characters, varied, with correct answers."""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from itertools import combinations

import pytest

from rlm.bench.generators import GENERATORS, generate, parse_sizes
from rlm.bench.scorers import score
from rlm.errors import UsageError


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_deterministic_per_seed(name: str) -> None:
    a = generate(name, [4000, 12000], 3, seed=7)
    b = generate(name, [4000, 12000], 3, seed=7)
    c = generate(name, [4000, 12000], 3, seed=8)
    assert a == b
    assert [i.context for i in a] != [i.context for i in c]
    assert len({i.id for i in a}) == len(a)


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("size", [1000, 8000, 50000])
def test_sizes_are_characters(name: str, size: int) -> None:
    for item in generate(name, [size], 3, seed=1):
        assert item.size == size
        assert 0.85 * size <= len(item.context) <= size, (item.id, len(item.context))


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_expected_answer_scores_full_marks(name: str) -> None:
    for item in generate(name, [6000], 8, seed=3):
        assert score(item.scorer, item.expected if isinstance(item.expected, str) else
                     "\n".join(f"({a}, {b})" for a, b in item.expected), item.expected) == 1.0


def test_surfaces_vary() -> None:
    forms = {i.meta["form"] for i in generate("s_niah", [3000], 40, seed=0)}
    assert len(forms) >= 5
    questions = {re.sub(r"\d+|'[^']*'", "#", i.question)[:30] for i in generate("oolong", [6000], 30, seed=0)}
    assert len(questions) >= 4
    assert len({i.meta["format"] for i in generate("oolong", [6000], 30, seed=0)}) == 4
    assert len({i.meta["question_type"] for i in generate("code_qa", [8000], 30, seed=0)}) == 3
    assert len({i.meta["header"] for i in generate("code_qa", [8000], 30, seed=0)}) >= 3


def test_s_niah_needle_is_in_the_context_once() -> None:
    for item in generate("s_niah", [2000, 20000], 10, seed=5):
        assert item.context.count(item.meta["needle"]) == 1
        assert item.expected in item.meta["needle"]


# ---- OOLONG: read the records back in all four formats and recompute the answers
_LINE = [
    re.compile(r"^Date: (\w{3}) \d\d, 2023 \|\| User: (\d+) \|\| \w+: (\w+) \|\| Instance: "),
    None,  # JSON
    re.compile(r"^\[2023-(\d\d)-\d\d\] user#(\d+) <(\w+)> "),
    re.compile(r"^2023/(\d\d)/\d\d,(\d+),(\w+),"),
]
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _records(item) -> list[tuple[int, int, str]]:
    fmt, kind = item.meta["format"], item.meta["label_kind"]
    out = []
    for line in item.context.splitlines()[1:]:
        if fmt == 1:
            d = json.loads(line)
            out.append((int(d["date"][5:7]), int(d["user_id"]), d[kind]))
        else:
            m = _LINE[fmt].match(line)
            assert m, line
            month = _MONTHS.index(m.group(1)) + 1 if fmt == 0 else int(m.group(1))
            out.append((month, int(m.group(2)), m.group(3)))
    assert len(out) == item.meta["records"]
    return out


def test_oolong_answers_match_the_records() -> None:
    for item in generate("oolong", [5000, 30000], 10, seed=11):
        recs = _records(item)
        counts = Counter(label for _, _, label in recs)
        q = item.meta["question_type"]
        label = item.meta.get("label")
        if label is not None:
            assert label in item.question
        if q == "count":
            assert int(item.expected) == counts[label]
        elif q == "count_month":
            month = _MONTHS.index(re.search(r"in (\w{3}) 2023", item.question).group(1)) + 1
            assert int(item.expected) == sum(1 for m, _, lab in recs if m == month and lab == label)
        elif q == "distinct_users":
            assert int(item.expected) == len({u for _, u, lab in recs if lab == label})
        elif q == "most":
            assert counts.most_common(1)[0][0] == item.expected
        else:
            assert min(counts, key=counts.get) == item.expected or counts[item.expected] == 0


def test_oolong_pairs_answers_match_the_records() -> None:
    for item in generate("oolong_pairs", [5000, 30000], 8, seed=2):
        recs = _records(item)
        by_user: dict[int, Counter] = {}
        for _, user, label in recs:
            by_user.setdefault(user, Counter())[label] += 1
        mode, a, b = item.meta["condition"]
        if mode == "both":
            ok = [u for u, c in by_user.items() if c[a]]
        elif mode == "both_two":
            ok = [u for u, c in by_user.items() if c[a] and c[b]]
        else:
            ok = [u for u, c in by_user.items() if c[a] and not c[b]]
        assert sorted(map(sorted, combinations(sorted(ok), 2))) == sorted(item.expected)
        assert item.expected, item.id


# ---- CodeQA: evaluate constants with ast (generated code is never executed)
_HEADER = re.compile(r"^(?:# ===== file: (\S+) =====|==> (\S+) <==|--- (\S+) ---|### FILE (\S+))$", re.M)


def _files(context: str) -> dict[str, str]:
    parts = _HEADER.split(context)
    files, i = {}, 1
    while i < len(parts):
        path = next(p for p in parts[i:i + 4] if p)
        files[path] = parts[i + 4]
        i += 5
    return files


def _eval(node, env):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _eval(node.left, env), _eval(node.right, env)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise AssertionError(ast.dump(node))


def test_code_qa_answers_match_the_code() -> None:
    for item in generate("code_qa", [6000, 40000], 12, seed=4):
        files = _files(item.context)
        assert len(files) == item.meta["files"]
        env: dict[str, int] = {}
        defs: dict[str, str] = {}
        calls: dict[str, list[str]] = {}
        for path, text in files.items():          # files only import from earlier files
            tree = ast.parse(text)
            for node in tree.body:
                if isinstance(node, ast.Assign):
                    env[node.targets[0].id] = _eval(node.value, env)
                elif isinstance(node, ast.FunctionDef):
                    defs[node.name] = path
                    for sub in ast.walk(node):
                        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in defs:
                            calls.setdefault(sub.func.id, []).append(node.name)
                elif isinstance(node, ast.ImportFrom):
                    assert f"{node.module.replace('.', '/')}.py" in files
        q = item.meta["question_type"]
        if q == "constant":
            name = re.search(r"\b([A-Z]+_[A-Z]+_\d+)\b", item.question).group(1)
            assert str(env[name]) == item.expected
        elif q == "caller":
            callee = re.search(r"calls (\w+)\(\)", item.question).group(1)
            assert calls[callee] == [item.expected]
        else:
            fname = re.search(r"function (\w+) defined|defines (\w+)\(", item.question)
            assert defs[fname.group(1) or fname.group(2)] == item.expected


def test_parse_sizes() -> None:
    assert parse_sizes("8k,32K, 1m,1500") == [8000, 32000, 1_000_000, 1500]
    assert parse_sizes("8k,8000") == [8000]
    assert parse_sizes("2.5k") == [2500]
    for bad in ("", "8x", "10", "k"):
        with pytest.raises(UsageError):
            parse_sizes(bad)
