"""Dumped LightGBM trees evaluated in numba give LightGBM's own scores; the isotonic map is sklearn's."""

from __future__ import annotations

import numpy as np

from wildserve.vsearch.config import TrainConfig
from wildserve.vsearch.trees import fit_isotonic, from_booster, train_lightgbm


def test_flat_forest_matches_lightgbm_raw_scores():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + 0.3 * rng.standard_normal(3000) > 0.5).astype(float)
    cfg = TrainConfig(num_trees=40, num_leaves=15, min_data_in_leaf=20)
    for objective, label in (("binary", y), ("regression", x[:, 0] * 2 + x[:, 2])):
        booster = train_lightgbm(x, label, objective=objective, config=cfg)
        forest = from_booster(booster)
        probe = rng.standard_normal((500, 6))
        np.testing.assert_allclose(
            forest.predict(probe), booster.predict(probe, raw_score=True), rtol=1e-9, atol=1e-9
        )


def test_packed_forest_scores_one_leaf_trees_and_wide_features_exactly():
    """The packed rows the search evaluates: one-leaf trees (a feature LightGBM cannot split on) and
    feature indices past any small bit field give LightGBM's scores bit for bit."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2000, 400))
    y = x[:, 399] - x[:, 7]
    cfg = TrainConfig(num_trees=12, num_leaves=7, min_data_in_leaf=20)
    forest = from_booster(train_lightgbm(x, y, objective="regression", config=cfg))
    probe = rng.standard_normal((300, 400))
    booster = train_lightgbm(x, y, objective="regression", config=cfg)
    assert np.array_equal(forest.predict(probe), booster.predict(probe, raw_score=True))
    flat = from_booster(train_lightgbm(x[:, :3], np.ones(2000), objective="regression", config=cfg))
    assert (flat.root < 0).all()  # every tree is one leaf
    want = flat.leaf_value[~flat.root].sum()
    np.testing.assert_array_equal(flat.predict(probe[:5, :3]), np.full(5, want))


def test_isotonic_knots_reproduce_sklearn():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(4)
    raw = rng.standard_normal(2000)
    label = (rng.random(2000) < 1 / (1 + np.exp(-2 * raw))).astype(float)
    iso = fit_isotonic(raw, label)
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(raw, label)
    probe = np.linspace(-4, 4, 300)
    np.testing.assert_allclose(iso(probe), ref.predict(probe), atol=1e-12)
    assert np.all(np.diff(iso(probe)) >= 0)
