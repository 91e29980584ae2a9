"""Dev/test splits: fixed by item id, stable, disjoint, about half each; and the 95% intervals."""

from __future__ import annotations

import pytest

from rlm.bench.generators import generate
from rlm.bench.splits import indices, split_of
from rlm.bench.stats import bootstrap, interval, wilson
from rlm.errors import UsageError


def test_a_split_is_a_function_of_the_item_id_only() -> None:
    # pinned values: a change of the rule would move items between dev and test
    assert [split_of("hotpotqa", k) for k in ("q-a", "q-b", "q-c", "q-d", "q-e", "q-f")] == \
        ["test", "test", "test", "dev", "test", "test"]
    assert [split_of("oolong", f"0:{i}") for i in range(10)] == \
        ["dev", "dev", "dev", "dev", "test", "dev", "test", "test", "dev", "test"]
    assert split_of("squad", "Normans") in ("dev", "test")
    counts = {"dev": 0, "test": 0}
    for k in range(2000):
        counts[split_of("x", f"item-{k}")] += 1
    assert 900 < counts["test"] < 1100                       # about half each


def test_generated_splits_are_disjoint_and_stable_across_sizes() -> None:
    dev = list(indices("oolong", 100, 30, "dev"))
    test = list(indices("oolong", 100, 30, "test"))
    assert len(dev) == len(test) == 30 and not set(dev) & set(test)
    assert list(indices("oolong", 100, 30, "dev")) == dev
    assert list(indices("oolong", 100, 5, None)) == [0, 1, 2, 3, 4]
    items = generate("s_niah", [2000, 5000], 4, seed=100, split="test")
    assert {i.split for i in items} == {"test"}
    assert [i.id for i in items[:4]] == [i.id.replace("-5000-", "-2000-") for i in items[4:]]   # same items per size
    assert not {i.id for i in items} & {i.id for i in generate("s_niah", [2000, 5000], 4, seed=100, split="dev")}
    with pytest.raises(UsageError):
        generate("s_niah", [2000], 1, seed=0, split="train")


@pytest.mark.parametrize("k, n, lo, hi", [
    (0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (20, 20, 0.8389, 1.0),
    (1, 20, 0.0089, 0.2361), (81, 263, 0.2553, 0.3662),
])
def test_wilson_matches_published_values(k, n, lo, hi) -> None:
    got = wilson(k, n)
    assert got[0] == pytest.approx(lo, abs=1e-4) and got[1] == pytest.approx(hi, abs=1e-4)


def test_intervals_pick_their_method() -> None:
    assert interval([1, 0, 1, 1]) | {} == {"mean": 0.75, "lo": pytest.approx(0.3006, abs=1e-4),
                                           "hi": pytest.approx(0.9544, abs=1e-4), "method": "wilson", "n": 4}
    f1 = interval([0.5, 1.0, 0.0, 0.25, 0.75])
    assert f1["method"] == "bootstrap" and f1["lo"] < f1["mean"] == 0.5 < f1["hi"]
    assert bootstrap([0.5, 1.0, 0.0]) == bootstrap([0.5, 1.0, 0.0])          # seeded: reproducible
    assert bootstrap([0.4] * 6) == (pytest.approx(0.4), pytest.approx(0.4))
    with pytest.raises(ValueError):
        wilson(3, 2)
