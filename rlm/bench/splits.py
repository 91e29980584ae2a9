"""Dev and test splits, fixed by item identity (never by a seed alone).

An item's split is the lowest bit of ``sha256("rlm-split-v1", benchmark, key)``: about half of
the items of every benchmark are ``dev`` (for tuning the loop) and half ``test`` (held out: run
once per reported figure, never read while changing the loop).  The key is what identifies the
question, so the same question is in the same split at every context size:

* ``hotpotqa``: the question's HotpotQA id (``_id``); distractor paragraphs come only from other
  questions of the same split.
* ``squad``: the SQuAD article's title, so that every question of an article, and every paragraph
  used as a distractor, stay in one split (578 dev and 626 test paragraphs).
* generated benchmarks (``s_niah``, ``oolong``, ``oolong_pairs``, ``code_qa``, ``demo``):
  ``"<seed>:<index>"``.  A run of ``--n N --split S`` takes the first N indices of split S for its
  seed.  Seeds 0 to 3 were read while tuning the loop before the splits existed (issue 30), so
  their test items are not held out: test-split runs of generated benchmarks use seeds from
  :data:`FRESH_SEEDS_FROM` up (the command's default seed for ``--split test``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

SPLITS = ("dev", "test")
SALT = "rlm-split-v1"
FRESH_SEEDS_FROM = 100   # generated benchmarks: seeds below this were seen while tuning
DEFAULT_TEST_SEED = 100


def split_of(benchmark: str, key: str) -> str:
    """``dev`` or ``test`` for the item ``key`` of ``benchmark`` (stable across runs and machines)."""
    digest = hashlib.sha256(f"{SALT}\0{benchmark}\0{key}".encode()).digest()
    return "test" if digest[0] & 1 else "dev"


def generated_key(seed: int, index: int) -> str:
    return f"{seed}:{index}"


def indices(benchmark: str, seed: int, n: int, split: str | None) -> Iterator[int]:
    """The first ``n`` indices of a generated benchmark in ``split`` (all indices when None)."""
    found = index = 0
    while found < n:
        if split is None or split_of(benchmark, generated_key(seed, index)) == split:
            found += 1
            yield index
        index += 1


def check_split(split: str | None) -> str | None:
    if split is not None and split not in SPLITS:
        from rlm.errors import UsageError

        raise UsageError(f"unknown split {split!r}", hint="choose dev (for tuning) or test (held out)")
    return split
