"""WA-paper (the paper's unconditional score) on a hand-built two-category trace."""

from __future__ import annotations

import math

import pytest

from wildserve.errors import ConfigError
from wildserve.kvcache import WAPaperPolicy, make_eviction_policy
from wildserve.kvcache.replay import replay
from wildserve.kvcache.stream import stream_from_chains

# (time, category, content ids): blocks are the chained prefixes of the ids
TRACE = [
    (0.0, 0, [1, 2]),  # c0: 2 accesses
    (4.0, 0, [1, 2]),  # c0: 2 accesses, 2 reuses of c0 blocks after 4 s
    (4.1, 1, [1]),  # 0.1 s after the last access: below min_gap_s, left out of the fit
    (10.0, 1, [5]),  # c1: 1 access
    (30.0, 1, [5]),  # c1: 1 access, a reuse of a c1 block after 20 s
    (34.0, 1, [1]),  # c1: 1 access, a reuse after 29.9 s of the (filtered) c1 access at 4.1
    (200.0, 0, [9]),  # after the 100 s warm-up window: the fit happens here and is frozen
]


def _fitted_policy(**settings) -> WAPaperPolicy:
    times, cats, chains = zip(*TRACE, strict=True)
    stream = stream_from_chains(chains, times, cats, num_categories=2)
    pol = make_eviction_policy("wa-paper", window_s=100.0, min_obs=1, **settings)
    assert isinstance(pol, WAPaperPolicy)
    replay(stream, pol, capacity=100)
    return pol


def _by_hand(p: float, lam: float, age: float, horizon: float) -> float:
    cdf = lambda t: 1.0 - math.exp(-lam * t)  # noqa: E731
    return p * (cdf(age + horizon) - cdf(age))


def test_score_on_a_two_category_trace_equals_the_hand_computed_values():
    pol = _fitted_policy()
    # c0: 4 accesses, 2 reuses summing 8 s; c1: 3 accesses (4.1 s filtered), reuses 20 + 29.9 s
    want = {0: (2 / 4, 2 / 8.0), 1: (2 / 3, 2 / 49.9)}
    model = pol.model()
    for c, (p, lam) in want.items():
        assert model["p"][c] == pytest.approx(p) and model["lam"][c] == pytest.approx(lam)
        for age in (0.0, 1.0, 7.5, 60.0):
            assert pol.score_of(c, age) == pytest.approx(_by_hand(p, lam, age, 5.0), rel=1e-12)
    # T is a setting: the same fit, another horizon
    wide = _fitted_policy(horizon_s=20.0)
    assert wide.score_of(1, 3.0) == pytest.approx(_by_hand(2 / 3, 2 / 49.9, 3.0, 20.0))


def test_without_the_short_reuse_filter_the_racing_access_counts():
    pol = _fitted_policy(min_gap_s=0.0)
    model = pol.model()
    # c1 now has 4 accesses; the 4.1 s access is a 0.1 s reuse of a c0 block, and 34 s reuses it
    assert model["p"][0] == pytest.approx(3 / 4) and model["lam"][0] == pytest.approx(3 / 8.1)
    assert model["p"][1] == pytest.approx(2 / 4) and model["lam"][1] == pytest.approx(2 / 49.9)


def test_the_warm_up_fit_is_frozen_and_periodic_refit_is_an_option():
    frozen = _fitted_policy()
    periodic = _fitted_policy(refit_s=10.0)  # sliding 100 s window, refit every 10 s
    assert frozen.model()["p"][0] == pytest.approx(0.5)
    # by t = 200 the sliding window holds no accesses: every class falls back to p = 1
    assert periodic.model()["p"].tolist() == [1.0, 1.0]


def test_the_score_orders_victims_across_categories():
    pol = _fitted_policy()
    s0, s1 = pol.score_of(0, 10.0), pol.score_of(1, 10.0)
    assert s0 < s1  # c0 decays 5x faster: after 10 s idle it is less likely reused within 5 s
    ages = [0.0, 1.0, 5.0, 50.0, 500.0]
    for c in (0, 1):
        scores = [pol.score_of(c, a) for a in ages]
        assert scores == sorted(scores, reverse=True)  # never increases with age


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="horizon_s"):
        make_eviction_policy("wa-paper@horizon_s=0")
    with pytest.raises(ConfigError, match="refit_s"):
        make_eviction_policy("wa-paper@refit_s=-1")
