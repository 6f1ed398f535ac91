"""Every early-termination method meets its average recall target on held-out queries, and stops early."""

from __future__ import annotations

import numpy as np
import pytest

from wildserve.vsearch.config import (
    BaselineConfig,
    ExperimentConfig,
    IndexConfig,
    OmegaConfig,
    TrainConfig,
)
from wildserve.vsearch.experiment import evaluate_cell, fit_methods, prepare
from wildserve.vsearch.omega import OmegaModel

KS = (1, 10)
TARGETS = (0.9,)


@pytest.fixture(scope="module")
def fitted():
    cfg = ExperimentConfig(
        dataset="synthetic", n_base=5000, n_train=300, n_val=150, n_test=300, ks=KS,
        k_weights=(0.5, 0.5), targets=TARGETS, seed=0,
    )  # fmt: skip
    train_cfg = TrainConfig(ef=200, k_max=10, num_trees=40)
    prep = prepare(cfg, IndexConfig(m=8, ef_construction=64), train_cfg, np.random.default_rng(0))
    methods = fit_methods(
        prep,
        ("fixed-ef", "laet", "darth", "omega"),
        cfg,
        train_cfg,
        OmegaConfig(),
        BaselineConfig(),
    )
    return prep, methods


@pytest.mark.parametrize("name", ["fixed-ef", "laet", "darth", "omega"])
@pytest.mark.parametrize("k", KS)
def test_meets_average_recall_target_on_held_out_queries(fitted, name, k):
    prep, methods = fitted
    cell = evaluate_cell(prep, methods[name], name, k, TARGETS[0], repeats=1)
    assert cell.recall >= TARGETS[0], f"{name} K={k}: recall {cell.recall:.4f}"
    if name != "fixed-ef":
        full = prep.searcher.search(prep.split.test, k, 200).ndis.mean()
        assert cell.mean_ndis < full  # it did terminate early


def test_omega_serves_unseen_k_and_round_trips(fitted, tmp_path):
    """One model, any K <= k_max (K=7 was never in the fit), and saving changes nothing."""
    prep, methods = fitted
    model = methods["omega"].model
    model.save(tmp_path / "omega.npz")
    loaded = OmegaModel.load(tmp_path / "omega.npz")
    q = prep.split.test
    a = prep.searcher.search(q, 7, 200, model.rule(7, 0.9))
    b = prep.searcher.search(q, 7, 200, loaded.rule(7, 0.9))
    np.testing.assert_array_equal(a.ids, b.ids)
    truth = prep.truth["test"][:, :7]
    recall = np.mean([len(set(x) & set(y)) / 7 for x, y in zip(a.ids, truth, strict=True)])
    assert recall >= 0.9


def test_higher_target_costs_more_work(fitted):
    prep, methods = fitted
    model = methods["omega"].model
    q = prep.split.test
    low = prep.searcher.search(q, 10, 200, model.rule(10, 0.8)).ndis.mean()
    high = prep.searcher.search(q, 10, 200, model.rule(10, 0.95)).ndis.mean()
    assert high > low
