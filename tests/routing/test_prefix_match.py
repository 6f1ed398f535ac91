from __future__ import annotations

import numpy as np
import pytest

from wildserve.routing.prefix_match import ClusterPrefixIndex, match_lengths


def brute(sets: list[set[int]], hashes: list[int]) -> list[int]:
    out = []
    for s in sets:
        k = 0
        while k < len(hashes) and hashes[k] in s:
            k += 1
        out.append(k)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_parallel_gallop_equals_walking_each_prefix_closed_instance(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    num = int(rng.integers(1, 70))
    hashes = list(range(100, 100 + n))
    sets = []
    for _ in range(num):
        k = int(rng.integers(0, n + 1)) if rng.random() < 0.7 else int(rng.choice([0, n, n // 2]))
        sets.append(set(hashes[:k]) | {10**6 + int(x) for x in rng.integers(0, 50, 5)})
    holders: dict[int, int] = {}
    for i, s in enumerate(sets):
        for h in s:
            holders[h] = holders.get(h, 0) | (1 << i)
    assert match_lengths(holders, hashes, num) == brute(sets, hashes)


def test_index_follows_stored_and_removed_events():
    idx = ClusterPrefixIndex(3)
    idx.stored(0, [1, 2, 3])
    idx.stored(2, [1])
    assert idx.match_lengths([1, 2, 3, 4]) == [3, 0, 1]
    idx.removed(0, [3])
    idx.removed(2, [1])
    assert idx.match_lengths([1, 2, 3]) == [2, 0, 0]
    assert 3 not in idx.holders and idx.holders[1] == 1
