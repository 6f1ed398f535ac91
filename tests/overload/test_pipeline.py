"""Pipelined execution: micro-batches, the cyclic period, bubbles, and exact fast-forward."""

from __future__ import annotations

import numpy as np
import pytest

from tests.engine.test_engine_lifecycle import drive as drive_engine
from wildserve.engine import Engine, EngineConfig, EngineRequest
from wildserve.engine.costing import ModelCosting
from wildserve.engine.scheduler import SchedulerOutput
from wildserve.overload.pipeline import (
    PipelineCosting,
    cyclic_period,
    decode_microbatches,
    fill_makespan,
    mixed_microbatches,
)
from wildserve.perf import build_cost_model


def plan(items: list[tuple[int, int, int]]) -> SchedulerOutput:
    """(new tokens, context tokens, outputs so far) per request -> a scheduler output."""
    out = SchedulerOutput()
    for i, (n, ctx, outs) in enumerate(items):
        req = EngineRequest(i, 0.0, ctx + n - outs if outs else ctx + n + 100, 500)
        req.num_output_tokens = outs
        req.num_computed_tokens = ctx
        out.scheduled.append(req)
        out.num_new_tokens.append(n)
        out.context_tokens.append(ctx)
        out.is_pure_decode &= n == 1 and outs > 0 and ctx == req.num_tokens - 1
    return out


def test_mixed_microbatches_balance_tokens_and_chunk_long_prompts_in_order():
    out = plan([(3000, 0, 0), (500, 200, 0)] + [(1, 900 + i, 5) for i in range(40)])
    shapes = mixed_microbatches(out, 4)
    tokens = [s.num_tokens for s in shapes]
    assert sum(tokens) == 3540 and len(shapes) == 4
    assert max(tokens) - min(tokens) <= 1  # balanced by token count
    # the 3000-token prompt is chunked over the first micro-batches, in order: only its
    # last chunk (and the decodes) sample a token
    assert shapes[0].num_prefill_tokens == 885 and shapes[0].num_sampled == 0
    assert shapes[0].prefill_ctx_tokens == 0 and shapes[1].prefill_ctx_tokens == 885
    assert sum(s.num_sampled for s in shapes) == 40  # decodes; prompts end with no sampling here
    assert sum(s.num_decode_tokens for s in shapes) == 40


def test_decode_microbatches_snake_and_stable_while_decoding():
    ctx = [5000, 100, 4000, 300, 2000, 50, 1000]
    out = plan([(1, c, 3) for c in ctx])
    seqs, reads = decode_microbatches(out, 3)
    assert sorted(seqs) == [2, 2, 3] and sum(reads) == sum(c + 1 for c in ctx)
    grown = plan([(1, c + 17, 3) for c in ctx])  # 17 steps later, same requests
    seqs2, reads2 = decode_microbatches(grown, 3)
    assert seqs2 == seqs
    assert [r2 - r for r, r2 in zip(reads, reads2, strict=True)] == [17 * n for n in seqs]


def test_cyclic_period_by_hand():
    a = lambda x: np.array([float(x)])  # noqa: E731
    period, work = cyclic_period([[a(1), a(2)], [a(3), a(4)]], [a(0.5), a(0.5)])
    assert period[0] == 7.0 and work[0] == 10.0  # stage 1 (3 + 4) is the bottleneck
    # a single micro-batch: its round trip bounds the period (stages wait on each other)
    period, work = cyclic_period([[a(1)], [a(3)]], [a(0.5)])
    assert period[0] == 4.5 and work[0] == 4.0


@pytest.fixture(scope="module")
def cost():
    return build_cost_model("analytic", "qwen2.5-14b", "h100")


def test_pipeline_step_costs_about_a_whole_model_step(cost):
    out = plan([(1, 1500 + 7 * i, 10) for i in range(128)])
    whole = ModelCosting(cost).step_time(out)
    for g in (2, 4):
        pipe = PipelineCosting(cost, [48 // g] * g)
        t = pipe.step_time(out)
        assert whole / g < t < 1.5 * whole
        assert 0.0 <= 1 - pipe.last_work[0] / (g * t) < 0.5  # some, but not mostly, bubbles
    one = plan([(1, 1500, 10)])
    pipe = PipelineCosting(cost, [12] * 4)
    assert pipe.step_time(one) >= ModelCosting(cost).step_time(one)  # nothing to overlap


def drive(engine: Engine, reqs: list[EngineRequest]) -> int:
    """The engine tests' driver; returns how many ``step`` calls it took."""
    calls = 0
    step = engine.step

    def counted(*args, **kwargs):
        nonlocal calls
        calls += 1
        return step(*args, **kwargs)

    engine.step = counted
    drive_engine(engine, reqs)
    return calls


@pytest.mark.parametrize("stages", [[24, 24], [12, 12, 12, 12], [16, 16, 16]])
def test_pipeline_fast_forward_is_exactly_single_steps(cost, stages):
    runs = []
    for ff in (0, 1024):
        rng = np.random.default_rng(7)
        reqs, t = [], 0.0
        for i in range(60):
            t += rng.exponential(0.2)
            reqs.append(EngineRequest(i, t, int(rng.integers(50, 3000)), int(rng.integers(1, 300))))
        eng = Engine(EngineConfig(max_fast_forward_steps=ff), cost, num_blocks=900)
        eng.costing = PipelineCosting(cost, stages)
        runs.append((reqs, eng, drive(eng, reqs)))
    (ra, ea, ca), (rb, eb, cb) = runs
    assert ca == len(ea.step_end_s) and cb < ca / 3  # the second run did fast-forward
    assert ea.num_preemptions == eb.num_preemptions > 0
    np.testing.assert_array_equal(np.asarray(ea.step_end_s), np.asarray(eb.step_end_s))
    for x, y in zip(ra, rb, strict=True):
        assert x.token_times(ea.step_end_s) == y.token_times(eb.step_end_s)


def test_fill_makespan_by_hand():
    # g stages, m micro-batches, every stage time t, hop h: the last micro-batch leaves the last
    # stage after (g + m - 1) t + (g - 1) h; the steady period is max(m t, g t + (g - 1) h)
    t, h, g, m = 2.0, 0.5, 3, 4
    times = [[np.array([t]) for _ in range(m)] for _ in range(g)]
    hops = [np.array([h]) for _ in range(m)]
    assert fill_makespan(times, hops)[0] == pytest.approx((g + m - 1) * t + (g - 1) * h)
    period, _ = cyclic_period(times, hops)
    assert period[0] == pytest.approx(max(m * t, g * t + (g - 1) * h))


@pytest.mark.parametrize("decode", [False, True])
def test_only_the_first_step_of_a_new_pipeline_pays_the_fill(decode):
    cost = build_cost_model("analytic", "qwen2.5-14b", "h100", 1)
    out = plan([(1, 900 + i, 5) for i in range(64)] if decode else [(2000, 0, 0), (1, 700, 3)])
    fresh = PipelineCosting(cost, [24, 24], charge_fill=True)
    steady = PipelineCosting(cost, [24, 24])
    if decode:
        first, second = fresh.decode_run_times(out, 2)
        plain_first, plain_second = steady.decode_run_times(out, 2)
    else:
        first, second = fresh.step_time(out), fresh.step_time(out)
        plain_first = plain_second = steady.step_time(out)
    assert second == pytest.approx(plain_second)
    assert fresh.stats.fill_s > 0 and first == pytest.approx(plain_first + fresh.stats.fill_s)
