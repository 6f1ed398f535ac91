"""The small engine hooks the overload systems use: costing, detach/attach, resizing, preemption."""

from __future__ import annotations

import itertools

import numpy as np

from wildserve.engine import Engine, EngineConfig, EngineRequest, RequestStatus
from wildserve.engine.costing import ModelCosting
from wildserve.engine.scheduler import PreemptionPolicy
from wildserve.perf.linear import LinearCostModel


def step_until(engine: Engine, now: float, cond) -> float:
    while not cond():
        res = engine.step(now)
        assert res.num_steps > 0
        now = res.end_s
    return now


def run(engine: Engine, now: float) -> float:
    return step_until(engine, now, lambda: not engine.has_work)


class CountingCosting(ModelCosting):
    def __init__(self, cost):
        super().__init__(cost)
        self.calls = 0

    def step_time(self, out):
        self.calls += 1
        return 2.0 * super().step_time(out)


def test_costing_hook_replaces_step_durations():
    cost = LinearCostModel(base_s=0.01, per_token_s=1e-4)
    eng = Engine(EngineConfig(max_fast_forward_steps=0), cost, num_blocks=100)
    eng.costing = CountingCosting(cost)
    eng.add_request(EngineRequest("a", 0.0, 100, 3), 0.0)
    res = eng.step(0.0)
    assert eng.costing.calls == 1
    assert res.duration_s == 2.0 * (0.01 + 1e-4 * 100)


def test_detach_attach_moves_a_running_request_with_its_kv_and_tokens():
    cost = LinearCostModel(base_s=0.01, per_token_s=1e-5)
    a = Engine(EngineConfig(), cost, num_blocks=50, instance_id=0)
    b = Engine(EngineConfig(), cost, num_blocks=50, instance_id=1)
    req = EngineRequest("r", 0.0, 70, 20, block_hashes=[11, 12, 13, 14])
    a.add_request(req, 0.0)
    now = step_until(a, 0.0, lambda: req.num_output_tokens >= 5)
    computed = req.num_computed_tokens
    a.detach(req, now)
    assert a.pool.num_used == 0 and not a.has_work and len(req.block_ids) == 0
    assert len(req.past_token_times) == 5 and req.status == RequestStatus.RUNNING
    assert b.attach(req, now + 0.5, with_kv=True)
    assert len(req.block_ids) == -(-computed // 16) and req.num_computed_tokens == computed
    assert b.pool.num_cached == 4  # its full prompt blocks are registered for prefix hits
    end = run(b, now + 0.5)
    assert req.status == RequestStatus.FINISHED_LENGTH and req.finish_s == end
    times = req.token_times(b.step_end_s)
    assert len(times) == 20 and all(y > x for x, y in itertools.pairwise(times))
    assert times[5] - times[4] > 0.5  # the move cost time between tokens 5 and 6
    assert b.queued_prefill_tokens == 0 and b.pool.num_used == 0


def test_attach_without_kv_recomputes_and_attach_refuses_what_does_not_fit():
    cost = LinearCostModel()
    a = Engine(EngineConfig(), cost, num_blocks=40)
    small = Engine(EngineConfig(), cost, num_blocks=3)
    req = EngineRequest("r", 0.0, 64, 10)
    a.add_request(req, 0.0)
    now = step_until(a, 0.0, lambda: req.num_output_tokens >= 3)
    a.detach(req, now)
    assert not small.attach(req, now, with_kv=True)  # 5 blocks do not fit in 3
    assert len(req.block_ids) == 0 and not small.has_work
    c = Engine(EngineConfig(), cost, num_blocks=40)
    assert c.attach(req, now, with_kv=False)
    assert req.status == RequestStatus.PREEMPTED and req.num_computed_tokens == 0
    assert c.queued_prefill_tokens == req.num_tokens
    run(c, now)
    assert req.num_output_tokens == 10 and len(req.token_times(c.step_end_s)) == 10


def test_resize_and_reconfigure():
    eng = Engine(EngineConfig(), LinearCostModel(), num_blocks=10)
    eng.resize_kv(25, 0.0)
    assert eng.pool.num_blocks == 25 and eng.pool.num_free == 25
    eng.resize_kv(5, 0.0)
    assert eng.pool.num_blocks == 5
    cfg = EngineConfig(max_num_seqs=7)
    eng.reconfigure(cfg)
    assert eng.scheduler.config is cfg and eng.config is cfg


class RecordingPreemption(PreemptionPolicy):
    def __init__(self):
        self.victims = []
        self.steps = 0

    def begin_step(self, sched, now):
        self.steps += 1

    def preempt(self, sched, req, now):
        self.victims.append(req.request_id)
        super().preempt(sched, req, now)


def test_preemption_hook_sees_every_victim_and_default_is_recompute():
    eng = Engine(EngineConfig(max_fast_forward_steps=0), LinearCostModel(), num_blocks=12)
    hook = RecordingPreemption()
    eng.scheduler.preemption = hook
    a, b = EngineRequest("a", 0.0, 48, 90), EngineRequest("b", 0.0, 48, 90)
    eng.add_request(a, 0.0)
    eng.add_request(b, 0.0)
    run(eng, 0.0)
    assert hook.victims and hook.victims[0] == "b" and hook.steps == len(eng.step_end_s)
    assert b.num_preemptions == hook.victims.count("b")
    assert a.num_output_tokens == b.num_output_tokens == 90


def test_default_costing_fast_forward_unchanged():
    cost = LinearCostModel(base_s=0.004, per_token_s=3e-5, per_decode_ctx_s=1e-7)
    ends = []
    for ff in (0, 512):
        eng = Engine(EngineConfig(max_fast_forward_steps=ff), cost, num_blocks=400)
        for i in range(6):
            eng.add_request(EngineRequest(i, 0.0, 100 + 37 * i, 60 + 5 * i), 0.0)
        now = 0.0
        while eng.has_work:
            now = eng.step(now, horizon=np.inf).end_s
        ends.append(np.asarray(eng.step_end_s))
    np.testing.assert_allclose(ends[0], ends[1], rtol=1e-12)
