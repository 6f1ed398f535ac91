"""Greedy speculation is token-identical to plain greedy; logprobs are the target's; stops work."""

from __future__ import annotations

import time

import pytest
import torch

from tests.rollout.test_lossless import CyclingDrafter
from wildserve.rollout.config import SamplingConfig, SpecConfig
from wildserve.rollout.decoupled import DecoupledDrafter
from wildserve.rollout.drafters import DRAFTERS, DrafterContext
from wildserve.rollout.generation import generate
from wildserve.rollout.planner import DraftPlanner
from wildserve.rollout.state import SeqState, SeqStatus

GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=24)
SPEC = SpecConfig(
    num_draft_tokens=4, adaptive_draft_len=False, early_exit_layers=1
)  # always draft: tests the verifier
PROMPTS = [[3, 4, 5, 6], [7, 8, 7, 8, 7], [9, 10], [11, 12, 13, 11, 12, 13, 11]]


def run(target, drafters, sampling=GREEDY, stop_ids=frozenset(), prompts=PROMPTS):
    seqs = [SeqState(i, i, list(p)) for i, p in enumerate(prompts)]
    stats = generate(
        target,
        seqs,
        sampling,
        DraftPlanner(drafters, SPEC),
        torch.Generator().manual_seed(0),
        stop_ids,
    )
    return seqs, stats


class SlowTarget(torch.nn.Module):
    """Stands in for a large target: every forward takes at least ``delay_s``, so a drafter thread
    has time to run ahead as it would beside a big model."""

    def __init__(self, model, delay_s: float) -> None:
        super().__init__()
        self.model, self.config, self.delay_s = model, model.config, delay_s

    def forward(self, **kw):
        time.sleep(self.delay_s)
        return self.model(**kw)


def make(name, target_model, draft_model, sampling=GREEDY):
    ctx = DrafterContext(
        sampling,
        SPEC,
        torch.Generator().manual_seed(1),
        target=target_model,
        draft_model=draft_model,
    )
    return DRAFTERS.get(name)(ctx)


@pytest.mark.parametrize(
    "names", [("draft-model",), ("ngram", "cycle"), ("early-exit", "suffix"), ("ahead",)]
)
def test_greedy_speculation_is_token_identical_to_plain_greedy(target_model, draft_model, names):
    plain, _ = run(target_model, {})
    drafters = {}
    for n in names:
        if n == "cycle":
            drafters[n] = CyclingDrafter()
        elif n == "ahead":
            # the target drafting for itself never goes stale, so the look-ahead chain is exercised
            drafters[n] = DecoupledDrafter(
                make("draft-model", target_model, target_model), window=4
            )
        elif n == "early-exit":
            drafters[n] = make(n, target_model, draft_model)
        else:
            drafters[n] = make(n, target_model, draft_model)
    try:
        spec, stats = run(
            SlowTarget(target_model, 0.02) if "ahead" in names else target_model, drafters
        )
    finally:
        for d in drafters.values():
            getattr(d, "close", lambda: None)()
    assert stats.num_tokens == sum(len(s.output) for s in spec)
    for p, s in zip(plain, spec, strict=True):
        assert s.output == p.output
        torch.testing.assert_close(
            torch.tensor(s.logprobs), torch.tensor(p.logprobs), atol=1e-4, rtol=0
        )
    assert sum(d.num_drafted for n, d in stats.by_drafter.items() if n != "none") > 0
    if "ahead" in names:
        assert stats.tokens_per_forward > 1.5


def test_stop_tokens_and_length_cap_end_each_request(target_model):
    plain, _ = run(target_model, {})
    stop = plain[0].output[5]  # a token request 0 emits at position 5
    seqs, _ = run(
        target_model, {"ngram": make("ngram", target_model, None)}, stop_ids=frozenset({stop})
    )
    first = seqs[0].output
    assert first[-1] == stop and stop not in first[:-1] and len(first) <= 6
    assert seqs[0].status == SeqStatus.FINISHED_STOPPED
    for s, p in zip(seqs, plain, strict=True):
        assert s.output == p.output[: len(s.output)]
        if s.status == SeqStatus.FINISHED_LENGTH:
            assert len(s.output) == GREEDY.max_new_tokens and stop not in s.output
