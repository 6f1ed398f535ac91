"""Lookup drafters, the planner's cost formulas, and the prompt generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wildserve.rollout.config import SamplingConfig, SpecConfig
from wildserve.rollout.drafters import DRAFTERS, DrafterContext
from wildserve.rollout.drafters.lookup import SuffixTrie
from wildserve.rollout.planner import CostModel, choose_mode, decoupled_time, expected_tokens
from wildserve.rollout.prompts import make_problems, reward
from wildserve.rollout.state import SeqState


def ctx() -> DrafterContext:
    return DrafterContext(SamplingConfig(), SpecConfig(num_draft_tokens=4), torch.Generator())


def test_trie_drafts_most_frequent_continuation_of_longest_match():
    trie = SuffixTrie(depth=8)
    trie.add_sequence([1, 2, 3, 4, 5])
    trie.add_sequence([9, 2, 3, 7, 8])
    trie.add_sequence([2, 3, 7, 8])
    assert trie.draft([0, 2, 3], max_match=4, min_match=1, k=3) == [7, 8]  # 7 seen twice after 2 3
    assert trie.draft([1, 2, 3], max_match=4, min_match=1, k=3) == [4, 5]  # longer match wins
    assert trie.draft([6], max_match=4, min_match=1, k=3) == []


def test_ngram_drafter_continues_an_earlier_occurrence_in_the_sequence():
    drafter = DRAFTERS.get("ngram")(ctx())
    seq = SeqState(0, 0, prompt=[5, 6, 7, 8, 9, 5, 6])
    assert drafter.propose([seq], 2)[0].tokens == [7, 8]
    seq.output = [7, 8]  # incremental: the trie only ingests new tokens
    assert drafter.propose([seq], 3)[0].tokens == [9, 5, 6]


def test_history_drafter_learns_from_finished_responses_of_the_same_prompt():
    per_prompt = SpecConfig(num_draft_tokens=4, history_global=False)
    drafter = DRAFTERS.get("suffix")(
        DrafterContext(SamplingConfig(), per_prompt, torch.Generator())
    )
    first = SeqState(0, prompt_id=7, prompt=[1, 2], output=[10, 11, 12, 13])
    other = SeqState(1, prompt_id=8, prompt=[1, 2])
    assert drafter.propose([first], 3)[0].tokens == []
    drafter.finish([first])
    again = SeqState(2, prompt_id=7, prompt=[1, 2])
    assert drafter.propose([again, other], 3)[0].tokens == [
        10,
        11,
        12,
    ]  # response start from history
    assert drafter.propose([other], 3)[0].tokens == []  # a different prompt has no history
    again.output = [10, 11]
    assert drafter.propose([again], 3)[0].tokens == [12, 13]
    assert drafter.num_responses(7) == 1


def test_expected_tokens_formula_matches_simulation():
    rng = np.random.default_rng(0)
    alpha, n = 0.7, 5
    draws = rng.random((200_000, n)) < alpha
    accepted = np.cumprod(draws, axis=1).sum(1)
    assert np.mean(accepted + 1) == pytest.approx(expected_tokens(alpha, n), rel=0.01)
    assert expected_tokens(0.0, 3) == 1.0 and expected_tokens(1.0, 3) == 4.0


def test_planner_prefers_decoupled_when_drafting_is_slow_and_acceptance_high():
    assert decoupled_time(4, 1.0, 0.1, 0.5) == pytest.approx(0.5)  # all pass: fully overlapped
    assert decoupled_time(4, 0.0, 0.1, 0.5) == pytest.approx(0.9)  # always stale: serial
    mode, w = choose_mode(alpha=0.9, draft_s=0.1, verify_s=0.5, max_len=6)
    assert mode == "decoupled" and w >= 4
    mode, k = choose_mode(alpha=0.05, draft_s=0.1, verify_s=0.5, max_len=6)
    assert k == 0  # a useless drafter is not used at all


def test_cost_model_fits_a_linear_verify_time():
    cost = CostModel()
    assert not cost.is_ready
    for tokens in (64, 128, 256, 64):
        cost.observe_verify(tokens, 0.1 + 0.001 * tokens)
    assert cost.is_ready
    assert cost.verify_time(512) == pytest.approx(0.1 + 0.512)


def test_word_problems_are_reproducible_and_rewards_check_the_answer():
    a = make_problems(20, np.random.default_rng(3))
    b = make_problems(20, np.random.default_rng(3))
    assert a == b and len({p.text for p in a}) == 20
    p = a[0]
    assert reward(f"So the answer is {p.answer}.", p.answer) == 1.0
    assert reward(f"It is {p.answer + 1}", p.answer) == 0.0
    assert reward("no idea", p.answer) == 0.0


def test_cli_rejects_an_unknown_speculation_mode_before_loading_anything():
    import typer
    from typer.testing import CliRunner

    from wildserve.errors import UnknownNameError
    from wildserve.rollout.cli import rollout

    app = typer.Typer()
    app.command()(rollout)
    result = CliRunner().invoke(app, ["--spec", "bogus", "--threads", "0"])
    assert isinstance(result.exception, UnknownNameError)
    assert "fastest-of-n" in str(result.exception)
