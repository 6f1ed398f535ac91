"""The GPU calibration script skips cleanly without CUDA, and its file drives the simulator."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.rollout.test_simulate import ONE, model_table
from wildserve.errors import ConfigError
from wildserve.rollout.calibration import FORMAT, load_calibration
from wildserve.rollout.simulate import simulate_rollout, verify_shape

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "rollout_gpu_calibration.py"


def test_script_skips_cleanly_without_cuda(tmp_path):
    out = tmp_path / "cal.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped" in proc.stdout
    assert not out.exists()


def write(tmp_path, models, fmt=FORMAT) -> Path:
    path = tmp_path / "cal.json"
    path.write_bytes(orjson.dumps({"format": fmt, "device": "test", "models": models}))
    return path


TARGET = {
    "batches": [1, 4, 16],
    "widths": [1, 5],
    "seconds": [[0.010, 0.012], [0.011, 0.020], [0.014, 0.050]],
}
DRAFT = {"batches": [1, 16], "widths": [1], "seconds": [[0.002], [0.004]]}


def test_calibration_interpolates_and_drives_the_simulator(tmp_path):
    costs = load_calibration(write(tmp_path, {"target": TARGET, "draft-model": DRAFT}))
    target = costs("target", 4)
    assert target.forward_time(4, 1) == pytest.approx(0.011)
    assert target.forward_time(4, 3) == pytest.approx(0.0155)  # linear in width
    assert target.forward_time(2, 1) == pytest.approx(0.0105)  # linear in log batch
    assert target.forward_time(16, 9) == pytest.approx(0.050 + 4 * (0.036 / 4))  # extrapolated
    assert costs("draft-model", 1).decode_run_times(16, 0, 3).tolist() == [0.004] * 3
    res = simulate_rollout(ONE, costs, model_table(1.0), seed=0, modes=("no-spec", "coupled"))
    v3 = float(np.interp(np.log(3), np.log([1, 4, 16]), [0.010, 0.011, 0.014]))
    assert res["no-spec"].step_time_s == pytest.approx(20 * v3)  # 3 requests x 20 tokens
    d3 = float(np.interp(np.log(3), np.log([1, 16]), [0.002, 0.004]))
    verify = target.step_time(verify_shape(np.full(3, 8), np.full(3, 5)))
    assert res["coupled"].step_time_s == pytest.approx(4 * (4 * d3 + verify))


def test_bad_calibration_files_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="format"):
        load_calibration(write(tmp_path, {"target": TARGET}, fmt="other"))
    bad = {**TARGET, "batches": [4, 1, 16]}
    with pytest.raises(ConfigError, match=r"models\.target.*ascending"):
        load_calibration(write(tmp_path, {"target": bad}))
    with pytest.raises(ConfigError, match="role 'draft-model'"):
        load_calibration(write(tmp_path, {"target": TARGET}))("draft-model", 1)


class _CpuEvent:
    """Stand-in for torch.cuda.Event on CPU: wall time, in milliseconds as CUDA events give."""

    def __init__(self, enable_timing: bool = False) -> None:
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: _CpuEvent) -> float:
        return (end.t - self.t) * 1e3


def test_timing_path_writes_a_file_the_simulator_loads(tmp_path, monkeypatch):
    """The CUDA timing code (prefill, timed forwards, cache crop, early-exit view, file format)
    run on CPU with CUDA events replaced by wall-clock stand-ins: everything but CUDA itself."""
    torch = pytest.importorskip("torch")
    from tests.rollout.conftest import tiny_llama

    spec = importlib.util.spec_from_file_location("rollout_gpu_calibration", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(torch.cuda, "Event", _CpuEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(script, "BATCHES", (1, 4))
    models = script.measure(
        torch, tiny_llama(seed=3), 1, 8, torch.device("cpu"), time.monotonic() + 60
    )
    assert models["target"]["batches"] == [1, 4]
    assert models["target"]["widths"] == list(script.WIDTHS)
    assert all(s > 0 for row in models["target"]["seconds"] for s in row)
    assert models["draft-model"]["widths"] == [1]
    costs = load_calibration(write(tmp_path, models))
    assert costs("target", 4).forward_time(2, 3) > 0
    assert costs("draft-model", 1).decode_run_times(4, 0, 2).shape == (2,)
