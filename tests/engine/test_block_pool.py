from __future__ import annotations

import pytest

from wildserve.engine.block_pool import BlockPool
from wildserve.engine.kv_events import BlockRemoved, BlockStored


def test_lru_evicts_oldest_release_and_tail_first():
    pool = BlockPool(6)
    a = pool.allocate(3, 0.0)
    pool.cache(a, [11, 12, 13], 0.0, 0, 0)
    b = pool.allocate(3, 0.0)
    pool.cache(b, [21, 22, 23], 0.0, 0, 0)
    pool.release(a, 1.0)  # a released first: its tail block 13 is the first victim
    pool.release(b, 2.0)
    assert pool.num_free == 6 and pool.num_cached == 6
    victims = pool.allocate(4, 3.0)
    assert victims == [a[2], a[1], a[0], b[2]]
    assert set(pool.hash_to_block) == {21, 22}


def test_empty_blocks_go_before_any_eviction():
    pool = BlockPool(4)
    a = pool.allocate(2, 0.0)
    pool.cache(a[:1], [7], 0.0, 0, 0)  # only the first block holds a prefix
    pool.release(a, 1.0)
    got = pool.allocate(3, 2.0)
    assert a[0] not in got  # the cached block survives while empty ones remain
    assert pool.num_cached == 1


def test_blocks_in_use_are_never_evicted():
    pool = BlockPool(4)
    a = pool.allocate(2, 0.0)
    pool.cache(a, [1, 2], 0.0, 0, 0)
    assert pool.num_free == 2
    with pytest.raises(RuntimeError):
        pool.allocate(3, 1.0)
    pool.allocate(2, 1.0)
    assert pool.num_free == 0 and set(pool.hash_to_block) == {1, 2}


def test_hit_takes_block_out_of_eviction_and_refcounts():
    pool = BlockPool(4)
    a = pool.allocate(2, 0.0)
    pool.cache(a, [1, 2], 0.0, 0, 0)
    pool.release(a, 1.0)
    hit = pool.match_prefix([1, 2, 3])
    assert hit == a and pool.num_matched([1, 2, 3]) == 2 and pool.num_matched([9, 2]) == 0
    pool.acquire(hit, 2.0, 0)
    assert pool.num_free == 2
    pool.acquire(hit, 2.0, 0)
    assert [pool.ref_cnt[b] for b in a] == [2, 2]
    pool.release(hit, 3.0)
    assert pool.num_free == 2
    pool.release(hit, 3.0)
    assert pool.num_free == 4 and pool.num_cached == 2


def test_duplicate_hash_is_a_copy_and_the_hash_lives_until_the_last_copy():
    pool = BlockPool(4)
    a = pool.allocate(1, 0.0)
    b = pool.allocate(1, 0.0)
    queue = pool.subscribe()
    pool.cache(a, [5], 0.0, 0, 0)
    pool.cache(b, [5], 0.0, 0, 0)
    assert pool.hash_to_block == {5: a[0]} and pool.block_hash[b[0]] == 5
    pool.release(a, 1.0)
    pool.release(b, 1.0)
    pool.allocate(3, 2.0)  # 2 empty blocks + evicts a (the older copy): 5 survives in b
    assert pool.hash_to_block == {5: b[0]} and queue.drain() == [BlockStored([5], None, ())]
    pool.allocate(1, 3.0)  # the last copy goes: now the hash is removed
    assert pool.hash_to_block == {} and queue.drain() == [BlockRemoved([5])]


def test_grow_adds_free_blocks():
    pool = BlockPool(4)
    pool.allocate(2, 0.0)
    pool.grow(4)
    assert pool.num_blocks == 8 and pool.num_free == 6
    assert len(set(pool.allocate(6, 1.0))) == 6


def _linear_match(pool: BlockPool, hashes: list[int]) -> int:
    n = 0
    for h in hashes:
        if h not in pool.index:
            break
        n += 1
    return n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lru_cache_stays_prefix_closed_so_galloping_match_is_exact(seed):
    """Concurrent requests sharing long prefixes (copies, chunked prefill, preemption) under LRU."""
    import numpy as np

    from wildserve.engine import Engine, EngineConfig, EngineRequest
    from wildserve.perf.linear import LinearCostModel

    rng = np.random.default_rng(seed)
    trunks = [[10**6 * f + j for j in range(300)] for f in range(4)]
    cfg = EngineConfig(max_num_batched_tokens=1024, long_prefill_token_threshold=128)
    eng = Engine(cfg, LinearCostModel(), num_blocks=900)
    chains = []
    now = 0.0
    copies = 0
    for i in range(250):
        trunk = trunks[int(rng.integers(4))]
        shared = int(rng.integers(0, 300))
        hs = trunk[:shared] + [10**9 + i * 1000 + j for j in range(int(rng.integers(1, 60)))]
        chains.append(hs)
        eng.add_request(EngineRequest(i, now, len(hs) * 16 + 5, int(rng.integers(1, 40)), hs), now)
        for _ in range(int(rng.integers(1, 4))):
            if eng.has_work:
                now = eng.step(now).end_s
        copies = max(copies, len(eng.pool._copies))
        for probe in chains[-40:] + trunks:
            assert eng.pool.num_matched(probe) == _linear_match(eng.pool, probe)
    assert eng.pool.num_evictions > 0 and copies > 0
