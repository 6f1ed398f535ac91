"""Prefix hits on hand-built request sequences equal hand-computed values."""

from __future__ import annotations

from tests.engine.conftest import hashes, run_to_completion
from wildserve.engine import EngineRequest


def test_hits_follow_shared_prefix_and_leave_last_token(make_engine):
    eng = make_engine(num_blocks=100, block_size=16)
    a = EngineRequest("a", 0.0, 100, 4, hashes(1, 2, 3, 4, 5, 6))  # 6 full blocks + 4 tokens
    eng.add_request(a, 0.0)
    t = run_to_completion(eng)
    # b shares the first 4 blocks, then differs
    b = EngineRequest("b", t, 80, 2, hashes(1, 2, 3, 4, 9))
    # c repeats a's prompt exactly: all 6 full blocks hit (96 tokens), the 4-token tail is computed
    c = EngineRequest("c", t, 100, 2, hashes(1, 2, 3, 4, 5, 6))
    # d is exactly 96 tokens = 6 full blocks: the last block is recomputed to get logits -> 5 blocks hit
    d = EngineRequest("d", t, 96, 2, hashes(1, 2, 3, 4, 5, 6))
    # e shares nothing (first block differs, so later equal hashes cannot match: chain semantics)
    e = EngineRequest("e", t, 64, 2, hashes(7, 2, 3, 4))
    for r in (b, c, d, e):
        eng.add_request(r, t)
    run_to_completion(eng, t)
    assert a.num_hit_tokens == 0
    assert b.num_hit_tokens == 64
    assert c.num_hit_tokens == 96
    assert d.num_hit_tokens == 80
    assert e.num_hit_tokens == 0


def test_same_step_admissions_share_blocks_cached_at_schedule_time(make_engine):
    eng = make_engine(num_blocks=100, block_size=16)
    reqs = [EngineRequest(i, 0.0, 40, 3, hashes(1, 2)) for i in range(3)]
    for r in reqs:
        eng.add_request(r, 0.0)
    res = eng.step(0.0)
    assert [r.num_hit_tokens for r in reqs] == [0, 32, 32]
    # the two hitters only compute their 8-token tails
    assert res.num_tokens == 40 + 8 + 8
    # the shared blocks are referenced three times
    shared = reqs[0].block_ids[:2]
    assert [eng.pool.ref_cnt[b] for b in shared] == [3, 3]


def test_prefix_caching_off_never_hits(make_engine):
    eng = make_engine(num_blocks=100, block_size=16, enable_prefix_caching=False)
    a = EngineRequest("a", 0.0, 64, 2, hashes(1, 2, 3, 4))
    eng.add_request(a, 0.0)
    t = run_to_completion(eng)
    b = EngineRequest("b", t, 64, 2, hashes(1, 2, 3, 4))
    eng.add_request(b, t)
    run_to_completion(eng, t)
    assert b.num_hit_tokens == 0
    assert eng.pool.num_cached == 0


def test_evicted_prefix_is_recomputed(make_engine):
    # 8 blocks in total: after a finishes its 4 blocks are cached; b (8 new blocks) evicts them all
    eng = make_engine(num_blocks=8, block_size=16)
    a = EngineRequest("a", 0.0, 64, 1, hashes(1, 2, 3, 4))
    eng.add_request(a, 0.0)
    t = run_to_completion(eng)
    assert eng.pool.num_cached == 4
    b = EngineRequest("b", t, 120, 1, hashes(11, 12, 13, 14, 15, 16, 17))
    eng.add_request(b, t)
    t = run_to_completion(eng, t)
    c = EngineRequest("c", t, 64, 1, hashes(1, 2, 3, 4))
    eng.add_request(c, t)
    run_to_completion(eng, t)
    assert c.num_hit_tokens == 0
    assert eng.pool.num_evictions >= 4
