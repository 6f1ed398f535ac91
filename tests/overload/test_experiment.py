"""The regime-map experiment end to end on a tiny sweep: calibration, bursts, cache, analysis, report."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from wildserve.experiments.kunserve import (
    _LOADED,
    SETUPS,
    WORKLOADS,
    KunServeExperiment,
    Setup,
    Workload,
    base_rate,
    memory_facts,
    run_experiment,
    scenario_requests,
)
from wildserve.experiments.kunserve_analysis import drop_economics, points
from wildserve.experiments.kunserve_report import write_report
from wildserve.experiments.runcache import RunCache
from wildserve.workload import load_trace

SETUP = Setup("tiny", "qwen2.5-14b", "h100", num_instances=2)
WORK = Workload("conv", "builtin:azure-conv", {"output_scale": 4}, nominal_rate=0.5)


def tiny(**kw) -> KunServeExperiment:
    base = dict(
        setups=[SETUP],
        workloads=[WORK],
        systems=("vllm", "kunserve"),
        factors=(1.5, 4.0),
        base_targets=((0.8, 0.8),),
        burst_start_s=10.0,
        burst_s=10.0,
        burst_tail_s=10.0,
        duration_s=40.0,
    )
    return KunServeExperiment(**{**base, **kw})


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    cache = RunCache(tmp_path_factory.mktemp("runs"))
    exp = tiny()
    return exp, run_experiment(exp, jobs=1, cache=cache), cache


def test_the_plan_calibrates_then_sweeps_every_point(swept):
    _exp, doc, _ = swept
    assert [r["key"] for r in doc["calibration"]] == ["conv/tiny/calibration"]
    assert [r["key"] for r in doc["runs"]] == [
        f"conv/tiny/L0/x{f:g}/{s}" for f in (1.5, 4.0) for s in ("vllm", "kunserve")
    ]
    calib = doc["calibration"][0]["summary"]
    kv_rate = 0.5 * 0.8 / (calib["peak_demand_blocks"] / calib["kv_blocks"])
    compute_rate = 0.5 * 0.8 / calib["prefill_use"]
    assert 0 < calib["prefill_use"] < 1
    for r in doc["runs"]:
        assert (r["base"], r["bound"]) == base_rate(WORK, calib, 0.8, 0.8)
        assert r["base"] == pytest.approx(min(kv_rate, compute_rate), rel=1e-2)
        assert r["bound"] == ("kv" if kv_rate <= compute_rate else "compute")


def test_bursts_replicate_the_window_and_every_request_finishes(swept):
    exp, doc, _ = swept
    base = doc["runs"][0]["base"]
    plain, _ = scenario_requests(exp, WORK, SETUP, base, 1.0)
    in_window = sum(
        exp.burst_start_s <= r.arrival_s < exp.burst_start_s + exp.burst_s for r in plain
    )
    assert in_window > 0
    assert np.mean([r.output_tokens for r in _LOADED["conv"]]) > 700  # outputs x4 (~211 -> ~850)
    for r in doc["runs"]:
        reqs, filtered = scenario_requests(exp, WORK, SETUP, base, r["factor"])
        extra = int(in_window * (r["factor"] - 1) + 1e-9)
        assert len(reqs) == len(plain) + extra == r["summary"]["requests"]
        lat = r["summary"]["latency"]
        assert lat["finished"] == len(reqs) and lat["aborted"] == 0 and filtered == 0
        shares = r["summary"]["blockers"]["all"]
        assert sum(shares.values()) == pytest.approx(1.0)
        assert sum(r["summary"]["blockers"]["steps"].values()) > 0


def test_points_compare_kunserve_with_the_best_baseline(swept):
    _, doc, _ = swept
    setup = doc["config"]["setups"][0]
    runs = {(r["factor"], r["system"]): r["summary"] for r in doc["runs"]}
    pts = points(doc)
    assert [p["factor"] for p in pts] == [1.5, 4.0]
    for p in pts:
        v, k = runs[(p["factor"], "vllm")], runs[(p["factor"], "kunserve")]
        assert p["best_baseline"] == "vllm"
        assert p["ratio"] == pytest.approx(
            v["latency"]["ttft"]["p99"] / k["latency"]["ttft"]["p99"]
        )
        assert p["burst_ratio"] == pytest.approx(
            v["burst"]["ttft"]["p99"] / k["burst"]["ttft"]["p99"]
        )
        freed = max(setup["freed_blocks"].values())
        assert p["excess"] == pytest.approx((v["peak_demand_blocks"] - v["kv_blocks"]) / freed)
    assert pts[1]["excess"] > pts[0]["excess"]  # a bigger burst asks for more memory


def test_a_second_run_reads_every_result_from_the_cache(swept):
    exp, doc, cache = swept
    again = run_experiment(exp, jobs=1, cache=cache)
    for a, b in zip(
        doc["runs"] + doc["calibration"], again["runs"] + again["calibration"], strict=True
    ):
        assert b["summary"].pop("cached") is True
        assert b["summary"] == {k: v for k, v in a["summary"].items() if k != "cached"}
    # a new point runs; the old ones still come from the cache
    more = run_experiment(dataclasses.replace(exp, factors=(4.0, 2.0)), jobs=1, cache=cache)
    cached = {r["factor"]: r["summary"].get("cached", False) for r in more["runs"]}
    assert cached == {4.0: True, 2.0: False}


def test_the_report_has_the_headline_the_acceptance_line_and_the_figures(swept, tmp_path):
    _, doc, _ = swept
    path = write_report(
        doc, tmp_path / "k.md", tmp_path / "k", "wildserve experiment kunserve", "t", None, "READ"
    )
    text = path.read_text()
    assert text.index("READ") < text.index("## Method")  # the hand-written reading comes first
    assert "## Headline" in text and "**Acceptance" in text and "| conv | tiny |" in text
    # whole-slice p99, burst-window p99 and p99.9 and what pipelining costs in TBT, side by side
    header = next(
        line for line in text.splitlines() if line.startswith("| workload | setup | best")
    )
    for column in ("whole p99", "burst p99 / p99.9", "TBT p50 / p99"):
        assert column in header
    assert "](k/map_conv.png)" in text and (tmp_path / "k" / "map_conv.png").stat().st_size > 0
    assert text.count("| 0.") + text.count("| 1.") > 0  # the per-point table has rows


def test_a_drop_buys_memory_but_little_decode_throughput():
    s = {"name": "s", "model": "qwen2.5-14b", "gpu": "h100", "tp": 1, "num_instances": 8}
    rows = drop_economics(s, contexts=(1500,))
    gain = [r["memory_gain"] for r in rows]
    assert gain[0] == 1.0 and gain == sorted(gain) and 1.25 < gain[1] < gain[-1] < 1.6
    tput = [r["tok_s_per_gpu@1500"] / rows[0]["tok_s_per_gpu@1500"] for r in rows]
    assert max(tput) < 1.2  # more sequences fit, each step reads more KV: tokens/s barely move


@pytest.mark.parametrize(
    "args",
    [
        ["--setups", "tpu"],
        ["--workloads", "nope"],
        ["--systems", "vllm,sglang"],
        ["--systems", "vllm,infercept"],
        ["--factors", "0.5,2"],
        ["--factors", "2:x:1"],
        ["--base-targets", "0.5"],
        ["--base-targets", "0.5/1.5"],
        ["--duration", "-1"],
        ["--jobs", "-2"],
        ["--cached-only", "--no-cache"],
        ["--notes", "/nonexistent/notes.md"],
    ],
)
def test_cli_rejects_bad_input_with_one_line(args, tmp_path, monkeypatch, capsys):
    from wildserve import cli

    argv = ["wildserve", "experiment", "kunserve", *args]
    argv += ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "error" in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "c").exists()


def test_the_installed_command_exits_2_on_a_typo():
    res = subprocess.run(
        [sys.executable, "-m", "wildserve.cli", "experiment", "kunserve", "--setups", "tpu"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "tpu" in res.stderr


def test_the_setups_span_weight_shares_and_the_memory_a_drop_frees():
    """The freed share sets the band: the shipped setups put weights at 41 %, 49 % and 68 %."""
    facts = {s.name: memory_facts(KunServeExperiment().cluster(s)) for s in SETUPS}
    share = {n: f["weights_share"] for n, f in facts.items()}
    assert share["qwen2.5-14b@h100"] < share["llama-3-70b@h100-tp4"] < share["qwen2.5-14b@h100-48g"]
    freed = {n: f["freed_blocks"]["2"] / f["cluster_blocks"] for n, f in facts.items()}
    assert freed["qwen2.5-14b@h100"] < freed["qwen2.5-14b@h100-48g"]  # more weights, more freed
    assert all(v > 0 for v in freed.values())
    for f in facts.values():  # a larger drop frees more
        ordered = [f["freed_blocks"][d] for d in sorted(f["freed_blocks"], key=int)]
        assert ordered == sorted(ordered)


def test_the_decode_heavy_workloads_are_shipped_and_shaped():
    named = {w.name: w for w in WORKLOADS}
    assert set(named) == {"azure-conv-x4", "azure-code-x16", "reasoning", "weka"}
    conv, code = named["azure-conv-x4"].load(0), named["azure-code-x16"].load(0)
    plain_conv, plain_code = load_trace("builtin:azure-conv"), load_trace("builtin:azure-code")
    assert [r.output_tokens for r in conv] == [min(16384, 4 * r.output_tokens) for r in plain_conv]
    assert [r.output_tokens for r in code] == [min(16384, 16 * r.output_tokens) for r in plain_code]
    cot = named["reasoning"].load(0)
    assert [r.prompt_tokens for r in cot] == [r.prompt_tokens for r in plain_conv]
    assert (
        np.mean([r.output_tokens for r in cot]) > 4000
        and max(r.output_tokens for r in cot) <= 16384
    )
    assert [r.output_tokens for r in named["reasoning"].load(1)] != [r.output_tokens for r in cot]
    weka = named["weka"].load(0)
    assert (
        len({r.session_id for r in weka}) > 1 and np.mean([r.prompt_tokens for r in weka]) > 20_000
    )


def test_cached_only_reports_the_complete_points_and_runs_nothing(swept, tmp_path):
    import shutil

    from wildserve.experiments.kunserve_analysis import complete_points
    from wildserve.experiments.runcache import ReadOnlyRunCache

    exp, _doc, cache = swept
    shutil.copytree(cache.dir, tmp_path / "c")
    # forget KunServe's run at burst x4: that point is incomplete, x1.5 still complete
    again = run_experiment(exp, jobs=1, cache=RunCache(tmp_path / "c"))
    x4 = [r for r in again["runs"] if r["factor"] == 4.0 and r["system"] == "kunserve"]
    fps = {p.stem for p in (tmp_path / "c").glob("*.json")}
    before = len(fps)
    for p in (tmp_path / "c").glob("*.json"):
        if orjson_summary(p)["spec"]["key"] == x4[0]["key"]:  # the runner keeps each run's spec
            p.unlink()
    assert len(list((tmp_path / "c").glob("*.json"))) == before - 1
    ro = run_experiment(exp, jobs=1, cache=ReadOnlyRunCache(tmp_path / "c"))
    kept, missing = complete_points(ro)
    assert missing == ["conv/tiny/L0/x4"]
    assert sorted({r["factor"] for r in kept["runs"]}) == [1.5]
    assert [p["factor"] for p in points(kept)] == [1.5]
    assert len(list((tmp_path / "c").glob("*.json"))) == before - 1  # nothing was computed


def orjson_summary(path):
    import orjson

    return orjson.loads(path.read_bytes())


def test_blockers_after_the_burst_window_count_for_the_cause():
    from wildserve.experiments.kunserve_analysis import after_burst, cause

    # long outputs: the KV crunch comes 50 s after the burst's start, past its window
    summary = {
        "per_second": {"kv_blocked": [0.0] * 110 + [1.0] * 50, "budget_blocked": [0.0] * 160}
    }
    after = after_burst(summary, 60.0)
    assert after == {"kv_blocks": 0.5, "token_budget": 0.0}
    burst = {"burst": {"kv_blocks": 0.0, "token_budget": 0.3, "seats": 0.0}}
    p = {"excess": 0.5, "vllm_blockers": burst, "vllm_after": None}
    assert cause(p).startswith("compute-bound")
    assert cause({**p, "vllm_after": after}).startswith("KV-bound")
    assert after_burst({}, 60.0) is None


def test_a_clumpy_trace_gets_its_burst_on_the_busiest_window():
    from wildserve.experiments.kunserve import busiest_offset
    from wildserve.workload.request import Request

    # arrivals only in [300, 320) of the trace: the burst window [10, 20) at base 2 is 20 trace s
    reqs = [Request(i, 300.0 + 0.5 * i, 100, 10) for i in range(40)]
    exp = tiny()
    plain = Workload("c", "builtin:azure-conv", trace_offset_s=100.0)
    clumpy = dataclasses.replace(plain, busy_search_s=400.0)
    assert busiest_offset(exp, plain, 2.0, reqs) == 100.0
    off = busiest_offset(exp, clumpy, 2.0, reqs)
    assert off == 300.0 - exp.burst_start_s * 2.0  # the window starts on the clump
    code = next(w for w in WORKLOADS if w.name.startswith("azure-code"))
    trace = load_trace(code.trace, **code.options)
    for base in (0.5, 1.0, 2.0):
        start = busiest_offset(exp, code, base, trace) + exp.burst_start_s * base
        n = sum(start <= r.arrival_s < start + exp.burst_s * base for r in trace)
        assert n > 0
