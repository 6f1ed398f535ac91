"""Every request finishes once with exactly its tokens; budgets, TTFT bounds, preemption, fast-forward."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.engine.conftest import RecordingCost, run_to_completion
from wildserve.engine import Engine, EngineConfig, EngineRequest, RequestStatus
from wildserve.perf.linear import LinearCostModel


def random_requests(
    rng: np.random.Generator, n: int, shared_blocks: int = 4
) -> list[EngineRequest]:
    reqs = []
    t = 0.0
    for i in range(n):
        t += rng.exponential(0.05)
        prompt = int(rng.integers(20, 3000))
        out = int(rng.integers(1, 200))
        nblk = prompt // 16
        family = int(rng.integers(0, 3))
        hs = [family * 10_000 + j for j in range(min(shared_blocks, nblk))]
        hs += [i * 1_000_000 + j for j in range(len(hs), nblk)]
        reqs.append(EngineRequest(i, t, prompt, out, hs))
    return reqs


def drive(engine: Engine, reqs: list[EngineRequest]) -> None:
    """Feed arrivals at their times and step in between, as the simulator does."""
    now, i = 0.0, 0
    pending = sorted(reqs, key=lambda r: r.arrival_s)
    while i < len(pending) or engine.has_work:
        while i < len(pending) and pending[i].arrival_s <= now:
            engine.add_request(pending[i], now)
            i += 1
        horizon = pending[i].arrival_s if i < len(pending) else float("inf")
        if not engine.has_work:
            now = horizon
            continue
        res = engine.step(now, horizon=horizon)
        assert res.num_steps > 0
        now = res.end_s


@pytest.mark.parametrize("num_blocks", [4000, 300])
def test_each_request_finishes_once_with_exact_tokens(num_blocks):
    rng = np.random.default_rng(1)
    reqs = random_requests(rng, 120)
    eng = Engine(
        EngineConfig(max_num_batched_tokens=2048), LinearCostModel(), num_blocks=num_blocks
    )
    drive(eng, reqs)
    assert eng.num_finished == len(reqs)
    for r in reqs:
        assert r.status == RequestStatus.FINISHED_LENGTH
        times = r.token_times(eng.step_end_s)
        assert len(times) == r.num_output_tokens == r.max_output_tokens
        assert all(b > a for a, b in itertools.pairwise(times))
        assert times[0] == r.first_token_s and times[-1] == r.finish_s
        assert r.arrival_s <= r.first_scheduled_s < r.first_token_s
        assert len(r.block_ids) == 0
    assert eng.pool.num_free == eng.pool.num_blocks
    assert eng.queued_prefill_tokens == 0
    if num_blocks == 300:
        assert eng.num_preemptions > 0  # KV is tight: preemption must have happened


def test_preemption_by_recompute_keeps_outputs_and_finishes():
    # two requests that together outgrow 12 blocks of 16 tokens while decoding
    eng = Engine(EngineConfig(), LinearCostModel(), num_blocks=12)
    a = EngineRequest("a", 0.0, 48, 90)
    b = EngineRequest("b", 0.0, 48, 90)
    eng.add_request(a, 0.0)
    eng.add_request(b, 0.0)
    preempted = []
    now = 0.0
    while eng.has_work:
        res = eng.step(now)
        preempted += res.preempted
        now = res.end_s
    assert preempted and preempted[0] is b  # the newest running request goes first
    assert b.num_preemptions >= 1
    assert a.num_output_tokens == b.num_output_tokens == 90
    assert len(b.token_times(eng.step_end_s)) == 90


def test_chunked_prefill_never_exceeds_budget():
    cost = RecordingCost()
    rng = np.random.default_rng(2)
    reqs = random_requests(rng, 60)
    eng = Engine(EngineConfig(max_num_batched_tokens=512, max_num_seqs=8), cost, num_blocks=5000)
    drive(eng, reqs)
    assert cost.shapes and max(s.num_tokens for s in cost.shapes) <= 512
    assert max(s.num_prefill_seqs + s.num_decode_tokens for s in cost.shapes) <= 8
    assert any(s.num_tokens == 512 and s.num_prefill_tokens > 0 for s in cost.shapes)  # chunked


def test_ttft_never_below_own_prefill_time():
    cost = LinearCostModel(base_s=0.003, per_token_s=1e-4)
    rng = np.random.default_rng(3)
    reqs = random_requests(rng, 150)
    budget = 1024
    eng = Engine(EngineConfig(max_num_batched_tokens=budget), cost, num_blocks=4000)
    drive(eng, reqs)
    for r in reqs:
        uncached = r.num_prompt_tokens - r.num_hit_tokens
        chunks = -(-uncached // budget)
        own = chunks * cost.base_s + cost.per_token_s * uncached
        assert r.first_token_s - r.arrival_s >= own - 1e-12


@pytest.mark.parametrize("num_blocks", [700, 250])
def test_fast_forward_is_exactly_stepping(num_blocks):
    cost = LinearCostModel(base_s=0.004, per_token_s=3e-5, per_decode_ctx_s=1e-7)
    runs = []
    for ff in (0, 1024):
        reqs = random_requests(np.random.default_rng(4), 200)
        eng = Engine(EngineConfig(max_fast_forward_steps=ff), cost, num_blocks=num_blocks)
        drive(eng, reqs)
        runs.append((reqs, eng))
    (ra, ea), (rb, eb) = runs
    assert len(eb.step_end_s) == len(ea.step_end_s)
    assert ea.num_preemptions == eb.num_preemptions > 0
    for x, y in zip(ra, rb, strict=True):
        assert x.num_hit_tokens == y.num_hit_tokens
        np.testing.assert_allclose(
            x.token_times(ea.step_end_s), y.token_times(eb.step_end_s), rtol=1e-9
        )


def test_request_too_large_for_the_instance_is_aborted():
    eng = Engine(EngineConfig(), LinearCostModel(), num_blocks=4)
    r = EngineRequest("big", 0.0, 100, 10)
    assert not eng.add_request(r, 0.0)
    assert r.status == RequestStatus.FINISHED_ABORTED and not eng.has_work
    assert run_to_completion(eng) == 0.0


def test_without_a_step_log_requests_still_get_every_token_and_timestamp():
    rng = np.random.default_rng(9)
    logged, unlogged = random_requests(rng, 80), random_requests(np.random.default_rng(9), 80)
    a = Engine(EngineConfig(), LinearCostModel(), num_blocks=2000)
    b = Engine(EngineConfig(record_token_times=False), LinearCostModel(), num_blocks=2000)
    drive(a, logged)
    drive(b, unlogged)
    assert len(b.step_end_s) == 0 and len(a.step_end_s) > 0
    for x, y in zip(logged, unlogged, strict=True):
        assert y.num_output_tokens == x.num_output_tokens == x.max_output_tokens
        assert (y.first_token_s, y.finish_s) == (x.first_token_s, x.finish_s)
        assert y.token_times(b.step_end_s) == []
