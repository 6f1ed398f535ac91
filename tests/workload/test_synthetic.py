from __future__ import annotations

import numpy as np
import pytest

from wildserve.errors import ConfigError, UnknownNameError
from wildserve.workload.synthetic import LengthDist, SyntheticConfig, synthetic_workload


def test_multi_turn_prompts_extend_previous_blocks():
    cfg = SyntheticConfig(
        num_sessions=50,
        turns=LengthDist("uniform", low=1, high=6),
        prompt=LengthDist("lognormal", mean=300, sigma=0.8),
        output=LengthDist("exponential", mean=80),
        system_prompt_tokens=100,
        block_size=16,
    )
    reqs = synthetic_workload(cfg, np.random.default_rng(0))
    by_id = {r.request_id: r for r in reqs}
    assert [r.request_id for r in reqs] == list(range(len(reqs)))
    for r in reqs:
        assert len(r.hash_ids) == -(-r.prompt_tokens // 16)
        assert r.hash_ids[:6] == tuple(range(6))  # 100 // 16 shared system-prompt blocks
        if r.turn == 1:
            assert r.parent_id is None
            continue
        parent = by_id[r.parent_id]
        assert parent.session_id == r.session_id and parent.turn == r.turn - 1
        assert parent.arrival_s <= r.arrival_s
        assert r.prompt_tokens > parent.prompt_tokens + parent.output_tokens - 1
        full = parent.prompt_tokens // 16
        assert r.hash_ids[:full] == parent.hash_ids[:full]
        # the parent's partial last block now holds more text: a fresh id
        if parent.prompt_tokens % 16:
            assert r.hash_ids[full] != parent.hash_ids[full]
    # sessions share only the system prompt
    firsts = [r for r in reqs if r.turn == 1]
    assert len({r.hash_ids[6] for r in firsts}) == len(firsts)


def test_seeded_and_distribution_means():
    cfg = SyntheticConfig(num_sessions=4000, prompt=LengthDist("lognormal", mean=500, sigma=0.5))
    a = synthetic_workload(cfg, np.random.default_rng(9))
    b = synthetic_workload(cfg, np.random.default_rng(9))
    assert [(r.arrival_s, r.prompt_tokens) for r in a] == [
        (r.arrival_s, r.prompt_tokens) for r in b
    ]
    prompts = np.array([r.prompt_tokens for r in a])
    # lognormal sigma 0.5: CV 0.53, so the mean of 4,000 is within ~0.8% (1 sigma)
    assert prompts.mean() == pytest.approx(500, rel=0.04)
    starts = np.array([r.arrival_s for r in a])
    assert (len(a) - 1) / starts[-1] == pytest.approx(cfg.session_rate, rel=0.07)


def test_config_validation():
    with pytest.raises(UnknownNameError, match="constant, exponential, lognormal, uniform"):
        LengthDist("zipf")
    with pytest.raises(ConfigError):
        LengthDist("uniform", low=5, high=2)
    with pytest.raises(ConfigError):
        SyntheticConfig(turns=LengthDist("constant", mean=0, low=0))
