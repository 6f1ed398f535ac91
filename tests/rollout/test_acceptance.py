"""Measured acceptance is what the engine would accept: replaying a response the engine generated
with a deterministic drafter gives exactly the engine's own forwards and accepted tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.rollout.conftest import tiny_llama
from wildserve.rollout.acceptance import (
    accepted_depth,
    chain_tokens_per_forward,
    overlap,
    quantize_groups,
    replay_depths,
    walk_tokens_per_forward,
)
from wildserve.rollout.config import SamplingConfig, SpecConfig
from wildserve.rollout.drafters import DRAFTERS, Draft, Drafter, DrafterContext
from wildserve.rollout.generation import generate
from wildserve.rollout.planner import DraftPlanner
from wildserve.rollout.state import SeqState

K, BUDGET = 3, 5  # the engine drafts K; the replay asks for BUDGET and reads column K - 1
SAMPLING = SamplingConfig(temperature=1.0, max_new_tokens=14)
PROMPTS = [[2, 3, 4, 2, 3], [5, 1, 5, 1], [4, 4, 3]]


class Frozen(Drafter):
    """A drafter that learns nothing during generation (so the replay sees the same index)."""

    name = "suffix"

    def __init__(self, inner: Drafter) -> None:
        self.inner = inner

    def propose(self, seqs, k):
        return self.inner.propose(seqs, k)


def drafter(name: str) -> Drafter:
    spec = SpecConfig(num_draft_tokens=BUDGET)
    return DRAFTERS.get(name)(DrafterContext(SAMPLING, spec, torch.Generator()))


def seqs_of(n: int) -> list[SeqState]:
    return [SeqState(i, i % len(PROMPTS), list(PROMPTS[i % len(PROMPTS)])) for i in range(n)]


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=11, vocab=6, scale=3.0)


@pytest.mark.parametrize("name", ["ngram", "suffix"])
def test_replay_gives_the_engines_own_forwards_and_accepted_tokens(model, name):
    gen = torch.Generator().manual_seed(0)
    live = drafter(name)
    if name == "suffix":  # history: earlier responses of the same prompts, so trees branch
        earlier = seqs_of(60)
        generate(model, earlier, SAMPLING, DraftPlanner({}, SpecConfig()), gen, frozenset({1}))
        live.finish(earlier)
        engine_drafter = Frozen(live)
    else:
        engine_drafter = live
    seqs = seqs_of(48)
    spec = SpecConfig(num_draft_tokens=K, adaptive_draft_len=False)
    stats = generate(
        model, seqs, SAMPLING, DraftPlanner({name: engine_drafter}, spec), gen, frozenset({1})
    )
    d = stats.by_drafter[name]
    assert 0.05 < d.acceptance_rate < 0.95  # drafts are accepted and rejected: the test bites
    replayer = live if name == "suffix" else drafter("ngram")
    accepted = 0
    for s in seqs:
        depths = replay_depths(replayer, s.seq_id, s.prompt_id, s.prompt, s.output, BUDGET)
        t, forwards = 0, 0
        while t < len(s.output):
            accepted += int(depths[t, K - 1])
            t += int(depths[t, K - 1]) + 1
            forwards += 1
        assert forwards == s.num_target_forwards, s.seq_id
        assert walk_tokens_per_forward(depths, K) == pytest.approx(len(s.output) / forwards)
    assert accepted == d.num_accepted


def test_accepted_depth_of_chains_and_trees():
    assert accepted_depth(Draft([4, 5, 6]), [4, 5, 0, 6]) == 2
    assert accepted_depth(Draft([4, 5, 6]), [4]) == 1  # the response ended
    tree = Draft([4, 7, 5, 8], None, [-1, -1, 0, 1])  # 4 -> 5 and 7 -> 8
    assert accepted_depth(tree, [7, 8, 9]) == 2
    assert accepted_depth(tree, [4, 8]) == 1
    assert accepted_depth(tree, [3]) == 0


def test_tokens_per_forward_walks_and_chain_estimates():
    # budget 2: forwards at t = 0 (2 + 1 tokens), 3 (0 + 1), 4 (1 + 1)
    # budget 1: forwards at t = 0 (1 + 1), 2 (0 + 1), 3 (0 + 1), 4 (1 + 1)
    depths = np.array([[1, 2], [0, 0], [0, 0], [0, 0], [1, 1], [0, 0]])
    assert walk_tokens_per_forward(depths, 2) == pytest.approx(6 / 3)
    assert walk_tokens_per_forward(depths, 1) == pytest.approx(6 / 4)
    # constant overlap b: 1 + b + b^2 tokens per forward for k = 2 on a long response
    beta = np.full(3000, 0.5)
    assert chain_tokens_per_forward(beta, 2) == pytest.approx(1.75, rel=2e-3)
    assert chain_tokens_per_forward(np.zeros(10), 4) == 1.0


def test_overlap_is_the_first_draft_acceptance_probability():
    p = torch.tensor([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0]])
    q = torch.tensor([[0.2, 0.3, 0.5], [0.0, 0.5, 0.5]])
    torch.testing.assert_close(overlap(p, q), torch.tensor([0.7, 0.0]))
    # against sampling: draw x ~ q, accept with min(1, p/q)
    gen = torch.Generator().manual_seed(0)
    x = torch.multinomial(q[0], 200_000, replacement=True, generator=gen)
    ok = torch.rand(len(x), generator=gen) < (p[0, x] / q[0, x]).clamp(max=1.0)
    assert float(ok.float().mean()) == pytest.approx(0.7, abs=0.005)


def test_three_bit_groups_have_at_most_eight_levels_and_keep_the_range():
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    wq = quantize_groups(w, bits=3, group=32)
    for row in range(4):
        for g in range(2):
            block, qb = w[row, 32 * g : 32 * (g + 1)], wq[row, 32 * g : 32 * (g + 1)]
            assert len(torch.unique(qb)) <= 8
            assert qb.min() == pytest.approx(float(block.min()), abs=1e-6)
            assert qb.max() == pytest.approx(float(block.max()), abs=1e-6)
            step = float(block.max() - block.min()) / 7
            assert float((qb - block).abs().max()) <= step / 2 + 1e-6
