"""The engine path (a real BlockPool calling a policy's Python API) and the offline replay make the
same eviction decisions, and policies behave inside a live engine."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.engine.conftest import run_to_completion
from tests.kvcache.conftest import SPECS, WA_TEST, random_streams
from wildserve.engine import Engine, EngineConfig, EngineRequest
from wildserve.engine.block_pool import BlockPool
from wildserve.errors import ConfigError
from wildserve.kvcache import AccessHints, make_eviction_policy
from wildserve.kvcache.replay import replay
from wildserve.perf.linear import LinearCostModel


def _kw(spec: str) -> dict:
    return WA_TEST if spec.startswith(("wa", "rwa")) else {}


def drive_pool(stream, spec: str, capacity: int):
    """Feed the stream to a BlockPool the way KVCacheManager does; returns (hits, victims)."""
    policy = make_eviction_policy(spec, **_kw(spec))
    policy.ensure_categories(len(stream.categories.names))
    pool = BlockPool(capacity, policy)
    victims: list[int] = []
    pop_many = policy.pop_many

    def logged_pop_many(num: int, now: float) -> list[int]:
        out = pop_many(num, now)
        assert all(pool.ref_cnt[b] == 0 for b in out), "evicted a block in use"
        victims.extend(out)
        return out

    policy.pop_many = logged_pop_many  # type: ignore[method-assign]
    next_use = stream.next_use(capacity)
    if policy.offline_only:  # OPT learns next uses from hints the engine never has: inject them
        on_access_many = policy.on_access_many
        hint_of: dict[int, float] = {}

        def hinted(block_ids, now, depth0, category, parent=-1, hints=None):
            nxt = AccessHints.make(next_use=[hint_of[b] for b in block_ids])
            on_access_many(block_ids, now, depth0, category, parent, nxt)

        policy.on_access_many = hinted  # type: ignore[method-assign]
    hits = []
    for r in range(stream.num_requests):
        a = int(stream.req_start[r])
        n = min(int(stream.req_start[r + 1]) - a, capacity)
        hashes = [int(x) for x in stream.blocks[a : a + n]]
        now, cat = float(stream.times[r]), int(stream.cats[r])
        hit = pool.match_prefix(hashes)
        h = len(hit)
        if policy.offline_only:
            hint_of.update(zip(hit, next_use[a : a + h].tolist(), strict=True))
        pool.acquire(hit, now, cat, 0)
        new = pool.allocate(n - h, now)
        if policy.offline_only:
            hint_of.update(zip(new, next_use[a + h : a + n].tolist(), strict=True))
        pool.cache(new, hashes[h:], now, h, cat, hit[-1] if hit else -1)
        pool.release(hit + new, now)
        hits.append(h)
        assert pool.num_free + sum(1 for c in pool.ref_cnt if c) == capacity
    return np.asarray(hits), victims, pool


@settings(max_examples=40, deadline=None)
@given(random_streams(), st.integers(1, 12), st.sampled_from(SPECS))
def test_block_pool_and_replay_evict_the_same_blocks(stream, capacity, spec):
    hits, victims, pool = drive_pool(stream, spec, capacity)
    got = replay(stream, spec, capacity, log_victims=True, **_kw(spec))
    assert got.hits.tolist() == hits.tolist()
    assert got.victims.tolist() == victims
    if spec.endswith(":leaf") or spec.startswith(("lru", "opt")):
        # prefix-closed: a cached block's parent is cached too (checked on the dense chain)
        for r in range(stream.num_requests):
            ids = stream.blocks[stream.req_start[r] : stream.req_start[r + 1]].tolist()
            cached = [x in pool.index for x in ids]
            assert cached == sorted(cached, reverse=True), (spec, ids, cached)


@pytest.mark.parametrize("spec", [s for s in SPECS if not s.startswith("opt")])
def test_policies_run_a_live_engine_with_concurrency_and_never_evict_in_use(spec):
    """Concurrent requests sharing prefixes (chunked prefill, preemption) on a small pool."""
    rng = np.random.default_rng(7)
    cfg = EngineConfig(
        max_num_batched_tokens=512, long_prefill_token_threshold=128, eviction_policy=spec
    )
    eng = Engine(cfg, LinearCostModel(), num_blocks=300)
    policy = eng.pool.policy
    pop_many = policy.pop_many

    def checked(num: int, now: float) -> list[int]:
        out = pop_many(num, now)
        assert all(eng.pool.ref_cnt[b] == 0 for b in out)
        return out

    policy.pop_many = checked  # type: ignore[method-assign]
    trunks = [[10**6 * f + j for j in range(120)] for f in range(3)]
    now = 0.0
    reqs = []
    for i in range(120):
        trunk = trunks[int(rng.integers(3))]
        hs = trunk[: int(rng.integers(0, 120))] + [10**9 + 1000 * i + j for j in range(8)]
        req = EngineRequest(i, now, len(hs) * 16 + 3, int(rng.integers(1, 30)), hs, i % 3)
        reqs.append(req)
        eng.add_request(req, now)
        for _ in range(int(rng.integers(1, 3))):
            if eng.has_work:
                now = eng.step(now).end_s
        if eng.pool.policy.prefix_closed:
            for probe in trunks:
                n = 0
                while n < len(probe) and probe[n] in eng.pool.index:
                    n += 1
                assert eng.pool.num_matched(probe) == n
    run_to_completion(eng, now)
    assert all(r.is_finished for r in reqs)
    assert eng.pool.num_evictions > 0
    assert sum(r.num_hit_tokens for r in reqs) > 0
    assert len(policy) == eng.pool.num_cached + sum(len(c) for c in eng.pool._copies.values())


def test_engine_refuses_offline_only_policy():
    with pytest.raises(ConfigError, match="needs the future"):
        Engine(EngineConfig(eviction_policy="opt"), LinearCostModel(), num_blocks=10)
