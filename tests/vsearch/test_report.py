"""The report's paired latency comparison: its intervals cover 1 for identical methods and exclude
it for a real difference."""

from __future__ import annotations

import numpy as np

from wildserve.vsearch.report import paired_cpu_ratio, paired_verdicts


def _slices(rng, n, scale=1.0, noise=0.05, drift=None):
    base = rng.uniform(2000, 6000, n) if drift is None else drift
    return base * scale * rng.lognormal(0.0, noise, n), base


def test_identical_methods_interval_covers_one():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        a, base = _slices(rng, 20)
        b, _ = _slices(rng, 20, drift=base)  # same queries, same host moments
        _, lo, hi = paired_cpu_ratio(a, b)
        covered += lo <= 1.0 <= hi
    assert covered >= 180  # a 95% interval (bootstrap of 20 pairs runs a little narrow)


def test_a_ten_percent_slower_method_is_called_slower():
    rng = np.random.default_rng(1)
    a, base = _slices(rng, 20, scale=1.10)
    b, _ = _slices(rng, 20, drift=base)
    ratio, lo, _ = paired_cpu_ratio(a, b)
    assert lo > 1.0 and 1.05 < ratio < 1.15
    assert paired_verdicts([({"cpu_slices_us": a}, {"cpu_slices_us": b})])[:3] == (0, 1, 0)


def test_runs_without_slices_give_no_verdict():
    assert paired_verdicts([({"cpu_slices_us": []}, {"cpu_slices_us": [1.0]})]) is None
