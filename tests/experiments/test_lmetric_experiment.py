"""The LMetric experiment plans every point, caches finished runs, folds seeds and reports what it ran."""

from __future__ import annotations

import numpy as np
import pytest

from wildserve.experiments import lmetric as lmetric_exp
from wildserve.experiments.lmetric import LMetricExperiment, WorkloadSpec, run_experiment
from wildserve.experiments.lmetric_points import best_of, fair_linear, fold, select, untuned
from wildserve.experiments.lmetric_report import _pm, acceptance, write_report
from wildserve.experiments.runcache import RunCache
from wildserve.metrics import mean_interval

POLICIES = ("lmetric", "vllm-v1", "round-robin")
GRIDS = {"linear-tuned": ("w", (1024.0, 16384.0)), "linear-new": ("beta", (1024.0,))}
SEEDS = (0, 1, None)


def small_experiment() -> LMetricExperiment:
    return LMetricExperiment(
        workloads=[
            WorkloadSpec("mooncake", "builtin:mooncake-conversation", (1.0, 3.0), seeds=SEEDS)
        ],
        setups=[("qwen2.5-7b", "h20")],
        policies=POLICIES,
        linear_grids=GRIDS,
        num_instances=4,
        max_requests=80,
    )


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lmetric")
    cache = RunCache(tmp / "runs")
    doc, metrics = run_experiment(small_experiment(), jobs=1, cache=cache)
    return tmp, cache, doc, metrics


def test_every_planned_point_runs_once_per_seed_and_finishes(ran):
    _, _, doc, metrics = ran
    per_load = len(POLICIES) + sum(len(g) for _, g in GRIDS.values())
    assert len(doc["runs"]) == 2 * len(SEEDS) * per_load
    assert len({r["key"] for r in doc["runs"]}) == len(doc["runs"]) == len(metrics)
    assert all(r["summary"]["finished"] == 80 for r in doc["runs"])
    kwargs = {(r["policy"], tuple(r["kwargs"].items())) for r in doc["runs"] if r["kwargs"]}
    assert kwargs == {
        ("linear-tuned", (("w", 1024.0),)),
        ("linear-tuned", (("w", 16384.0),)),
        ("linear-new", (("beta", 1024.0),)),
    }
    lm = [r for r in doc["runs"] if r["policy"] == "lmetric"]
    assert all(r["summary"]["policy_stats"]["decisions"] == 80 for r in lm)


def test_seeds_change_the_arrivals_and_so_the_latencies(ran):
    _, _, doc, metrics = ran
    by_seed = {
        r["seed"]: metrics[r["key"]]
        for r in doc["runs"]
        if r["policy"] == "round-robin" and r["rate_scale"] == 3.0
    }
    assert set(by_seed) == set(SEEDS)
    # the same requests (round-robin places them the same way) with other arrival times
    for s in (1, None):
        assert (by_seed[s].prompt_tokens == by_seed[0].prompt_tokens).all()
        assert (by_seed[s].instance == by_seed[0].instance).all()
        assert not np.array_equal(by_seed[s].ttft, by_seed[0].ttft)


def test_a_second_run_reads_every_point_from_the_cache(ran, monkeypatch):
    tmp, cache, doc, metrics = ran
    assert len(list((tmp / "runs").glob("*.json"))) == len(doc["runs"])

    def no_simulation(*args, **kwargs):
        raise AssertionError("a cached run was simulated again")

    monkeypatch.setattr(lmetric_exp, "run_policy", no_simulation)
    seen = []
    doc2, metrics2 = run_experiment(
        small_experiment(), jobs=1, cache=cache, on_progress=lambda k, d, t: seen.append(k)
    )
    assert [r["summary"] for r in doc2["runs"]] == [r["summary"] for r in doc["runs"]]
    assert sorted(seen) == sorted(r["key"] for r in doc["runs"])  # one tick per run
    for key in metrics:
        assert (metrics2[key].ttft == metrics[key].ttft).all()


def test_points_fold_seeds_and_pick_the_best_grid_point(ran):
    _, _, doc, _ = ran
    points = fold(doc["runs"])
    here = select(points, "mooncake", "qwen2.5-7b", 3.0)
    lm = untuned(here, "lmetric")
    assert sorted(lm.seeds) == [0, 1]  # recorded arrivals are a point of their own
    runs = [
        r
        for r in doc["runs"]
        if r["policy"] == "lmetric" and r["rate_scale"] == 3.0 and r["seed"] is not None
    ]
    assert lm.stat("ttft_mean") == mean_interval([r["summary"]["ttft"]["mean"] for r in runs])
    grid = [p for p in here if p.policy == "linear-tuned"]
    assert len(grid) == 2
    best = best_of(here, "linear-tuned")
    assert best.mean("ttft_mean") == min(p.mean("ttft_mean") for p in grid)
    fair = fair_linear(here)
    assert fair.mean("ttft_mean") <= best.mean("ttft_mean")
    assert fair.mean("ttft_mean") <= best_of(here, "linear-new").mean("ttft_mean")
    rec = select(points, "mooncake", "qwen2.5-7b", 3.0, "recorded")
    assert untuned(rec, "lmetric").seeds == [None]


def test_acceptance_and_report_state_the_measured_numbers(ran):
    tmp, _, doc, metrics = ran
    here = select(fold(doc["runs"]), "mooncake", "qwen2.5-7b", 3.0)
    a = acceptance(here)
    lm, vl, rr = (untuned(here, p) for p in POLICIES)
    assert a["reduction_vs_vllm_v1"] == pytest.approx(
        1 - lm.mean("ttft_mean") / vl.mean("ttft_mean")
    )
    # baselines in UNTUNED_BASELINES order: round-robin before vllm-v1
    assert a["beaten_on_mean_by"] == [
        p.policy for p in (rr, vl) if p.mean("ttft_mean") < lm.mean("ttft_mean")
    ]
    assert a["beaten_on_p99_by"] == [
        p.policy for p in (rr, vl) if p.mean("ttft_p99") < lm.mean("ttft_p99")
    ]
    fair = fair_linear(here)
    assert a["fair_linear"] == fair.label
    assert a["ratio_to_fair_linear"] == pytest.approx(lm.mean("ttft_mean") / fair.mean("ttft_mean"))

    report = write_report(doc, metrics, tmp / "lmetric.md", tmp / "lmetric", "cmd")
    text = report.read_text()
    assert "## mooncake, 4 x qwen2.5-7b on h20" in text  # the instance count is the run's
    row = next(line for line in text.splitlines() if line.startswith("| x3 | **lmetric** |"))
    assert _pm(lm.stat("ttft_mean")) in row and " ± " in row
    assert f"{a['ratio_to_fair_linear']:.3f}x" in text
    assert "Recorded arrival times" in text
    assert (tmp / "lmetric" / "mooncake_qwen2.5-7b_vs_load.png").stat().st_size > 10_000


def test_parse_linear_takes_a_family_or_some_of_its_grid():
    from wildserve.errors import ConfigError

    grids = lmetric_exp.parse_linear("linear-tuned=2048/8192,linear-new")
    assert grids == {
        "linear-tuned": ("w", (2048.0, 8192.0)),
        "linear-new": lmetric_exp.LINEAR_GRIDS["linear-new"],
    }
    assert lmetric_exp.parse_linear("") == {}
    for bad in ("linear-old", "linear-new=x", "linear-new=0"):
        with pytest.raises(ConfigError):
            lmetric_exp.parse_linear(bad)


def test_seeds_and_loads_are_given_to_every_workload_or_to_one():
    from wildserve.errors import ConfigError
    from wildserve.experiments.lmetric_cli import per_workload

    names = ("mooncake", "weka")
    assert per_workload("--seeds", None, names) == {}
    assert per_workload("--seeds", ["0,1,2"], names) == {"mooncake": "0,1,2", "weka": "0,1,2"}
    given = per_workload("--seeds", ["0,1,2", "weka=0,1,2,3,4"], names)
    assert given == {"mooncake": "0,1,2", "weka": "0,1,2,3,4"}
    assert per_workload("--rate-scales", ["weka=0.5,1"], names) == {"weka": "0.5,1"}
    with pytest.raises(ConfigError, match="no workload 'azure'"):
        per_workload("--seeds", ["azure=0"], names)


def test_linear_seeds_runs_the_grids_on_the_first_seeds_only():
    exp = small_experiment()
    exp.linear_seeds = 1
    runs = lmetric_exp.plan_runs(exp)
    grid = {r["seed"] for r in runs if r["kwargs"]}
    untuned_seeds = {r["seed"] for r in runs if not r["kwargs"]}
    assert grid == {0} and untuned_seeds == {0, 1, None}
    full = lmetric_exp.plan_runs(small_experiment())
    assert len(full) - len(runs) == 2 * 2 * 3  # two loads, two seeds cut, three grid points


def test_lmetric_regenerating_the_report_keeps_the_hand_written_notes(tmp_path):
    from wildserve.cli import run

    out, notes = tmp_path / "run", tmp_path / "reading.md"
    notes.write_text("## Reading\n\nround-robin was *not* fine here.\n")
    args = ["experiment", "lmetric", "--workloads", "mooncake", "--max-requests", "30",
            "--models", "qwen2.5-7b@h20", "--policies", "round-robin", "--linear", "",
            "--no-zero-score-demo", "--rate-scales", "1", "--seeds", "0", "--jobs", "1",
            "--cache-dir", str(tmp_path / "runs"), "--instances", "2", "--out", str(out),
            "--notes", str(notes)]  # fmt: skip
    assert run(args) == 0
    first = (out / "report.md").read_text()
    assert first.endswith("## Reading\n\nround-robin was *not* fine here.\n")
    assert "| x1 | round-robin |" in first  # the generated tables come first
    (out / "report.md").write_text("overwritten")
    assert run(args) == 0  # regenerated from the run cache
    assert (out / "report.md").read_text() == first


def test_lmetric_refuses_a_missing_notes_file_before_any_work(tmp_path, monkeypatch, capsys):
    import sys

    from wildserve import cli

    argv = ["wildserve", "experiment", "lmetric", "--notes", str(tmp_path / "none.md"),
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "--notes" in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "c").exists()
