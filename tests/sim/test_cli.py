"""The simulate command end to end: JSON of the documented form, plots, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wildserve.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_simulate_writes_json_table_and_plot(tmp_path):
    out = tmp_path / "r.json"
    res = run_cli(
        "simulate",
        "--max-requests",
        "150",
        "--instances",
        "4",
        "--policy",
        "round-robin,lmetric",
        "--output-json",
        str(out),
        "--plot-dir",
        str(tmp_path / "plots"),
        "--jobs",
        "1",
    )
    assert res.returncode == 0, res.stderr
    assert "lmetric" in res.stdout and "TTFT" in res.stdout
    doc = json.loads(out.read_text())
    assert doc["requests"] == 150 and doc["wall_s"] > 0
    for name in ("round-robin", "lmetric"):
        p = doc["policies"][name]
        assert p["finished"] == 150
        for metric in ("ttft", "tpot", "e2e"):
            assert set(p[metric]) >= {"mean", "p50", "p90", "p99"}
            assert p[metric]["p50"] <= p[metric]["p99"]
        assert 0 <= p["hit_ratio"] <= 1
    assert (tmp_path / "plots" / "latency_cdf.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "nope"], "unknown routing policy 'nope'"),
        (["--model", "gpt-9"], "gpt-9"),
        (["--trace", "mooncake:/no/such/file.jsonl"], "/no/such/file.jsonl"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, message, tmp_path):
    out = tmp_path / "r.json"
    res = run_cli("simulate", "--max-requests", "10", "--output-json", str(out), *args)
    assert res.returncode != 0
    lines = [line for line in res.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert not out.exists()


def test_malformed_trace_names_file_line_and_field(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        '{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1]}\n'
        '{"timestamp": 5, "input_length": "ten", "output_length": 2, "hash_ids": [1]}\n'
    )
    res = run_cli("simulate", "--trace", f"mooncake:{trace}", "--instances", "2")
    assert res.returncode != 0
    assert f"{trace}:2" in res.stderr and "input_length" in res.stderr
