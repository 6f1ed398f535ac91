"""The bulk block pool against the loop-per-block pool it replaced, on random request streams.

Both pools get the same operations (prefix hits, allocations with eviction, caching with shared,
repeated and already-cached hashes, releases, grow and shrink) and must agree after every one: the
blocks handed out, the hash index and its copies, reference counts, the empty list, the eviction
policy's state and the events published.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.engine._reference_block_pool import ReferenceBlockPool
from wildserve.engine.block_pool import BlockPool
from wildserve.kvcache.policy import make_eviction_policy


def _state(pool) -> tuple:
    hashes = {
        b: int(pool.block_hash[b])
        for b in range(len(pool.ref_cnt))
        if (pool.has_hash[b] if hasattr(pool, "has_hash") else pool.block_hash[b] is not None)
    }
    return (
        dict(pool.hash_to_block),
        {h: list(c) for h, c in pool._copies.items() if c},
        [int(r) for r in pool.ref_cnt],
        hashes,
        list(pool._empty),
        pool.num_free,
        pool.num_evictions,
        pool.num_blocks,
    )


def _stream(seed: int, policy: str, event_sink: bool) -> None:
    rng = np.random.default_rng(seed)
    pools = [
        BlockPool(400, make_eviction_policy(policy)),
        ReferenceBlockPool(400, make_eviction_policy(policy)),
    ]
    queues = [p.subscribe() for p in pools] if event_sink else []
    trunks = [[1000 * f + j for j in range(120)] for f in range(5)]
    held: list[list[list[int]]] = []  # per live request: its block ids in each pool
    now = 0.0
    had_copies = False
    for i in range(500):
        now += float(rng.exponential(1.0))
        op = rng.random()
        if op < 0.55:  # a request: hit its cached prefix, allocate the rest, cache full blocks
            trunk = trunks[int(rng.integers(len(trunks)))]
            hs = trunk[: int(rng.integers(0, 120))]
            hs = hs + [10**6 + 1000 * i + j for j in range(int(rng.integers(1, 40)))]
            if rng.random() < 0.05 and len(hs) > 3:  # a hash repeated among the new blocks
                hs[-1] = hs[-2]
            cat = int(rng.integers(3))
            extra = int(rng.integers(0, 3))
            ids_per_pool = []
            for p in pools:
                hit = p.match_prefix(hs)
                assert p.num_matched(hs) <= len(hs)
                p.acquire(hit, now, cat)
                need = min(len(hs) - len(hit) + extra, p.num_free)
                ids_per_pool.append(hit + p.allocate(need, now))
            assert ids_per_pool[0] == ids_per_pool[1]
            ids = ids_per_pool[0]
            num_full = min(len(hs), len(ids))
            start = len(pools[0].match_prefix(hs)) if rng.random() < 0.5 else 0
            for p in pools:
                p.cache(ids[start:num_full], hs[start:num_full], now, start, cat)
            held.append([list(ids), list(ids)])
        elif op < 0.95 and held:
            k = int(rng.integers(len(held)))
            for p, ids in zip(pools, held.pop(k), strict=True):
                p.release(ids, now)
        elif op < 0.975:
            n = int(rng.integers(1, 20))
            for p in pools:
                p.grow(n)
        else:
            n = min(int(rng.integers(1, 20)), pools[0].num_free, pools[0].num_blocks - 1)
            if n > 0:
                for p in pools:
                    p.shrink(n, now)
        had_copies |= bool(pools[0]._copies)
        assert _state(pools[0]) == _state(pools[1]), f"step {i}"
        if queues:
            assert queues[0].drain() == queues[1].drain(), f"step {i}"
        assert np.array_equal(pools[0].policy.arena, pools[1].policy.arena), f"step {i}"
    assert pools[0].num_evictions > 0 and had_copies


@pytest.mark.parametrize(("seed", "policy"), [(0, "lru"), (1, "lru"), (2, "wa")])
def test_bulk_pool_matches_loop_per_block_pool(seed, policy):
    _stream(seed, policy, event_sink=seed == 1)
