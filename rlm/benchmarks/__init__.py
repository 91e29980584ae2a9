"""Seeded benchmarks (S-NIAH, OOLONG, OOLONG-Pairs, CodeQA): generators, scorers, a runner, a plot.

Sizes are in characters.  See docs/batch.md for `rlm benchmark`.
"""

from rlm.benchmarks.generators import GENERATORS, BenchItem, generate, parse_sizes
from rlm.benchmarks.scorers import SCORERS, score

__all__ = ["GENERATORS", "SCORERS", "BenchItem", "generate", "parse_sizes", "score"]
