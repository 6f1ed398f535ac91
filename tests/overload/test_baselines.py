"""Each baseline's distinctive behaviour on a small scenario: vLLM's recompute preemption and
watermark, InferCept's swap out and in (and its waste rule), and the burst workload transform."""

from __future__ import annotations

import itertools

import pytest

from tests.overload.conftest import small_cluster
from wildserve.engine import Engine, EngineRequest, RequestStatus
from wildserve.errors import ConfigError
from wildserve.kvcache.host import HostMemory
from wildserve.overload.infercept import InferCeptConfig, InferCeptPreemption
from wildserve.overload.layout import build_layered_cluster
from wildserve.workload.request import Request
from wildserve.workload.transforms import burst


def engine(util: float = 0.42, **cfg) -> Engine:
    """One Qwen2.5-14B instance on an H100 with ~19k KV tokens."""
    return build_layered_cluster(small_cluster(1, util=util, **cfg)).engines[0]


def drive(eng: Engine, reqs: list[EngineRequest]) -> int:
    """Run to completion from t=0; returns the tokens computed (prefill + decode)."""
    for r in reqs:
        assert eng.add_request(r, 0.0)
    now, tokens = 0.0, 0
    while eng.has_work:
        res = eng.step(now, horizon=float("inf"))
        assert res.num_steps > 0
        tokens += res.num_tokens
        now = res.end_s
    return tokens


def long_decodes() -> list[EngineRequest]:
    return [EngineRequest(i, 0.0, 4000, 2200) for i in range(4)]  # 24.8k tokens > 19k


def check_finished(eng: Engine, reqs: list[EngineRequest]) -> None:
    for r in reqs:
        assert r.status == RequestStatus.FINISHED_LENGTH and r.num_output_tokens == 2200
        times = r.token_times(eng.step_end_s)
        assert len(times) == 2200 and all(b > a for a, b in itertools.pairwise(times))
    assert eng.pool.num_used == 0 and eng.queued_prefill_tokens == 0


def test_vllm_preempts_the_newest_by_recompute():
    eng = engine()
    reqs = long_decodes()
    tokens = drive(eng, reqs)
    check_finished(eng, reqs)
    assert eng.num_preemptions > 0 and reqs[-1].num_preemptions > 0
    assert reqs[0].num_preemptions == 0  # the oldest is never the victim
    assert tokens > sum(r.num_tokens for r in reqs)  # preempted KV was computed again


def test_vllm_watermark_holds_new_requests_back():
    eng = engine(watermark=0.2)
    reserve = int(0.2 * eng.pool.num_blocks)
    big = EngineRequest("big", 0.0, 16 * (eng.pool.num_blocks - reserve - 10), 40)
    small = EngineRequest("small", 0.0, 320, 5)  # 20 blocks: free, but inside the watermark
    eng.add_request(big, 0.0)
    eng.add_request(small, 0.0)
    now = 0.0
    while big.num_output_tokens == 0:
        res = eng.step(now)
        assert small not in res.scheduled
        now = res.end_s
    assert eng.pool.num_free >= 20 and small.status == RequestStatus.WAITING
    while not small.is_finished:
        res = eng.step(now)
        now = res.end_s
    assert small.first_scheduled_s >= big.finish_s  # admitted only once big released its blocks


def test_infercept_swaps_out_and_back_in_without_recompute():
    eng = engine()
    policy = InferCeptPreemption(eng, cfg=InferCeptConfig(swap_budget=50.0, allow_preserve=False))
    eng.scheduler.preemption = policy
    reqs = long_decodes()
    tokens = drive(eng, reqs)
    check_finished(eng, reqs)
    assert policy.counts["swap"] > 0 and policy.counts["swap_in"] == policy.counts["swap"]
    assert policy.counts["discard"] == 0
    assert policy.host.used_bytes == 0 and not policy.swapped
    # swapped KV came back over PCIe: every token was computed exactly once
    assert tokens == sum(r.num_tokens - 1 for r in reqs)


def test_infercept_discards_without_budget_and_host_memory():
    eng = engine()
    host = HostMemory.for_cost_model(0, eng.cost_model)  # no host memory: swapping impossible
    policy = InferCeptPreemption(eng, host, InferCeptConfig(allow_preserve=False))
    eng.scheduler.preemption = policy
    reqs = long_decodes()
    tokens = drive(eng, reqs)
    check_finished(eng, reqs)
    assert policy.counts["discard"] > 0 and policy.counts["swap"] == 0
    assert tokens > sum(r.num_tokens for r in reqs)


def test_infercept_waste_rule_prefers_the_cheapest_option():
    eng = engine()
    policy = InferCeptPreemption(eng)
    eng.scheduler.preemption = policy
    for r in long_decodes()[:2]:
        eng.add_request(r, 0.0)
    now = 0.0
    for _ in range(30):
        now = eng.step(now).end_s
    sched = eng.scheduler
    victim = sched.running[-1]
    policy.begin_step(sched, now)
    w = policy.waste(sched, victim)
    assert set(w) == {"discard", "swap", "preserve"}
    m = victim.num_computed_tokens * policy.token_bytes
    assert w["swap"] == pytest.approx(2 * policy.host.transfer_time(m) * m)
    # recomputing ~4k tokens costs far more than moving 0.8 GB over PCIe
    assert w["swap"] < w["discard"]
    policy.budget_s = 0.0  # the copy no longer hides behind a step: swap is not an option
    assert "swap" not in policy.waste(sched, victim)


def test_burst_replicates_the_window_with_distinct_prefixes():
    reqs = [Request(i, float(i), 100, 10, (i % 3, 7 + i % 3), 512) for i in range(20)]
    out = burst(reqs, 5.0, 4.0, 2.5)  # requests 5..8 get 1.5 copies each on average
    assert [r.request_id for r in out] == list(range(len(out)))
    copies = [r for r in out if "burst_copy" in r.extra]
    assert len(copies) == 6 and all(5.0 <= r.arrival_s < 9.0 for r in copies)
    assert sorted(r.arrival_s for r in out) == [r.arrival_s for r in out]
    originals = {r.hash_ids for r in out if "burst_copy" not in r.extra}
    assert not originals & {r.hash_ids for r in copies}  # copies never hit an original's prefix
    firsts = [r for r in copies if r.extra["burst_copy"] == 1]
    assert len({r.hash_ids[0] for r in firsts}) == len({r.hash_ids[0] - 0 for r in firsts}) > 1
    assert reqs[7].request_id == 7 and "burst_copy" not in reqs[7].extra  # input unchanged
    assert len(burst(reqs, 5.0, 4.0, 1.0)) == 20
    with pytest.raises(ConfigError):
        burst(reqs, 0.0, 1.0, 0.5)


def test_infercept_preserves_a_victim_when_memory_frees_soon():
    # b must be admitted on its first chunk (as vLLM did before it reserved whole prompts, and as
    # InferCept's vLLM did): with the whole-prompt check it waits for a and is never paused
    eng = engine(scheduler_reserve_full_isl=False)
    host = HostMemory.for_cost_model(0, eng.cost_model)  # no swapping
    policy = InferCeptPreemption(eng, host, InferCeptConfig())
    eng.scheduler.preemption = policy
    n, half = eng.pool.num_blocks, eng.pool.num_blocks // 2
    # "a" finishes inside its last block; "b" fills the rest and needs a block after 3 tokens,
    # when none is free: pausing "b" with its KV ~15 steps beats recomputing its ~9k tokens
    a = EngineRequest("a", 0.0, 16 * half - 20, 18)
    b = EngineRequest("b", 0.0, 16 * (n - half) - 3, 200)
    tokens = drive(eng, [a, b])
    assert policy.counts["preserve"] >= 1 and policy.counts["discard"] == 0
    assert b.num_preemptions >= 1 and b.first_token_s < a.finish_s
    assert tokens == a.num_tokens - 1 + b.num_tokens - 1  # nothing was recomputed
    for r in (a, b):
        assert r.status == RequestStatus.FINISHED_LENGTH
        assert len(r.token_times(eng.step_end_s)) == r.max_output_tokens
    assert eng.pool.num_used == 0


class AlwaysPreserve(InferCeptPreemption):
    """Preserves every victim while anything else runs, feasible or not: the worst case."""

    def waste(self, sched, req):
        return {"preserve": 0.0} if sched.running else super().waste(sched, req)


def test_infercept_preserved_kv_is_discarded_rather_than_deadlock():
    eng = engine()
    policy = AlwaysPreserve(eng, HostMemory.for_cost_model(0, eng.cost_model))
    eng.scheduler.preemption = policy
    reqs = [EngineRequest(i, 0.0, 2000 + 700 * i, 1500 + 800 * (i % 2)) for i in range(7)]
    drive(eng, reqs)  # asserts every step makes progress
    for r in reqs:
        assert r.status == RequestStatus.FINISHED_LENGTH
        assert len(r.token_times(eng.step_end_s)) == r.max_output_tokens
    assert policy.counts["preserve"] > 0 and policy.counts["unstick"] > 0
    assert eng.pool.num_used == 0
