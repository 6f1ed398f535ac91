"""The sweep runner: identical results on the local and the Ray executor, resume after a kill, failures.

The sweep is real: LMetric simulations of the first 40 Mooncake requests on 4 instances. The Ray tests
start a local Ray with 2 CPUs once for the module (skipped where Ray is not installed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from wildserve.experiments.lmetric import (
    LMetricExperiment,
    WorkloadSpec,
    load_inputs,
    plan_runs,
    plan_specs,
)
from wildserve.experiments.runcache import RunCache
from wildserve.experiments.runner import (
    LocalExecutor,
    RunSpec,
    SweepFailed,
    make_executor,
    run_sweep,
)

ROOT = Path(__file__).resolve().parents[2]


def small_sweep(policies=("round-robin", "lmetric", "least-requests"), scales=(1.0, 4.0)):
    exp = LMetricExperiment(
        workloads=[WorkloadSpec("mooncake", "builtin:mooncake-conversation", scales, seeds=(0,))],
        setups=[("qwen2.5-7b", "h20")],
        policies=policies,
        linear_grids={},
        num_instances=4,
        max_requests=40,
    )
    inputs, _ = load_inputs(exp)
    return plan_specs(exp, plan_runs(exp)), inputs


def with_failing_run(specs: list[RunSpec]) -> list[RunSpec]:
    bad = specs[0]
    params = {**bad.params, "policy": "no-such-policy"}
    return [*specs, RunSpec("broken", bad.fn, params, bad.inputs)]


@pytest.fixture(scope="module")
def local_result():
    specs, inputs = small_sweep()
    return specs, inputs, run_sweep(specs, inputs, LocalExecutor(2))


def test_a_sweep_runs_every_spec_once_and_a_cached_rerun_gives_the_same_bytes(
    local_result, tmp_path
):
    specs, inputs, result = local_result
    assert list(result.outcomes) == [s.key for s in specs]
    assert result.num_computed == len(specs) == 6 and result.num_cached == 0
    assert all(
        o.value["finished"] == 40 and o.metrics is not None for o in result.outcomes.values()
    )
    # the policies place requests differently: the runs are not copies of one another
    assert len({o.value["ttft"]["p99"] for o in result.outcomes.values()}) > 1
    cache = RunCache(tmp_path)
    first = run_sweep(specs, inputs, 1, cache)
    assert first.to_json() == result.to_json()  # one worker or two, fresh: same bytes
    again = run_sweep(specs, inputs, 1, cache)
    assert (again.num_cached, again.num_computed) == (len(specs), 0)
    assert again.to_json() == result.to_json()


def test_a_raising_run_is_reported_with_its_spec_and_the_others_finish(local_result):
    specs, inputs, result = local_result
    out = run_sweep(with_failing_run(specs), inputs, LocalExecutor(2))
    assert [o.spec.key for o in out.failed] == ["broken"]
    broken = out["broken"]
    assert broken.attempts == 2 and "no-such-policy" in broken.error
    assert "Traceback" in broken.error
    assert out.num_computed == len(specs)
    for s in specs:
        assert out[s.key].value == result[s.key].value
    with pytest.raises(SweepFailed) as failed:
        out.raise_on_failure()
    message = str(failed.value)
    assert '"key":"broken"' in message and '"policy":"no-such-policy"' in message


_SWEEP_SCRIPT = """
import sys
from tests.experiments.test_runner import small_sweep
from wildserve.experiments.runcache import RunCache
from wildserve.experiments.runner import run_sweep
specs, inputs = small_sweep(scales=(1.0, 2.0, 3.0, 4.0))
print("planned", len(specs), flush=True)
run_sweep(specs, inputs, 1, RunCache(sys.argv[1]))
"""


def test_a_sweep_killed_midway_resumes_and_recomputes_only_unfinished_runs(tmp_path):
    cache_dir = tmp_path / "runs"
    script = textwrap.dedent(_SWEEP_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(cache_dir)], cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 300
        while len(RunCache(cache_dir)) < 3:  # let a few runs finish, then kill it mid-run
            assert proc.poll() is None, "the sweep ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    finished = len(RunCache(cache_dir))
    specs, inputs = small_sweep(scales=(1.0, 2.0, 3.0, 4.0))
    assert 3 <= finished < len(specs) == 12
    for path in cache_dir.glob("[!.]*.json"):  # every stored run is whole (a kill may leave a temp)
        assert orjson.loads(path.read_bytes())["value"]["finished"] == 40
    done = run_sweep(specs, inputs, 2, RunCache(cache_dir))
    assert (done.num_cached, done.num_computed) == (finished, len(specs) - finished)
    assert not done.failed and len(RunCache(cache_dir)) == len(specs)
    fresh = run_sweep(specs, inputs, 2)
    assert done.to_json() == fresh.to_json()  # resumed or not, the same results


def test_executor_options_fail_with_one_line():
    from wildserve.errors import ConfigError

    with pytest.raises(ConfigError, match="neither local nor ray"):
        make_executor("slurm", 1)
    with pytest.raises(ConfigError, match="--ray-address needs --executor ray"):
        make_executor("local", 1, "auto")
    assert make_executor("local", 3).jobs == 3


# ---- Ray -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def flaky_run(params: dict) -> dict:
    """Fails on its first attempt only (a marker file tells): shows the retry."""
    marker = Path(params["marker"])
    if not marker.exists():
        marker.write_text("failed once")
        raise RuntimeError("transient failure")
    return {"ok": True}


def test_ray_gives_byte_identical_results_to_the_local_executor(local_result, ray_cluster):
    from wildserve.experiments.ray_executor import RayExecutor

    specs, inputs, result = local_result
    executor = RayExecutor()
    seen = []
    out = run_sweep(specs, inputs, executor, on_progress=lambda *a: seen.append(a))
    assert out.to_json() == result.to_json()
    assert sorted(seen) == sorted((s.key, 1, 1) for s in specs)  # one tick per finished run
    assert (executor.num_tasks, executor.num_puts) == (len(specs), 1)  # the trace was put once
    assert ray_cluster.is_initialized()  # it used the Ray it found, and left it running


def test_ray_resumes_from_the_cache_retries_once_and_reports_a_raising_run(
    local_result, ray_cluster, tmp_path
):
    from wildserve.experiments.ray_executor import RayExecutor

    specs, inputs, result = local_result
    cache = RunCache(tmp_path / "runs")
    run_sweep(specs[:2], inputs, 1, cache)  # a sweep that stopped after two runs
    flaky = RunSpec("flaky", f"{__name__}:flaky_run", {"marker": str(tmp_path / "m")})
    out = run_sweep([*with_failing_run(specs), flaky], inputs, RayExecutor(), cache)
    assert (out.num_cached, out.num_computed) == (2, len(specs) - 2 + 1)
    assert out["flaky"].value == {"ok": True}  # its first attempt raised; Ray ran it again
    assert [o.spec.key for o in out.failed] == ["broken"]
    assert "no-such-policy" in out["broken"].error and out["broken"].attempts == 2
    for s in specs:
        assert out[s.key].value == result[s.key].value


@pytest.mark.parametrize("experiment", ["lmetric", "kunserve", "kvcache"])
def test_every_experiment_takes_the_executor_options(experiment, tmp_path):
    args = [sys.executable, "-m", "wildserve.cli", "experiment", experiment, "--executor", "slurm"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "wildserve: error: --executor: 'slurm' is neither local nor ray"
    ]
    assert not any(tmp_path.iterdir())  # nothing written
