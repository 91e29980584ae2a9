"""The demo's documents: benchmark items with a known answer (``rlm demo``, ``rlm benchmark --name demo``).

``simple_case()`` and ``needle_case(size, seed)`` are ``BenchItem``s scored with ``contains``, so the
demo runs and is scored exactly as a benchmark item is; ``demo`` is their generator.
"""

from __future__ import annotations

import random

from rlm.bench.item import BenchItem

_WORDS = ("river", "market", "signal", "harbor", "lantern", "copper", "meadow", "orbit", "velvet", "quarry",
          "ember", "canyon", "thimble", "saffron", "glacier", "mosaic", "pylon", "juniper", "tundra", "cobalt")


DemoCase = BenchItem  # the demo's cases are benchmark items


def matches(item: BenchItem, answer: str | None) -> bool:
    """The demo's verdict: the benchmark scorer gives the answer full marks."""
    from rlm.bench.scorers import score

    return score(item.scorer, answer, item.expected) >= 1.0


def filler(rng: random.Random, size: int) -> str:
    """Sentences of plausible filler, ``size`` characters long."""
    parts: list[str] = []
    total = 0
    while total < size:
        n = rng.randint(6, 14)
        sentence = " ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + ". "
        parts.append(sentence)
        total += len(sentence)
    return "".join(parts)[:size]


def simple_case() -> DemoCase:
    doc = ("Project Kestrel status report.\n"
           "The project started in March 2024 and is led by Dana Okafor.\n"
           "The team has 7 engineers and 2 designers.\n"
           "The budget for the year is 1.2 million euros.\n"
           "The next milestone, the public beta, is planned for 14 October.\n")
    return BenchItem(id="demo-simple", benchmark="demo", size=len(doc), question="Who leads Project Kestrel?",
                     context=doc, expected="Dana Okafor", scorer="contains", meta={"case": "simple"})


def needle_case(size: int, seed: int = 0) -> DemoCase:
    """A haystack of ``size`` characters with one sentence holding a number."""
    rng = random.Random(seed)
    code = str(rng.randint(100000, 999999))
    needle = f" The secret access code is {code}. "
    hay = filler(rng, max(size - len(needle), 0))
    at = rng.randint(0, len(hay))
    at = hay.rfind(". ", 0, at) + 2 if hay.rfind(". ", 0, at) >= 0 else 0
    doc = hay[:at] + needle + hay[at:]
    return BenchItem(id=f"demo-needle-{size}-{seed}", benchmark="demo", size=size,
                     question="What is the secret access code mentioned in the document?", context=doc,
                     expected=code, scorer="contains", meta={"case": "needle", "seed": seed})


def demo(size: int, index: int, seed: int) -> BenchItem:
    """The demo needle as a benchmark generator (``rlm benchmark --name demo``)."""
    return needle_case(size, seed * 1000 + index)
