"""Rollout simulator on a fixed pool, against a small stand-in step-cost model (the real one lives
in wildserve.perf): hand-computed step times, pool accounting, and the planner's behaviour."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from wildserve.errors import ConfigError
from wildserve.perf.batch import BatchShape
from wildserve.rollout.sim_acceptance import BETA, DEPTH, AcceptanceTable, DrafterSpec
from wildserve.rollout.sim_planner import Ladder, plan_step
from wildserve.rollout.simulate import (
    DAPO_20K,
    MODES,
    LengthSpec,
    RolloutSimConfig,
    simulate_rollout,
    verify_shape,
)


@dataclass
class LinearCost:
    """Stand-in: a latency floor, plus weight reads, per-token compute and KV reads split over GPUs."""

    latency_s: float
    weights_s: float
    per_token_s: float
    per_ctx_s: float
    gpus: int

    def step_time(self, shape: BatchShape) -> float:
        ctx = shape.decode_ctx_tokens + shape.prefill_ctx_tokens
        work = self.weights_s + self.per_token_s * shape.num_tokens + self.per_ctx_s * ctx
        return self.latency_s + work / self.gpus

    def decode_run_times(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> np.ndarray:
        ctx = ctx_tokens + num_seqs * np.arange(num_steps)
        work = self.weights_s + self.per_token_s * num_seqs + self.per_ctx_s * ctx
        return self.latency_s + work / self.gpus


def costs(role: str, gpus: int) -> LinearCost:
    if role == "target":  # memory-bound decode: reading the weights dominates small batches
        return LinearCost(0.008, 0.16, 2e-5, 1e-8, gpus)
    # a small drafter sits on its latency floor: more GPUs barely help it
    return LinearCost(0.005, 0.004, 3e-6, 2e-9, gpus)


CONST20 = LengthSpec("const", 20.0, 0.0, 100)
ONE = RolloutSimConfig(
    pool_gpus=5,
    target_tp=4,
    draft_gpus=1,
    requests_per_instance=3,
    prompt_tokens=8,
    lengths=CONST20,
)


def model_table(beta: float) -> AcceptanceTable:
    return AcceptanceTable.from_traces(
        [DrafterSpec("draft-model", BETA, True)], [[np.array([beta])]], "const"
    )


def test_coupled_step_time_equals_the_hand_computed_sum():
    """beta = 1: every draft accepted, 3 requests gain k + 1 = 5 tokens per iteration: 4 iterations
    of k draft steps on the target's 4 GPUs plus one verify of 5 tokens per request."""
    res = simulate_rollout(ONE, costs, model_table(1.0), seed=0, modes=("coupled",))["coupled"]
    target, draft = costs("target", 4), costs("draft", 4)
    expected = 0.0
    for it in range(4):
        done = 5 * it
        ctx = 3 * (8 + done)
        expected += float(draft.decode_run_times(3, ctx + 3, 4).sum())
        shape = BatchShape(
            num_prefill_tokens=15,
            num_prefill_seqs=3,
            prefill_attn_pairs=3 * (5 * (8 + done) + 15),
            prefill_ctx_tokens=ctx,
            num_sampled=15,  # the LM head runs on every verified token
        )
        expected += target.step_time(shape)
    assert res.num_iterations == 4
    assert res.step_time_s == pytest.approx(expected, rel=1e-9)  # KV terms are tiny here


def decode_shape(num_seqs: int, ctx_each: int) -> BatchShape:
    """One plain decode step of ``num_seqs`` requests with ``ctx_each`` tokens already in KV."""
    return BatchShape(
        num_decode_tokens=num_seqs,
        decode_ctx_tokens=num_seqs * (ctx_each + 1),
        num_sampled=num_seqs,
    )


def test_no_spec_step_time_equals_the_hand_computed_sum():
    """3 requests of 20 tokens after 8-token prompts: 20 decode steps of batch 3."""
    res = simulate_rollout(ONE, costs, model_table(0.5), seed=0, modes=("no-spec",))["no-spec"]
    target = costs("target", 4)
    expected = sum(target.step_time(decode_shape(3, 8 + t)) for t in range(20))
    assert res.num_iterations == 20 and res.tokens_per_iteration == 1.0
    assert res.step_time_s == pytest.approx(expected, rel=1e-9)  # KV terms are tiny here


def test_decoupled_step_time_for_a_fixed_trace_equals_the_hand_computed_sum():
    """A fixed trace: the draft model's first 2 of any 4 drafts are accepted. Decoupled, each
    drafted iteration gains 3 tokens and costs max(4 draft steps on 1 GPU, a 5-token verify on 4);
    the rejection leaves the look-ahead stale, so the next iteration verifies no draft (1 token,
    a plain decode, no drafting). Lengths 20: 0 -> 3 -> 4 -> 7 -> ... -> 19 -> 20, 10 iterations."""
    trace = np.minimum(np.arange(1, 9), 2)[None, :].repeat(4, 0)
    table = AcceptanceTable.from_traces([DrafterSpec("draft-model", DEPTH, True)], [[trace]])
    res = simulate_rollout(ONE, costs, table, seed=0, modes=("decoupled",))["decoupled"]
    target, draft = costs("target", 4), costs("draft", 1)
    expected, done, stale, gains = 0.0, 0, False, []
    while done < 20:
        if stale:
            expected += target.step_time(decode_shape(3, 8 + done))
            gain = 1
        else:
            draft_s = sum(draft.step_time(decode_shape(3, 8 + done + s)) for s in range(4))
            verify = BatchShape(
                num_prefill_tokens=15,
                num_prefill_seqs=3,
                prefill_attn_pairs=3 * (5 * (8 + done) + 15),
                prefill_ctx_tokens=3 * (8 + done),
                num_sampled=15,
            )
            expected += max(draft_s, target.step_time(verify))
            gain = min(3, 20 - done)
        stale = not stale
        done += gain
        gains.append(gain)
    assert gains == [3, 1] * 4 + [3, 1] and len(gains) == 10
    assert res.num_iterations == 10
    assert res.tokens_per_iteration == pytest.approx(2.0)
    assert res.step_time_s == pytest.approx(expected, rel=1e-9)  # KV terms are tiny here


def test_decoupled_hides_drafting_and_a_rejection_costs_a_stale_iteration():
    always = simulate_rollout(ONE, costs, model_table(1.0), seed=0, modes=("decoupled",))
    never = simulate_rollout(ONE, costs, model_table(0.0), seed=0, modes=("decoupled",))
    target, draft = costs("target", 4), costs("draft", 1)
    # beta = 1: max(D, V) per iteration, 4 iterations; here V > D
    first = target.step_time(verify_shape(np.full(3, 8), np.full(3, 5)))
    assert first > float(draft.decode_run_times(3, 27, 4).sum())
    assert always["decoupled"].num_iterations == 4
    # beta = 0: drafted iterations gain 1, and every one after a rejection drafts nothing
    assert never["decoupled"].num_iterations == 20
    assert never["decoupled"].tokens_per_iteration == pytest.approx(1.0)


def test_every_mode_is_charged_the_same_pool():
    cfg = RolloutSimConfig(requests_per_instance=8, lengths=LengthSpec("s", 64, 0.5, 256))
    res = simulate_rollout(cfg, costs, model_table(0.6), seed=1)
    assert {r.num_gpus for r in res.values()} == {cfg.pool_gpus}
    assert res["no-spec"].num_instances == cfg.pool_gpus // cfg.target_tp == 5
    assert res["decoupled"].num_instances == cfg.pool_gpus // (cfg.target_tp + cfg.draft_gpus) == 4
    assert len({r.num_tokens for r in res.values()}) == 1  # the same responses in every mode
    extra = simulate_rollout(replace(cfg, extra_gpus=True), costs, model_table(0.6), 1, MODES[2:])
    assert extra["decoupled"].num_gpus == cfg.pool_gpus + 5 * cfg.draft_gpus


def test_verify_charges_the_lm_head_per_verified_token():
    shape = verify_shape(np.array([10, 20, 30]), np.array([1, 3, 5]))
    assert shape.num_sampled == 9 and shape.num_decode_tokens == 1


def lookup_table(depth: int, budget: int = 8) -> AcceptanceTable:
    trace = np.minimum(np.arange(1, budget + 1), depth)[None, :].repeat(4, 0)
    return AcceptanceTable.from_traces([DrafterSpec("history", DEPTH, False)], [[trace]], "lookup")


def test_planner_uses_good_lookups_and_drops_useless_drafts():
    cfg = replace(ONE, requests_per_instance=16, lengths=LengthSpec("s", 200, 0.6, 1000))
    good = simulate_rollout(cfg, costs, lookup_table(8), seed=3, modes=("no-spec", "specactor"))
    assert good["specactor"].step_time_s < 0.5 * good["no-spec"].step_time_s
    useless = AcceptanceTable.from_traces(
        [DrafterSpec("history", DEPTH, False), DrafterSpec("draft-model", BETA, True)],
        [[np.zeros((4, 8))], [np.array([0.0])]],
    )
    res = simulate_rollout(cfg, costs, useless, seed=3, modes=("no-spec", "coupled", "specactor"))
    assert res["coupled"].step_time_s > 1.5 * res["no-spec"].step_time_s
    # the planner stops drafting once it has seen nothing accepted: within 5% of plain decoding
    # (this pool has one instance either way: 5 // 4 = 5 // (4 + 1))
    assert res["specactor"].step_time_s < 1.05 * res["no-spec"].step_time_s


def test_windows_shrink_as_verification_gets_compute_bound():
    compute_bound = LinearCost(0.001, 0.002, 2e-4, 0.0, 4)  # each verified token costs real time
    acc = AcceptanceTable.from_traces(
        [DrafterSpec("history", BETA, False)], [[np.array([0.7])]]
    ).assign(512, np.random.default_rng(0))
    caps = {}
    for b in (512, 4):
        ladder = Ladder(acc, 512, 8)
        live = np.arange(b)
        plan = plan_step(ladder, live, np.full(b, 100), compute_bound, {}, 8)
        caps[b] = plan.cap
    assert caps[4] > caps[512]


def test_dapo_lengths_are_long_tailed_and_capped():
    x = DAPO_20K.sample(np.random.default_rng(0), 40000)
    assert x.max() == 20480
    assert np.median(x) == pytest.approx(6000 * np.exp(-0.32), rel=0.03)
    assert 0.02 < np.mean(x == 20480) < 0.034  # P(lognormal > 20480) = 2.7%


def test_bad_pool_is_rejected():
    with pytest.raises(ConfigError, match="pool_gpus"):
        RolloutSimConfig(pool_gpus=4, target_tp=4, draft_gpus=1)
