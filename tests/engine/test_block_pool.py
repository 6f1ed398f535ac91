from __future__ import annotations

import pytest

from wildserve.engine.block_pool import BlockPool


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


def test_duplicate_hash_stays_private_and_grow_adds_free_blocks():
    pool = BlockPool(4)
    a = pool.allocate(1, 0.0)
    b = pool.allocate(1, 0.0)
    pool.cache(a, [5], 0.0, 0, 0)
    pool.cache(b, [5], 0.0, 0, 0)
    assert pool.hash_to_block == {5: a[0]} and pool.block_hash[b[0]] is None
    pool.grow(4)
    assert pool.num_blocks == 8 and pool.num_free == 6
    events = []
    pool.event_sink = lambda kind, h: events.append((kind, h))
    pool.release(a + b, 1.0)
    pool.allocate(8, 2.0)
    assert events == [("removed", 5)]
