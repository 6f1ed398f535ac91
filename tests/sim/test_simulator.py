"""Cluster runs: every request is dispatched and finished once; fast-forward changes nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wildserve.engine import Engine, EngineConfig
from wildserve.perf.linear import LinearCostModel
from wildserve.routing import make_policy
from wildserve.sim.simulator import Simulator
from wildserve.workload.request import Request


def synthetic(n: int, seed: int, rate: float = 40.0) -> list[Request]:
    rng = np.random.default_rng(seed)
    t, out = 0.0, []
    for i in range(n):
        t += rng.exponential(1 / rate)
        prompt = int(rng.integers(64, 4000))
        family = int(rng.integers(0, 4))
        ids = tuple([family] + [10_000 + i * 100 + j for j in range(-(-prompt // 512) - 1)])
        out.append(Request(i, t, prompt, int(rng.integers(1, 300)), ids, 512))
    return out


def run(reqs, policy="least-requests", ff=1024, num_blocks=3000, n=4):
    cost = LinearCostModel(base_s=0.004, per_token_s=4e-5, per_decode_ctx_s=5e-8)
    engines = [
        Engine(EngineConfig(max_fast_forward_steps=ff), cost, num_blocks=num_blocks, instance_id=i)
        for i in range(n)
    ]
    return Simulator(engines, make_policy(policy)).run(reqs)


@pytest.mark.parametrize("policy", ["round-robin", "least-requests"])
def test_every_request_finishes_once_with_its_tokens(policy):
    reqs = synthetic(400, 1)
    res = run(reqs, policy)
    assert len(res.requests) == len(reqs)
    assert all(i >= 0 for i in res.instances)
    assert sum(e.num_finished for e in res.engines) == len(reqs)
    for src, er in zip(reqs, res.requests, strict=True):
        assert er.source is src
        inst = res.engines[res.instances[src.request_id]]
        assert len(er.token_times(inst.step_end_s)) == max(1, src.output_tokens)
    m = res.metrics()
    assert m.num_finished == len(reqs) and m.num_aborted == 0
    assert (m.ttft > 0).all() and (m.e2e >= m.ttft).all()


def test_fast_forward_matches_single_steps_across_a_cluster():
    reqs = synthetic(300, 2)
    a = run(reqs, ff=0, num_blocks=800).metrics()
    b = run(reqs, ff=1024, num_blocks=800).metrics()
    np.testing.assert_allclose(a.ttft, b.ttft, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.e2e, b.e2e, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(a.hit_tokens, b.hit_tokens)
    np.testing.assert_array_equal(a.instance, b.instance)


def test_round_robin_spreads_and_hits_need_locality():
    reqs = synthetic(200, 3)
    res = run(reqs, "round-robin")
    assert np.bincount(res.metrics().instance).tolist() == [50, 50, 50, 50]
    # Only the first trace block (the family) is shared. A request can hit only if an earlier one of
    # its family went to the same instance, and then at most on that block.
    seen: set[tuple[int, int]] = set()
    for src, er in zip(reqs, res.requests, strict=True):  # arrival order is dispatch order
        where = (res.instances[src.request_id], src.hash_ids[0])
        if where not in seen:
            assert er.num_hit_tokens == 0, src
        assert er.num_hit_tokens <= min(src.block_size, src.prompt_tokens), src
        seen.add(where)
    assert sum(er.num_hit_tokens for er in res.requests) > 0
    # the same arrivals and lengths without shared blocks: nothing hits
    alone = [dataclasses.replace(r, hash_ids=(-1 - r.request_id, *r.hash_ids[1:])) for r in reqs]
    assert run(alone, "round-robin").metrics().hit_tokens.sum() == 0


def test_shared_prefix_index_gives_the_same_run_as_per_engine_lookups():
    from wildserve.sim.simulator import ExactViews

    reqs = synthetic(300, 6)
    cost = LinearCostModel(base_s=0.004, per_token_s=4e-5, per_decode_ctx_s=5e-8)
    results = []
    for shared in (False, True):
        engines = [Engine(EngineConfig(), cost, num_blocks=900, instance_id=i) for i in range(4)]
        views = ExactViews(engines, shared_index=shared)
        assert (views.index is not None) == shared
        results.append(Simulator(engines, make_policy("lmetric"), views=views).run(reqs).metrics())
    np.testing.assert_array_equal(results[0].instance, results[1].instance)
    np.testing.assert_allclose(results[0].ttft, results[1].ttft)


def test_exact_views_carry_the_engines_load_figures_mid_run():
    """The views (built positionally from ``Engine.route_load``) say what ``Engine.load`` says, and
    that is what the engine's scheduler and block pool hold (``load`` unpacks ``route_load`` into
    ``EngineLoad`` by position too: a field out of order fails here)."""
    from wildserve.routing.view import InstanceView, RouteRequest
    from wildserve.sim.simulator import ExactViews

    reqs = synthetic(120, 3, rate=400.0)
    cost = LinearCostModel(base_s=0.004, per_token_s=4e-5, per_decode_ctx_s=5e-8)
    engines = [Engine(EngineConfig(), cost, num_blocks=700, instance_id=i) for i in range(3)]
    sim = Simulator(engines, make_policy("least-requests"))
    sim.run(reqs[:80])  # leaves caches filled; then queue 20 more and step each engine once
    sim.requests = list(reqs[80:100])
    sim.engine_requests, sim.instances = [], [-1] * 20
    for i in range(20):
        sim.dispatch(i, 100.0)
    for e in engines:
        e.step(100.0, horizon=100.0)
    hashes = reqs[100].engine_block_hashes(16)
    route = RouteRequest(1, reqs[100].prompt_tokens, hashes, 16)
    views = ExactViews(engines).views(route)
    assert any(v.num_waiting for v in views) and any(v.kv_usage for v in views)
    for i, (e, v) in enumerate(zip(engines, views, strict=True)):
        load = e.load()
        sched, pool = e.scheduler, e.pool
        assert (load.num_running, load.num_waiting, load.queued_prefill_tokens) == (
            len(sched.running), len(sched.waiting), sched.queued_prefill_tokens
        )  # fmt: skip
        assert (load.kv_usage, load.num_kv_blocks, load.num_free_blocks) == (
            pool.usage(), pool.num_blocks, pool.num_free
        )  # fmt: skip
        want = InstanceView(
            instance_id=i,
            num_running=load.num_running,
            num_waiting=load.num_waiting,
            queued_prefill_tokens=load.queued_prefill_tokens,
            kv_usage=load.kv_usage,
            num_kv_blocks=load.num_kv_blocks,
            block_size=16,
        )
        assert v == want  # match_blocks is not compared
        assert v.cached_blocks(hashes) == e.cached_blocks(hashes)
    assert any(v.cached_blocks(hashes) for v in views) or not hashes
