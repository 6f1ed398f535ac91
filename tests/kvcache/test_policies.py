"""Each policy on hand-built operation sequences whose right victim is known."""

from __future__ import annotations

import math

import pytest

from wildserve.errors import ConfigError, UnknownNameError
from wildserve.kvcache import (
    EVICTION_POLICIES,
    AccessHints,
    GDSFPolicy,
    LFUPolicy,
    LRUPolicy,
    OPTPolicy,
    WAPolicy,
    make_eviction_policy,
)
from wildserve.kvcache.wa import reuse_probability


def test_registry_specs_and_errors():
    assert {"lru", "lfu", "gdsf", "wa", "opt"} <= set(EVICTION_POLICIES.names())
    p = make_eviction_policy("wa:leaf", life_s=5.0)
    assert isinstance(p, WAPolicy) and p.leaf_only and p.prefix_closed and p.life_s == 5.0
    assert not make_eviction_policy("wa").prefix_closed
    assert make_eviction_policy("lru").prefix_closed and make_eviction_policy("opt").prefix_closed
    with pytest.raises(ConfigError, match="unknown variant 'tree'"):
        make_eviction_policy("lru:tree")
    with pytest.raises(UnknownNameError, match="choose one of"):
        make_eviction_policy("fifo")
    with pytest.raises(ConfigError, match="window_s >= refit_s"):
        WAPolicy(window_s=1.0, refit_s=5.0)


def test_pop_beyond_evictable_and_ids_beyond_capacity_are_errors():
    p = LRUPolicy()
    p.push_many([3, 1], 0.0)  # grows on demand
    assert len(p) == 2
    with pytest.raises(RuntimeError, match="only 2 evictable"):
        p.pop_many(3, 1.0)
    assert p.pop_many(2, 1.0) == [3, 1]


def test_lru_is_release_order_and_a_hit_leaves_the_queue():
    p = LRUPolicy()
    p.push_many([5, 4, 3], 0.0)
    p.push_many([9], 1.0)
    p.remove(4)
    p.push(4, 2.0)  # released again: now the most recent
    assert p.pop_many(4, 3.0) == [5, 3, 9, 4]


def test_lfu_evicts_least_used_then_oldest():
    p = LFUPolicy()
    for b in (0, 1, 2):
        p.on_access(b, 0.0, 0, 0)
    p.on_access(0, 1.0, 0, 0)
    p.on_access(0, 2.0, 0, 0)
    p.on_access(2, 2.0, 0, 0)
    p.push_many([0, 1, 2], 3.0)
    assert p.pop_many(3, 4.0) == [1, 2, 0]


def test_gdsf_ages_out_a_block_that_stopped_being_used():
    """Block 0 was hit 3 times long ago; fresh blocks get H = L + 1 and L rises with each eviction."""
    p = GDSFPolicy()
    for t in range(4):
        p.on_access(0, float(t), 0, 0)  # H(0) = 4
    p.push(0, 4.0)
    victims = []
    for b in range(1, 8):  # each new block evicts the smallest H
        p.on_access(b, 10.0 + b, 0, 0)
        p.push(b, 10.0 + b)
        victims.extend(p.pop_many(1, 10.0 + b))
    assert victims[0] == 1 and 0 in victims  # LFU alone would keep block 0 forever
    lfu = LFUPolicy()
    for t in range(4):
        lfu.on_access(0, float(t), 0, 0)
    lfu.push(0, 4.0)
    lfu_victims = []
    for b in range(1, 8):
        lfu.on_access(b, 10.0 + b, 0, 0)
        lfu.push(b, 10.0 + b)
        lfu_victims.extend(lfu.pop_many(1, 10.0 + b))
    assert 0 not in lfu_victims


def test_opt_evicts_furthest_next_use_then_deepest():
    p = OPTPolicy()
    p.on_access_many([0, 1, 2], 0.0, 0, 0, hints=AccessHints.make(next_use=[5.0, 9.0, 9.0]))
    p.on_access_many([3], 0.0, 0, 0, hints=AccessHints.make(next_use=[math.inf]))
    p.push_many([2, 1, 0, 3], 0.0)
    assert p.pop_many(4, 1.0) == [3, 2, 1, 0]


def test_leaf_only_parks_a_parent_until_its_child_is_gone():
    """LFU would evict the rarely used parent 0 first; the leaf-only variant must take child 1."""
    for spec, first in (("lfu", 0), ("lfu:leaf", 1)):
        p = make_eviction_policy(spec)
        p.on_access_many([0, 1], 0.0, 0, 0)  # fill: 0 is 1's parent
        p.on_access_many([1], 1.0, 1, 0, parent=0)
        p.on_access_many([1], 2.0, 1, 0, parent=0)
        p.push_many([1, 0], 3.0)
        assert p.pop_many(2, 4.0)[0] == first
        assert len(p) == 0


def test_reuse_probability_formula():
    assert reuse_probability(0.0, 1.0, 0.0, 10.0) == 0.0
    # p = 1: memoryless, independent of age
    assert reuse_probability(1.0, 0.5, 0.0, 2.0) == pytest.approx(1 - math.exp(-1.0))
    assert reuse_probability(1.0, 0.5, 50.0, 2.0) == pytest.approx(1 - math.exp(-1.0))
    p, lam, life = 0.4, 0.2, 3.0
    for age in (0.0, 1.0, 7.5, 40.0):
        e = math.exp(-lam * age)
        want = p * (e - math.exp(-lam * (age + life))) / (1 - p + p * e)
        assert reuse_probability(p, lam, age, life) == pytest.approx(want)
    ages = [0.0, 1.0, 5.0, 20.0, 100.0]
    probs = [reuse_probability(0.6, 0.1, a, 30.0) for a in ages]
    assert probs == sorted(probs, reverse=True) and probs[-1] < probs[0]


def _train(pol, cat, reuse_s, num_reused, num_once, t0=0.0, first_slot=0):
    """Fill blocks of ``cat`` at t0; re-access ``num_reused`` of them ``reuse_s`` later."""
    for i in range(num_reused + num_once):
        pol.on_access(first_slot + i, t0, 0, cat)
    for i in range(num_reused):
        pol.on_access(first_slot + i, t0 + reuse_s, 0, cat)
    return first_slot + num_reused + num_once


def test_wa_evicts_the_category_that_is_never_reused_even_if_newer():
    wa = WAPolicy(life_s=10.0, window_s=1000.0, refit_s=10.0, min_obs=4, num_categories=2)
    nxt = _train(wa, 0, 20.0, 10, 0)  # category 0: every block comes back after 20 s
    nxt = _train(wa, 1, 0.0, 0, 10, first_slot=nxt)  # category 1: never comes back
    x, y = nxt, nxt + 1
    wa.on_access(x, 40.0, 0, 0)
    wa.push(x, 40.0)  # older
    wa.on_access(y, 45.0, 0, 1)
    wa.push(y, 45.0)  # newer
    assert wa.pop(50.0) == y
    model = wa.model()
    assert model["p"][1] == 0.0 and 0.4 < model["p"][0] < 0.6
    assert model["lam"][0] == pytest.approx(1 / 20.0)
    lru = LRUPolicy()
    lru.push(x, 40.0)
    lru.push(y, 45.0)
    assert lru.pop(50.0) == x


def test_wa_evicts_a_stale_block_of_a_fast_category_before_an_older_slow_one():
    """Fast category: reuses come after 1 s, so a block idle for 20 s is almost surely dead; slow
    category: reuses take 100 s, so a block idle for 30 s may well come back."""
    wa = WAPolicy(life_s=10.0, window_s=1000.0, refit_s=10.0, min_obs=4, num_categories=2)
    nxt = _train(wa, 0, 1.0, 10, 10)
    nxt = _train(wa, 1, 100.0, 10, 10, first_slot=nxt)
    x, y = nxt, nxt + 1
    wa.on_access(y, 90.0, 0, 1)
    wa.push(y, 90.0)  # slow category, older
    wa.on_access(x, 100.0, 0, 0)
    wa.push(x, 100.0)  # fast category, newer
    assert wa.pop(120.0) == x
    model = wa.model()
    assert model["lam"][0] == pytest.approx(1.0) and model["lam"][1] == pytest.approx(0.01)


def test_wa_refits_only_at_bucket_boundaries_and_forgets_outside_the_window():
    wa = WAPolicy(life_s=10.0, window_s=20.0, refit_s=10.0, min_obs=2, num_categories=1)
    _train(wa, 0, 0.0, 0, 6, t0=1.0)  # six fills, no reuse
    assert wa.model()["p"][0] == 1.0  # not refit yet: the bucket opened at t=1 ends at t=11
    wa.on_access(100, 11.0, 0, 0)
    assert wa.model()["p"][0] == 0.0
    _train(wa, 0, 1.0, 4, 0, t0=60.0, first_slot=200)  # window [40, 60+]: only these remain
    wa.on_access(300, 75.0, 0, 0)
    assert wa.model()["p"][0] == pytest.approx(4 / 8)


def test_wa_unseen_category_uses_the_pooled_model_and_ties_go_tail_first():
    wa = WAPolicy(life_s=10.0, window_s=100.0, refit_s=10.0, min_obs=4, num_categories=3)
    _train(wa, 0, 5.0, 6, 2)
    wa.on_access(50, 20.0, 0, 0)
    model = wa.model()
    assert model["p"][2] == pytest.approx(6 / 14) and model["lam"][2] == pytest.approx(0.2)
    # no data at all: every block has p = 1, the same priority, so the deepest head goes first
    fresh = WAPolicy(num_categories=2)
    fresh.on_access_many([0, 1, 2], 0.0, 0, 0)  # depths 0..2 in category 0
    fresh.on_access_many([3], 0.0, 5, 1)  # depth 5 in category 1
    fresh.push_many([2, 1, 0], 1.0)
    fresh.push_many([3], 2.0)
    assert fresh.pop_many(4, 3.0) == [3, 2, 1, 0]


def test_wa_grows_categories_on_demand():
    wa = WAPolicy()
    wa.on_access(0, 0.0, 0, 7)
    wa.push(0, 0.0)
    assert wa.model()["p"].shape[0] >= 8 and wa.pop(1.0) == 0


def test_stale_numba_cache_is_dropped_when_any_source_changes(tmp_path):
    from wildserve.kvcache._numba_cache import drop_stale_numba_cache

    (tmp_path / "a.py").write_text("x = 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    (cache / "a.f-1.py311.nbi").write_bytes(b"old")
    (cache / "a.f-1.py311.1.nbc").write_bytes(b"old")
    (cache / "a.cpython-311.pyc").write_bytes(b"keep")
    assert drop_stale_numba_cache(tmp_path)  # no stamp yet: drop
    assert sorted(p.name for p in cache.iterdir()) == ["a.cpython-311.pyc", "numba-sources.sha1"]
    (cache / "a.f-1.py311.nbi").write_bytes(b"new")
    assert not drop_stale_numba_cache(tmp_path)  # sources unchanged: keep
    (tmp_path / "a.py").write_text("x = 2\n")
    assert drop_stale_numba_cache(tmp_path) and not (cache / "a.f-1.py311.nbi").exists()
