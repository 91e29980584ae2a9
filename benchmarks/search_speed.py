"""How long the REPL's ``search`` takes to index a context and answer a query, by context size.

    .venv/bin/python benchmarks/search_speed.py [--memory]   (needs rank-bm25, as in the sandbox image)
"""

from __future__ import annotations

import importlib.util
import random
import sys
import time
import tracemalloc
from pathlib import Path

from rlm.sandbox import protocol

GUEST = Path(__file__).resolve().parents[1] / "sandbox_image" / "helpers.py"
WORDS = [f"w{i}" for i in range(20_000)]
TRACE = "--memory" in sys.argv   # peak Python memory too (tracemalloc slows the indexing about twofold)


def helpers():
    sys.modules.setdefault("protocol", protocol)
    spec = importlib.util.spec_from_file_location("rlm_guest_helpers", GUEST)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def text(chars: int, rng: random.Random) -> str:
    paragraphs, size = [], 0
    while size < chars:
        p = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 120)))
        paragraphs.append(p)
        size += len(p) + 2
    return "\n\n".join(paragraphs)


def main() -> None:
    h = helpers()
    rng = random.Random(0)
    print(f"{'chars':>12} {'passages':>9} {'index s':>8} {'query s':>8} {'peak MB':>8}")
    for chars in (250_000, 1_000_000, 10_000_000):
        doc = text(chars, rng)
        tracemalloc.start() if TRACE else None
        t0 = time.perf_counter()
        index = h.PassageIndex(doc)
        t1 = time.perf_counter()
        index.search("w17 w4242 w9", 5)
        t2 = time.perf_counter()
        peak = tracemalloc.get_traced_memory()[1] / 1e6 if TRACE else float("nan")
        tracemalloc.stop() if TRACE else None
        print(f"{len(doc):>12,} {len(index.spans):>9,} {t1 - t0:>8.2f} {t2 - t1:>8.3f} {peak:>8.0f}")


if __name__ == "__main__":
    main()
