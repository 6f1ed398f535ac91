"""Rollout simulator against a small stand-in step-cost model (the real one lives in wildserve.perf)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from wildserve.errors import ConfigError
from wildserve.perf.batch import BatchShape
from wildserve.rollout.simulate import DrafterSpec, RolloutSimConfig, simulate_rollout


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


SMALL = RolloutSimConfig(num_prompts=64, median_response_tokens=256, max_response_tokens=2048)


def test_with_a_slow_model_drafter_decoupling_beats_coupling():
    res = simulate_rollout(SMALL, costs, seed=0)
    assert res["no-spec"].tokens_per_iteration == pytest.approx(1.0)
    assert res["coupled"].step_time_s < res["no-spec"].step_time_s
    assert res["decoupled"].step_time_s < res["coupled"].step_time_s  # drafting hidden behind V
    assert res["decoupled+fastest-of-n"].step_time_s < res["decoupled"].step_time_s
    assert 1.0 < res["coupled"].tokens_per_iteration < SMALL.draft_len + 1
    # stale look-ahead chunks cost decoupled mode accepted tokens per iteration
    assert res["decoupled"].tokens_per_iteration < res["coupled"].tokens_per_iteration


def test_with_a_free_drafter_decoupling_only_adds_stale_chunks():
    lookup_only = replace(SMALL, drafters=(DrafterSpec("history", 0.6, 8.0, uses_gpu=False),))
    res = simulate_rollout(lookup_only, costs, seed=0)
    assert res["coupled"].step_time_s < res["decoupled"].step_time_s


def test_no_spec_time_is_the_sum_of_decode_steps_until_the_longest_response():
    cfg = replace(SMALL, num_prompts=3, median_response_tokens=50, length_sigma=0.0)
    res = simulate_rollout(cfg, costs, seed=1, modes=("no-spec",))
    assert res["no-spec"].num_iterations == 50
    target = costs("target", cfg.target_gpus)
    expected = sum(
        target.step_time(
            BatchShape(num_decode_tokens=3, decode_ctx_tokens=3 * (512 + i + 1), num_sampled=3)
        )
        for i in range(50)
    )
    assert res["no-spec"].step_time_s == pytest.approx(expected)


def test_useless_drafter_makes_coupled_speculation_slower():
    bad = replace(SMALL, drafters=(DrafterSpec("draft-model", 0.02, 50.0),))
    res = simulate_rollout(bad, costs, seed=2, modes=("no-spec", "coupled"))
    assert res["coupled"].step_time_s > res["no-spec"].step_time_s


def test_bad_gpu_split_is_rejected():
    with pytest.raises(ConfigError, match="draft_gpus"):
        RolloutSimConfig(target_gpus=4, draft_gpus=0)
