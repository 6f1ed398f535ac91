"""The fitted efficiencies against the measured profiles, and the fitting machinery itself."""

from __future__ import annotations

import numpy as np
import pytest

from wildserve.perf.analytic import AnalyticCostModel
from wildserve.perf.calibration import CALIBRATIONS, Efficiency, get_calibration
from wildserve.perf.check import ErrorStats, analytic_for, check_profile, render_markdown
from wildserve.perf.fit import HOLDOUT, OpSample, collect, fit_compute, nelder_mead, predict_ops
from wildserve.perf.gpus import get_gpu
from wildserve.perf.models import get_model
from wildserve.perf.profiles import find_profiles, read_collective


@pytest.fixture(scope="module")
def check_rows():
    return {f"{p.gpu}:{p.hf_id}": check_profile(p, analytic_for) for p in find_profiles()}


def test_analytic_model_meets_error_bound_on_every_shipped_profile(check_rows):
    all_rows = [r for rows in check_rows.values() for r in rows]
    assert len(all_rows) > 14_000
    overall = ErrorStats.of(all_rows)
    assert overall.median <= 0.15  # the goal
    assert overall.p90 <= 0.25
    for key, rows in check_rows.items():
        assert ErrorStats.of(rows).median <= 0.15, key


def test_held_out_models_are_predicted_as_well_as_fitted_ones(check_rows):
    held = [r for rows in check_rows.values() for r in rows if r.hf_id in HOLDOUT]
    fitted = [r for rows in check_rows.values() for r in rows if r.hf_id not in HOLDOUT]
    assert held and fitted
    assert ErrorStats.of(held).median <= 0.15
    assert ErrorStats.of(held).median <= 2.0 * ErrorStats.of(fitted).median


def test_report_states_the_goal_and_lists_every_profile(check_rows):
    text = render_markdown(check_rows, "wildserve perf check", "test")
    assert "Goal median ≤ 15%: **met**" in text
    for key in check_rows:
        gpu, hf_id = key.split(":")
        assert f"## {gpu} / {hf_id}" in text


def test_all_reduce_constants_fit_the_network_profile():
    samples = read_collective("all_reduce")
    for tp in (2, 4, 8):
        cm = AnalyticCostModel(get_model("llama-3-70b"), get_gpu("h100"), tp)
        keep = (samples.num_workers == tp) & (samples.devices_per_node == tp)
        pred = np.array([cm.all_reduce_time(b) for b in samples.size_bytes[keep]])
        rel = np.abs(pred - samples.seconds[keep]) / samples.seconds[keep]
        assert np.median(rel) < 0.15, tp


def test_families_cover_every_gpu():
    assert set(CALIBRATIONS) == {"hopper", "ampere"}
    for name in ("h100", "h200", "h20", "a100", "a800"):
        eff = get_calibration(get_gpu(name).family)
        assert 0.5 < eff.gemm_compute < 0.95 and 0.6 < eff.gemm_memory < 0.98


def test_nelder_mead_finds_a_quadratic_minimum():
    target = np.array([1.0, -2.0, 0.5])
    x, fx = nelder_mead(lambda v: float(np.sum((v - target) ** 2 * [1, 3, 10])), np.zeros(3))
    np.testing.assert_allclose(x, target, atol=1e-3)
    assert fx < 1e-6


def test_fit_recovers_known_efficiencies_from_synthetic_measurements():
    truth = Efficiency(gemm_compute=0.6, gemm_memory=0.7, kernel_s=5e-6)
    profiles = [
        p
        for p in find_profiles()
        if p.gpu == "a100" and p.hf_id.endswith(("Llama-2-7b-hf", "Qwen-72B"))
    ]
    real = collect(profiles, stride=24)
    synthetic = [
        OpSample(s.hf_id, s.model, s.gpu, s.tp, s.num_tokens, {op: pred[op] for op in s.measured})
        for s, pred in zip(real, predict_ops(real, truth), strict=True)
    ]
    fitted, loss = fit_compute(
        synthetic, Efficiency(), names=("gemm_compute", "gemm_memory", "kernel_s"), rounds=2
    )
    assert loss < 1e-3
    assert fitted.gemm_compute == pytest.approx(0.6, rel=0.02)
    assert fitted.gemm_memory == pytest.approx(0.7, rel=0.02)
    assert fitted.kernel_s == pytest.approx(5e-6, rel=0.1)


@pytest.mark.slow
def test_refit_reproduces_the_shipped_constants():
    for vidur_gpu, family in (("h100", "hopper"), ("a100", "ampere")):
        shipped = get_calibration(family)
        train = [p for p in find_profiles() if p.gpu == vidur_gpu and p.hf_id not in HOLDOUT]
        start = Efficiency(
            allreduce_latency_s=shipped.allreduce_latency_s,
            allreduce_bw=shipped.allreduce_bw,
            p2p_latency_s=shipped.p2p_latency_s,
            p2p_bw=shipped.p2p_bw,
        )
        fitted, _ = fit_compute(collect(train), start)
        for name in ("gemm_compute", "gemm_memory", "overlap_p", "norm_bw", "act_bw", "rope_bw"):
            assert getattr(fitted, name) == pytest.approx(getattr(shipped, name), rel=0.01), name
