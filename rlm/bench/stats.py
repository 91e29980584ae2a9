"""95% intervals for the benchmark table, the JSON and the plot.

* A rate of successes (exact match, full marks, or a score that is always 0 or 1): the Wilson
  score interval, ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``, z = 1.96.
* A mean of scores between 0 and 1 that are not all 0 or 1 (token F1, OOLONG's partial credit,
  pair F1): the percentile bootstrap, 2,000 resamples with a fixed seed (so a table is
  reproducible), 2.5th and 97.5th percentiles of the resampled means.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 2000


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``n`` (``(0, 1)`` when n is 0)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} is not between 0 and n={n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
              level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    n = len(values)
    if n == 0:
        return (0.0, 1.0)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    lo = means[int(math.floor((1 - level) / 2 * resamples))]
    hi = means[min(resamples - 1, int(math.ceil((1 + level) / 2 * resamples)) - 1)]
    return (lo, hi)


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def interval(values: Sequence[float]) -> dict:
    """``{"mean", "lo", "hi", "method", "n"}`` for ``values``: Wilson when all are 0 or 1, else bootstrap."""
    values = [float(v) for v in values]
    n = len(values)
    mean = sum(values) / n if n else 0.0
    if is_binary(values):
        lo, hi = wilson(int(sum(values)), n)
        method = "wilson"
    else:
        lo, hi = bootstrap(values)
        method = "bootstrap"
    return {"mean": round(mean, 4), "lo": round(lo, 4), "hi": round(hi, 4), "method": method, "n": n}
