"""Seeded benchmarks (S-NIAH, OOLONG, OOLONG-Pairs, CodeQA): generators, scorers, a runner, a plot.

Sizes are in characters.  See docs/batch.md for `rlm benchmark`.
"""

from rlm.bench.generators import GENERATORS, BenchItem, generate, parse_sizes
from rlm.bench.scorers import SCORERS, score

__all__ = ["GENERATORS", "SCORERS", "BenchItem", "generate", "parse_sizes", "score"]
