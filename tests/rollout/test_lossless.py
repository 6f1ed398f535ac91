"""Statistical acceptance test: speculative sampling draws exactly from the target's distribution.

A tiny Llama with 6 tokens generates 3-token responses; the exact distribution over all 216
responses is enumerated from the target, and a chi-square goodness-of-fit test (fixed seed) compares
it with plain sampling and with speculative sampling under a model drafter (stochastic q) and
deterministic drafters. A negative control shows the test rejects a distribution as close as the
draft model's.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from tests.rollout.conftest import tiny_llama
from wildserve.rollout.config import SamplingConfig, SpecConfig
from wildserve.rollout.drafters import DRAFTERS, Draft, Drafter, DrafterContext
from wildserve.rollout.generation import generate
from wildserve.rollout.planner import DraftPlanner
from wildserve.rollout.sampling import sampling_probs
from wildserve.rollout.state import SeqState

VOCAB, LENGTH, PROMPT = 6, 3, [2, 3, 4, 2, 3]
NUM_SAMPLES = 6000
P_MIN = 1e-3


@pytest.fixture(scope="module")
def small_target():
    return tiny_llama(seed=11, vocab=VOCAB, scale=6.0)


@pytest.fixture(scope="module")
def small_draft():
    return tiny_llama(seed=12, vocab=VOCAB, layers=1, scale=6.0)


class CyclingDrafter(Drafter):
    """Deterministic and often wrong: proposes last+1, last+2, ... (mod vocab)."""

    name = "cycle"

    def propose(self, seqs, k):
        return [Draft([(s.tokens[-1] + 1 + j) % VOCAB for j in range(k)]) for s in seqs]


def exact_distribution(model, sampling: SamplingConfig) -> dict[tuple[int, ...], float]:
    prefixes = list(itertools.product(range(VOCAB), repeat=LENGTH - 1))
    ids = torch.tensor([PROMPT + list(p) for p in prefixes])
    with torch.no_grad():
        probs = sampling_probs(model(input_ids=ids).logits[:, len(PROMPT) - 1 :], sampling)
    out = {}
    for i, prefix in enumerate(prefixes):
        for last in range(VOCAB):
            seq = (*prefix, last)
            out[seq] = float(torch.prod(torch.stack([probs[i, j, seq[j]] for j in range(LENGTH)])))
    return out


def chi_square_p(samples: list[tuple[int, ...]], exact: dict[tuple[int, ...], float]) -> float:
    """Goodness-of-fit p-value; cells expected < 5 are pooled into one."""
    counts = Counter(samples)
    n = len(samples)
    stat, pooled_obs, pooled_exp, cells = 0.0, 0, 0.0, 0
    for seq, p in exact.items():
        if n * p >= 5:
            stat += (counts[seq] - n * p) ** 2 / (n * p)
            cells += 1
        else:
            pooled_obs += counts[seq]
            pooled_exp += n * p
    if pooled_exp > 0:
        stat += (pooled_obs - pooled_exp) ** 2 / pooled_exp
        cells += 1
    return float(torch.special.gammaincc(torch.tensor((cells - 1) / 2), torch.tensor(stat / 2)))


def run(
    target, sampling, drafters, seed, spec=SpecConfig(num_draft_tokens=3, adaptive_draft_len=False)
):
    gen = torch.Generator().manual_seed(seed)
    seqs = [SeqState(seq_id=i, prompt_id=0, prompt=list(PROMPT)) for i in range(NUM_SAMPLES)]
    stats = generate(target, seqs, sampling, DraftPlanner(drafters, spec), gen, frozenset())
    return [tuple(s.output) for s in seqs], stats


def ctx(sampling, gen, **kw):
    return DrafterContext(sampling=sampling, spec=SpecConfig(num_draft_tokens=3), gen=gen, **kw)


SAMPLINGS = [
    SamplingConfig(temperature=1.0, max_new_tokens=LENGTH),
    SamplingConfig(temperature=0.8, top_p=0.9, max_new_tokens=LENGTH),
]


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=["t1", "t0.8-top0.9"])
def test_plain_sampling_matches_exact(small_target, sampling):
    samples, stats = run(small_target, sampling, {}, seed=0)
    assert stats.tokens_per_forward == 1.0
    assert chi_square_p(samples, exact_distribution(small_target, sampling)) > P_MIN


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=["t1", "t0.8-top0.9"])
def test_model_drafter_is_lossless(small_target, small_draft, sampling):
    drafter = DRAFTERS.get("draft-model")(
        ctx(sampling, torch.Generator().manual_seed(5), draft_model=small_draft)
    )
    samples, stats = run(small_target, sampling, {"draft-model": drafter}, seed=1)
    d = stats.by_drafter["draft-model"]
    assert 0.1 < d.acceptance_rate < 0.95, (
        "drafter must be neither useless nor perfect for the test to bite"
    )
    assert chi_square_p(samples, exact_distribution(small_target, sampling)) > P_MIN


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=["t1", "t0.8-top0.9"])
def test_deterministic_drafters_are_lossless(small_target, sampling):
    ngram = DRAFTERS.get("ngram")(ctx(sampling, torch.Generator()))
    drafters = {"cycle": CyclingDrafter(), "ngram": ngram}
    samples, stats = run(small_target, sampling, drafters, seed=2)
    for name in drafters:
        assert stats.by_drafter[name].num_drafted > 0
    assert 0.05 < stats.by_drafter["cycle"].acceptance_rate < 0.95
    assert chi_square_p(samples, exact_distribution(small_target, sampling)) > P_MIN


def test_the_test_detects_a_drafter_sized_difference(small_target, small_draft):
    """Negative control: the draft model's own samples fail the fit to the target."""
    sampling = SAMPLINGS[0]
    samples, _ = run(small_draft, sampling, {}, seed=3)
    assert chi_square_p(samples, exact_distribution(small_target, sampling)) < P_MIN


def test_the_test_detects_a_subtle_verifier_bug(small_target, small_draft, monkeypatch):
    """Negative control: resampling from p instead of the residual after a rejection is caught."""
    from wildserve.rollout import verify as verify_mod

    monkeypatch.setattr(verify_mod, "_residual", lambda p, rejected, q: p)
    sampling = SAMPLINGS[0]
    drafter = DRAFTERS.get("draft-model")(
        ctx(sampling, torch.Generator().manual_seed(5), draft_model=small_draft)
    )
    samples, _ = run(small_target, sampling, {"draft-model": drafter}, seed=1)
    assert chi_square_p(samples, exact_distribution(small_target, sampling)) < P_MIN


def test_decoupled_model_drafter_is_lossless(small_target, small_draft):
    """Drafts made in a background thread, partly verified at the bonus position, stay exact."""
    from wildserve.rollout.decoupled import DecoupledDrafter

    sampling = SAMPLINGS[0]
    inner = DRAFTERS.get("draft-model")(
        ctx(sampling, torch.Generator().manual_seed(7), draft_model=small_draft)
    )
    ahead = DecoupledDrafter(inner, window=3)
    try:
        samples, stats = run(small_target, sampling, {"ahead": ahead}, seed=4)
    finally:
        ahead.close()
    assert stats.by_drafter["ahead"].num_accepted > 0
    assert chi_square_p(samples, exact_distribution(small_target, sampling)) > P_MIN
