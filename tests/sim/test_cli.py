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


def test_simulate_takes_reader_options_and_a_seed(tmp_path):
    def run(seed: str, out):
        return run_cli(
            "simulate", "--trace", "builtin:weka-claude-code", "-o", "max_idle_s=30",
            "--seed", seed, "--max-requests", "60", "--instances", "2", "--policy", "lmetric",
            "--jobs", "1", "--output-json", str(out),
        )  # fmt: skip

    docs = []
    for seed in ("1", "2"):
        out = tmp_path / f"s{seed}.json"
        res = run(seed, out)
        assert res.returncode == 0, res.stderr
        docs.append(json.loads(out.read_text()))
    a, b = docs
    assert a["config"]["reader_options"] == {"max_idle_s": 30} and a["config"]["seed"] == 1
    assert a["requests"] == b["requests"] == 60
    # other session starts: the first 60 requests differ, and so do their latencies
    assert a["policies"]["lmetric"]["ttft"] != b["policies"]["lmetric"]["ttft"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "no_such_option=1"], "no option no_such_option"),
        (["-o", "seed=4", "--seed", "3"], "contradicts"),
        (["--seed", "-1"], "'--seed'"),
    ],
)
def test_bad_reader_options_and_seeds_are_one_line_errors(args, message, tmp_path):
    out = tmp_path / "r.json"
    res = run_cli(
        "simulate", "--trace", "builtin:weka-claude-code", "--max-requests", "10",
        "--output-json", str(out), *args,
    )  # fmt: skip
    assert res.returncode == 2
    assert message in res.stderr, res.stderr
    assert not out.exists()
