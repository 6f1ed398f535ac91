"""The 95% interval over seeds: Student's t, checked against scipy and by coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wildserve.metrics import mean_interval


def test_matches_scipy_t_interval():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 8, 11, 25):
        x = rng.normal(10, 2, n)
        mean, half = mean_interval(x.tolist())
        lo, hi = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
        assert mean == pytest.approx(x.mean())
        assert half == pytest.approx((hi - lo) / 2, rel=0.01)


def test_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    trials = 2000
    for _ in range(trials):
        m, h = mean_interval(rng.exponential(3.0, 5).tolist())
        hits += abs(m - 3.0) <= h
    # skewed data with n = 5 under-covers a little; 2000 trials put 3 sigma at about 1.5 points
    assert 0.85 < hits / trials < 0.98


def test_degenerate_inputs():
    assert mean_interval([4.0]) == (4.0, 0.0)
    assert mean_interval([None, 2.0, float("nan"), 4.0]) == (3.0, pytest.approx(12.706 * 1.0))
    m, h = mean_interval([])
    assert math.isnan(m) and math.isnan(h)
