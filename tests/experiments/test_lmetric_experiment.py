from __future__ import annotations

from wildserve.experiments.lmetric import LMetricExperiment, WorkloadSpec, run_experiment
from wildserve.experiments.lmetric_report import acceptance, write_report
from wildserve.experiments.runcache import RunCache


def small_experiment() -> LMetricExperiment:
    return LMetricExperiment(
        workloads=[WorkloadSpec("mooncake", "builtin:mooncake-conversation", (1.0, 3.0))],
        setups=[("qwen2.5-7b", "h20")],
        policies=("lmetric", "vllm-v1", "round-robin"),
        linear_betas=(1024.0, 8192.0),
        num_instances=4,
        max_requests=80,
    )


def test_experiment_runs_caches_and_reports(tmp_path):
    cache = RunCache(tmp_path / "runs")
    doc, metrics = run_experiment(small_experiment(), jobs=1, cache=cache)
    assert len(doc["runs"]) == 2 * (3 + 2)
    assert all(r["summary"]["finished"] == 80 for r in doc["runs"])
    assert len(list((tmp_path / "runs").glob("*.json"))) == 10

    seen = []
    doc2, metrics2 = run_experiment(
        small_experiment(), jobs=1, cache=cache, on_progress=lambda k, d, t: seen.append(k)
    )
    assert [r["summary"] for r in doc2["runs"]] == [r["summary"] for r in doc["runs"]]
    assert len(seen) == 10  # every run came back from the cache in one progress tick
    key = doc["runs"][0]["key"]
    assert (metrics2[key].ttft == metrics[key].ttft).all()

    a = acceptance(doc["runs"], "mooncake", "qwen2.5-7b", 3.0)
    assert {"reduction_vs_vllm_v1", "beaten_on_mean_by", "ratio_to_linear_best"} <= set(a)
    report = write_report(doc, metrics, tmp_path / "lmetric.md", tmp_path / "lmetric", "cmd")
    text = report.read_text()
    assert "## mooncake, 16 x qwen2.5-7b on h20" not in text  # the instance count is the run's
    assert "linear-tuned (beta=" in text and "Acceptance checks" in text
    assert (tmp_path / "lmetric" / "mooncake_qwen2.5-7b_vs_load.png").exists()
