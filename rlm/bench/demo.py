"""Generated documents with a known answer, for `rlm demo` and quick checks."""

from __future__ import annotations

import random
from dataclasses import dataclass

_WORDS = ("river", "market", "signal", "harbor", "lantern", "copper", "meadow", "orbit", "velvet", "quarry",
          "ember", "canyon", "thimble", "saffron", "glacier", "mosaic", "pylon", "juniper", "tundra", "cobalt")


@dataclass(frozen=True)
class DemoCase:
    name: str
    document: str
    question: str
    expected: str

    def matches(self, answer: str | None) -> bool:
        return answer is not None and self.expected.lower() in answer.lower()


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
    return DemoCase("simple", doc, "Who leads Project Kestrel?", "Dana Okafor")


def needle_case(size: int, seed: int = 0) -> DemoCase:
    """A haystack of ``size`` characters with one sentence holding a number."""
    rng = random.Random(seed)
    code = str(rng.randint(100000, 999999))
    needle = f" The secret access code is {code}. "
    hay = filler(rng, max(size - len(needle), 0))
    at = rng.randint(0, len(hay))
    at = hay.rfind(". ", 0, at) + 2 if hay.rfind(". ", 0, at) >= 0 else 0
    doc = hay[:at] + needle + hay[at:]
    return DemoCase("needle", doc, "What is the secret access code mentioned in the document?", code)
