"""Every early-termination method meets its average recall target on held-out queries, and stops early."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from wildserve.vsearch.config import (
    BaselineConfig,
    ExperimentConfig,
    IndexConfig,
    OmegaConfig,
    TrainConfig,
)
from wildserve.vsearch.experiment import evaluate_cells, fit_methods, prepare
from wildserve.vsearch.methods import lower_bound
from wildserve.vsearch.omega import OmegaModel, candidate_schedules, fit_draft
from wildserve.vsearch.omega_calibrate import Calibration, calibrate_levels, replay_cost
from wildserve.vsearch.omega_rule import S_FIRST, S_TAU, S_THETA

KS = (1, 10)
TARGETS = (0.9,)


@pytest.fixture(scope="module")
def fitted():
    cfg = ExperimentConfig(
        base="synthetic", n_base=5000, n_train=300, n_val=150, n_test=300, ks=KS,
        k_weights=(0.5, 0.5), targets=TARGETS, seed=0,
    )  # fmt: skip
    train_cfg = TrainConfig(ef=200, k_max=10, num_trees=40)
    prep = prepare(cfg, IndexConfig(m=8, ef_construction=64), train_cfg, np.random.default_rng(0))
    methods = fit_methods(
        prep,
        ("fixed-ef", "laet", "darth", "omega"),
        cfg,
        train_cfg,
        OmegaConfig(calibration_targets=(0.8, 0.95)),  # the targets the tests below ask, too
        BaselineConfig(),
    )
    return prep, methods


@pytest.mark.parametrize("name", ["fixed-ef", "laet", "darth", "omega"])
@pytest.mark.parametrize("k", KS)
def test_meets_average_recall_target_on_held_out_queries(fitted, name, k):
    prep, methods = fitted
    (cell,) = evaluate_cells(prep, {name: methods[name]}, k, TARGETS[0], repeats=1)
    assert cell.recall >= TARGETS[0], f"{name} K={k}: recall {cell.recall:.4f}"
    if name != "fixed-ef":
        full = prep.searcher.search(prep.split.test, k, 200).ndis.mean()
        assert cell.mean_ndis < full  # it did terminate early


def test_timing_slices_change_no_result(fitted):
    """Timing in interleaved slices of the queries returns what one whole-batch search returns."""
    prep, methods = fitted
    two = {n: methods[n] for n in ("laet", "omega")}
    sliced = evaluate_cells(prep, two, 10, TARGETS[0], repeats=2, chunk=7)
    whole = evaluate_cells(prep, two, 10, TARGETS[0], repeats=1, chunk=prep.split.test.shape[0])
    for a, b in zip(sliced, whole, strict=True):
        assert (a.method, a.recall, a.mean_ndis, a.model_calls) == (
            b.method, b.recall, b.mean_ndis, b.model_calls
        )  # fmt: skip
        assert 0 < a.latency_us <= a.latency_us_median


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


@pytest.mark.parametrize("target", [0.9, 0.95])
def test_calibrated_rule_stops_at_the_target_not_past_it(fitted, target):
    """On held-out queries whose exact recall curves are known (full searches watching their true
    neighbours), OMEGA's recall meets the target and overshoots it by no more than the calibration's
    own margin (z standard errors of the replayed held-out training queries) plus two standard errors
    of the test mean plus 0.01 for interpolating an uncalibrated K."""
    prep, methods = fitted
    model = methods["omega"].model
    q, truth = prep.split.test, prep.truth["test"]
    k = 7  # not on the calibration grid
    res = prep.searcher.search(q, k, 200, model.rule(k, target))
    full = prep.searcher.search(q, k, 200, watch=truth[:, :k])
    # the exact recall curve: recall@k after t computations = share of true ids found by t
    found = np.where(full.found_at < 0, np.inf, full.found_at)
    curve_at_stop = (found <= res.ndis[:, None]).mean(axis=1)
    recall = np.array(
        [len(set(a) & set(b)) / k for a, b in zip(res.ids, truth[:, :k], strict=True)]
    )
    np.testing.assert_allclose(recall, curve_at_stop)  # a stop returns what the curve says
    sd = recall.std(ddof=1)
    n_replay = round(prep.train_log.found_at.shape[0] * model.config.holdout_fraction)
    tolerance = model.config.calibration_z * sd / np.sqrt(n_replay) + 2 * sd / np.sqrt(q.shape[0])
    assert recall.mean() >= target - 2 * sd / np.sqrt(q.shape[0])
    assert recall.mean() - target <= tolerance + 0.01, (recall.mean(), tolerance)


def test_replay_chosen_schedule_costs_no_more_than_the_base_schedule(fitted):
    """The schedule the replay picks per (target, grid K) costs no more (distance computations plus
    the measured check and call costs) than the base schedule, replayed independently here from the
    returned choices; each choice meets its target on the replay; and the online rule uses it."""
    prep, _ = fitted
    cfg = OmegaConfig()
    draft, rs = fit_draft(prep.train_log, TrainConfig(ef=200, k_max=10, num_trees=40), cfg)
    args = (rs, draft.schedule, draft.cum, draft.edges, draft.grid, (0.9, 0.95),
            cfg.confirm_thresholds)  # fmt: skip
    tail = (draft.k_max, cfg.calibration_z, cfg.check_cost, cfg.call_cost)
    schedules = candidate_schedules(cfg)
    assert len(schedules) > 1 and schedules[0] == (0.05, 1.0)
    chosen = calibrate_levels(*args, schedules, *tail)
    base = calibrate_levels(*args, schedules[:1], *tail)
    np.testing.assert_array_equal(chosen["tau"], base["tau"])  # tau is picked on the base schedule

    def replayed(levels, ti, gi):
        k, target = int(levels["k_grid"][gi]), levels["targets"][ti]
        sched = draft.schedule(
            k, target, levels["first_quantile"][ti, gi], levels["gap_scale"][ti, gi]
        )
        sched[S_THETA], sched[S_TAU] = levels["theta"][ti, gi], levels["tau"][ti]
        return rs.run(k, sched, draft.cum, draft.edges, draft.grid)

    picked_other = 0
    for ti, target in enumerate(chosen["targets"]):
        for gi in range(chosen["k_grid"].size):
            new, old = replayed(chosen, ti, gi), replayed(base, ti, gi)
            cost_new = replay_cost(new, cfg.check_cost, cfg.call_cost)
            cost_old = replay_cost(old, cfg.check_cost, cfg.call_cost)
            assert cost_new <= cost_old + 1e-9, (target, gi, cost_new, cost_old)
            assert cost_new == pytest.approx(chosen["replay_cost"][ti, gi])
            assert (
                lower_bound(new[:, 0], cfg.calibration_z) >= target or chosen["theta"][ti, gi] > 1
            )
            assert new[:, 3].mean() == pytest.approx(chosen["replay_checks"][ti, gi])
            picked_other += (chosen["first_quantile"][ti, gi], chosen["gap_scale"][ti, gi]) != (
                0.05, 1.0,
            )  # fmt: skip
    assert picked_other > 0  # on this set some (target, K) is cheaper with another schedule
    # the online rule reads the choice of a grid K back (K=4, the first target)
    model = replace(draft, calibration=Calibration(
        draft.calibration.cal_x, draft.calibration.cal_y, draft.calibration.cal_off, **chosen
    ))  # fmt: skip
    gi = int(np.flatnonzero(chosen["k_grid"] == 4)[0])
    theta, tau, quantile, gap_scale = model.choice(4, 0.9)
    assert (theta, quantile, gap_scale) == (
        chosen["theta"][0, gi], chosen["first_quantile"][0, gi], chosen["gap_scale"][0, gi],
    )  # fmt: skip
    sched = model.rule(4, 0.9).cargs[7]
    np.testing.assert_array_equal(
        sched[S_FIRST:], draft.schedule(4, 0.9, quantile, gap_scale)[S_FIRST:]
    )
    assert (sched[S_THETA], sched[S_TAU]) == (theta, tau)


def test_k_between_grid_points_takes_the_larger_level_and_its_schedule(fitted):
    """K=6 lies between grid Ks 4 and 8: it runs the (theta, schedule) pair of whichever neighbour has
    the larger stop level, never one neighbour's theta with the other's schedule."""
    _, methods = fitted
    model = methods["omega"].model
    cal = model.calibration
    lo, hi = (int(np.flatnonzero(cal.k_grid == k)[0]) for k in (4, 8))
    ti = int(np.flatnonzero(np.isclose(cal.targets, 0.9))[0])
    for big, small in ((lo, hi), (hi, lo)):
        theta, quant, gap = cal.theta.copy(), cal.first_quantile.copy(), cal.gap_scale.copy()
        theta[ti, big], theta[ti, small] = 0.9, 0.8
        quant[ti, big], quant[ti, small] = 0.3, 0.15
        gap[ti, big], gap[ti, small] = 2.0, 1.0
        m = replace(
            model, calibration=replace(cal, theta=theta, first_quantile=quant, gap_scale=gap)
        )
        assert m.choice(6, 0.9) == (0.9, cal.tau[ti], 0.3, 2.0)
