"""The experiment end to end on a tiny grid: runs, headline, report with plots; CLI errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from wildserve.experiments.kunserve import (
    BurstScenario,
    KunServeExperiment,
    Setup,
    run_experiment,
    tail_ttft_per_second,
)
from wildserve.experiments.kunserve_analysis import analysis_lines, drop_economics
from wildserve.experiments.kunserve_report import headline, write_report


def test_tail_ttft_per_second():
    arrival = np.array([0.1, 0.5, 0.9, 2.2, 2.3])
    ttft = np.array([1.0, 2.0, 3.0, 0.5, 0.7])
    out = tail_ttft_per_second(arrival, ttft, 3.0, q=50)
    assert out == [2.0, None, pytest.approx(0.6)]


def test_tiny_grid_writes_a_report(tmp_path):
    setup = Setup("tiny", "qwen2.5-14b", "h100", num_instances=2)
    sc = BurstScenario(
        "conv", "builtin:azure-conv", 2.0, 3.0, burst_start_s=10, burst_s=10, duration_s=40
    )
    diag = BurstScenario("diag:x", "builtin:azure-conv", 1.0, 1.0, duration_s=10)
    exp = KunServeExperiment(
        setups=[setup],
        scenarios=[sc],
        systems=("vllm", "kunserve"),
        diagnostics=[diag],
        diagnostic_systems=("vllm",),
    )
    doc = run_experiment(exp, jobs=1)
    assert [r["key"] for r in doc["runs"]] == [
        "tiny/conv/vllm",
        "tiny/conv/kunserve",
        "tiny/diag:x/vllm",
    ]
    for r in doc["runs"]:
        lat = r["latency"]
        assert lat["finished"] == r["requests"] and lat["aborted"] == 0
        assert set(lat["ttft"]) == {"mean", "p50", "p90", "p99", "p999"}
        assert (lat["tbt"]["p50"] > 0 and len(r["tail_ttft_per_s"]) == 40) or r[
            "scenario"
        ] != "conv"
        assert len(r["timeline"]["time_s"]) == len(r["timeline"]["kv_usage"]) > 10
    h = headline(doc, "tiny", "conv")
    assert h["best_baseline"] == "vllm" and h["ratio"] > 0
    path = write_report(
        doc, tmp_path / "k.md", tmp_path / "k", "wildserve experiment kunserve", analysis_lines(doc)
    )
    text = path.read_text()
    assert "## Headline" in text and "| tiny | conv | vllm |" in text and "diag:x" in text
    pngs = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert pngs == ["tiny_conv.png", "tiny_diag-x.png"]
    assert "](k/tiny_conv.png)" in text


def test_a_drop_buys_memory_but_little_decode_throughput():
    rows = drop_economics(Setup("s", "qwen2.5-14b", "h100"), contexts=(1500,))
    gain = [r["memory_gain"] for r in rows]
    assert gain[0] == 1.0 and gain == sorted(gain) and 1.25 < gain[1] < gain[-1] < 1.6
    tput = [r["tok_s_per_gpu@1500"] / rows[0]["tok_s_per_gpu@1500"] for r in rows]
    assert max(tput) < 1.2  # more sequences fit, each step reads more KV: tokens/s barely move


def test_cli_rejects_unknown_names():
    for args in (["--setups", "tpu"], ["--traces", "nope"], ["--systems", "vllm,sglang"]):
        res = subprocess.run(
            [sys.executable, "-m", "wildserve.cli", "experiment", "kunserve", *args],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert "error" in res.stderr
