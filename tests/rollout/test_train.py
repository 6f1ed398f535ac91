"""The RL loop on a tiny Llama: it learns, is reproducible and resumable, and its speculative
rollouts sample exactly the policy's distribution."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

pytest.importorskip("peft")

from tests.rollout.conftest import tiny_llama
from tests.rollout.test_lossless import (
    LENGTH,
    NUM_SAMPLES,
    PROMPT,
    VOCAB,
    chi_square_p,
    exact_distribution,
)
from wildserve.errors import ConfigError
from wildserve.rollout.config import TrainConfig
from wildserve.rollout.sim_acceptance import load_steps
from wildserve.rollout.train import GRPOTrainer, Task, plot_run

GOOD = 7  # reward: the response contains this token


def task(vocab: int = 32) -> Task:
    prompts = [[3, 4, 5, 6], [9, 10, 11], [12, 13, 12, 13], [20, 21, 22]]
    return Task(prompts, lambda i, out: float(GOOD in out), frozenset())


TINY = TrainConfig(
    num_problems=4,
    prompts_per_step=2,
    group_size=8,
    epochs=5,
    max_new_tokens=6,
    learning_rate=0.1,
    lora_rank=4,
    lora_alpha=8,
    micro_batch=8,
    draft_len=3,
    adaptive_draft_len=False,  # fixed drafts: the same seed gives the same samples
    measure_budget=4,
    measure_model_rows=4,
    eval_samples=4,
    early_exit_layers=1,
    quant_bits=3,
    quant_group=16,
)


def trainer(out=None, cfg=TINY) -> GRPOTrainer:
    return GRPOTrainer(tiny_llama(seed=3, layers=3, scale=4.0), task(), cfg, out)


def test_grpo_moves_the_policy_and_is_deterministic_with_a_seed():
    ra, rb = trainer().run(), trainer().run()
    assert [r.mean_reward for r in ra] == [r.mean_reward for r in rb]
    assert [r.mean_entropy for r in ra] == [r.mean_entropy for r in rb]
    rewards = [r.mean_reward for r in ra]
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 0.15  # GRPO finds the rewarded token
    assert ra[-1].mean_entropy < ra[0].mean_entropy - 0.05  # and the policy sharpens
    # every drafter measured at both temperatures, history drafting from the second step on
    for temp in ("T1", "T07"):
        assert set(ra[-1].tokens_per_forward[temp]) == {"history", "ngram", "quant3", "early-exit"}
        for v in ra[-1].tokens_per_forward[temp].values():
            assert 1.0 <= v <= TINY.draft_len + 1
    assert ra[0].tokens_per_forward["T1"]["history"] == 1.0  # nothing indexed yet


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    straight = trainer(tmp_path / "a").run()
    first = trainer(tmp_path / "b")
    first.run(num_steps=2)
    resumed = trainer(tmp_path / "b")  # a new process would do exactly this
    assert resumed.step == 2
    rest = resumed.run()
    assert [r.mean_reward for r in rest] == [r.mean_reward for r in straight]
    assert [r.loss for r in rest] == [r.loss for r in straight]
    steps = load_steps(tmp_path / "b")
    assert len(steps) == TINY.num_steps
    assert len(steps[0]["traces"]["T1"]) == TINY.prompts_per_step * TINY.group_size
    assert plot_run(tmp_path / "b").exists()


def test_bad_config_is_one_clear_error():
    with pytest.raises(ConfigError, match="group_size"):
        TrainConfig(group_size=1)
    with pytest.raises(ConfigError, match="early_exit_layers"):
        GRPOTrainer(tiny_llama(seed=3, layers=2), task(), TrainConfig(early_exit_layers=2))


def test_speculative_rollouts_of_the_trained_policy_sample_its_distribution():
    """After a GRPO step the live history drafter drafts; the loop's own rollout path must sample
    exactly the policy's distribution with speculation on, as it does with speculation off."""
    cfg = TrainConfig(
        num_problems=1,
        prompts_per_step=1,
        group_size=16,
        epochs=1,
        max_new_tokens=LENGTH,
        learning_rate=0.02,
        lora_rank=2,
        lora_alpha=4,
        micro_batch=16,
        draft_len=3,
        adaptive_draft_len=False,
        eval_samples=0,
        measure_model_rows=0,
        early_exit_layers=1,
        quant_bits=0,
    )
    small = tiny_llama(seed=11, vocab=VOCAB, scale=6.0, layers=2)
    t = GRPOTrainer(
        small, Task([list(PROMPT)], lambda i, out: float(out[-1] == 2), frozenset()), cfg
    )
    t.run()
    exact = exact_distribution(t.policy, t.sampling)
    spec, live = t._rollout([0], NUM_SAMPLES, t.sampling, torch.Generator().manual_seed(9), t.live)
    plain, off = t._rollout([0], NUM_SAMPLES, t.sampling, torch.Generator().manual_seed(9), None)
    assert live["row_steps"] > 0 and off["row_steps"] == 0
    assert live["tokens_per_forward"] > 1.05 and off["overall_tokens_per_forward"] == 1.0
    assert 0.05 < live["acceptance"] < 0.95  # drafts are accepted and rejected: the test bites
    with_spec, without = ([tuple(s.output) for s in seqs] for seqs in (spec, plain))
    assert with_spec != without  # different random draws, so the comparison is not trivial
    assert chi_square_p(with_spec, exact) > 1e-3
    assert chi_square_p(without, exact) > 1e-3
    # and the two samples against each other: a chi-square test of homogeneity
    assert homogeneity_p(with_spec, without) > 1e-3


def homogeneity_p(a: list[tuple[int, ...]], b: list[tuple[int, ...]]) -> float:
    """p-value that two samples come from one distribution (cells with < 10 in both pooled)."""
    ca, cb = Counter(a), Counter(b)
    keys = sorted(set(ca) | set(cb))
    big = [k for k in keys if ca[k] + cb[k] >= 10]
    rest = (sum(ca[k] for k in keys if k not in big), sum(cb[k] for k in keys if k not in big))
    table = np.array([[ca[k], cb[k]] for k in big] + ([list(rest)] if sum(rest) else []), float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    dof = (len(table) - 1) / 2
    return float(torch.special.gammaincc(torch.tensor(dof), torch.tensor(stat / 2)))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (("--group-size", "1"), "group-size"),
        (("--learning-rate", "0"), "'--learning-rate': 0 is outside the allowed range > 0"),
    ],
)
def test_cli_rejects_bad_options_before_doing_anything(tmp_path, option, message):
    import subprocess
    import sys

    out = tmp_path / "run"
    code = "from wildserve.cli import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "rollout-train", "--out", str(out), *option],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not out.exists()
