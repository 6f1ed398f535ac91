"""``wildserve experiment kvcache`` end to end on a hand-built trace whose reuse is known.

Ten sessions each send a 20-block prompt and, a minute later (after the other sessions' prompts
have pushed it out of a small GPU cache), a follow-up that extends it. So: offline, a cache of the
whole working set hits every repeated block and OPT bounds every policy; in the cluster, a GPU of
1% of an instance's memory cannot keep the prefixes, and a host-memory tier must serve them back.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from wildserve.cli import _register, app
from wildserve.experiments.kvcache import NO_HISTORY, KVCacheExperiment, run
from wildserve.experiments.kvcache_report import gap_closed, write

NUM_SESSIONS, PREFIX, EXTRA = 10, 20, 5


def sessions_trace(path):
    """Mooncake JSONL: turn 1 of session k at k s, its follow-up at 60 + k s."""
    lines = []
    for turn, t0 in ((1, 0), (2, 60_000)):
        for k in range(NUM_SESSIONS):
            ids = [1000 * k + j for j in range(PREFIX + (EXTRA if turn == 2 else 0))]
            lines.append({"timestamp": t0 + 1000 * k, "input_length": 512 * len(ids),
                          "output_length": 4, "hash_ids": ids})  # fmt: skip
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return f"mooncake:{path}"


def test_gap_closed():
    assert gap_closed(0.3, 0.2, 0.4) == pytest.approx(0.5)
    assert gap_closed(0.1, 0.2, 0.4) == pytest.approx(-0.5)
    assert gap_closed(0.3, 0.3, 0.301) is None


def test_experiment_offline_bounds_and_a_host_tier_that_serves_evicted_prefixes(tmp_path):
    trace = sessions_trace(tmp_path / "sessions.jsonl")
    cfg = KVCacheExperiment(
        traces=(trace,),
        policies=("lru", "wa", "opt"),
        fractions=(0.2, 1.0),
        cluster_trace=trace,
        cluster_policies=("lru", "wa"),
        cluster_capacities=(0.01,),
        host_memory_gb=8.0,
        host_policies=("lru",),
        instances=2,
        schemes=("type+turn",),
        indicator_traces=(),
    )
    res = run(cfg, 1)
    rows = res.sweeps[trace]["type+turn"]
    assert set(rows) == {"lru", "lru:leaf", "wa", "wa:leaf", "opt", "opt:leaf", NO_HISTORY}
    ideal = NUM_SESSIONS * PREFIX / (NUM_SESSIONS * (2 * PREFIX + EXTRA))  # repeats / accesses
    for spec, data in rows.items():
        assert data[0]["hit_ratio"] <= rows["opt"][0]["hit_ratio"] + 1e-12, spec
        assert data[1]["hit_ratio"] == pytest.approx(ideal), spec  # the whole working set fits
    # at 20% LRU keeps only the last sessions' prompts, OPT the prefixes that come back
    assert rows["opt"][0]["hit_ratio"] > rows["lru"][0]["hit_ratio"]

    runs = {(r["policy"], r["host_memory_gb"]): r for r in res.cluster}
    assert set(runs) == {("lru", 0.0), ("wa", 0.0), ("lru", 8.0)}
    assert all(r["finished"] == 2 * NUM_SESSIONS and r["evictions"] > 0 for r in runs.values())
    gpu_only, with_host = runs[("lru", 0.0)], runs[("lru", 8.0)]
    assert gpu_only["host_hit_blocks"] == 0 and with_host["host_hit_blocks"] > 0
    assert with_host["hit_ratio"] > gpu_only["hit_ratio"]  # follow-ups found their prefix in host

    path = write(res, tmp_path / "out", "wildserve experiment kvcache")
    text = path.read_text()
    assert "wa gap closed" in text and "Only leaves of the prefix tree" in text
    assert "vs best" in text and "gap closed" in text and "Queued TTFT" in text
    doc = json.loads((tmp_path / "out" / "kvcache.json").read_text())
    assert doc["config"]["instances"] == 2 and len(doc["cluster"]) == 3
    assert (tmp_path / "out" / "cluster_ttft.png").stat().st_size > 1000


def _bailian(path):
    lines = [{"chat_id": i, "parent_chat_id": i - 1 if i % 2 else -1, "timestamp": float(i),
              "input_length": 16 * (3 + i % 2), "output_length": 2, "type": "text",
              "turn": 1 + i % 2, "hash_ids": [10 * (i // 2) + k for k in range(3 + i % 2)]}
             for i in range(8)]  # fmt: skip
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return f"bailian:{path}"


def _weka(path):
    calls = [{"t": 10.0 * k, "type": "n", "model": "m", "in": 64 * (2 + k), "out": 5,
              "hash_ids": list(range(1, 3 + k)), "input_types": ["tool_result"]}
             for k in range(4)]  # fmt: skip
    doc = {"id": "s", "block_size": 64, "hash_id_scope": "local", "requests": calls}
    path.write_text(json.dumps(doc) + "\n")
    return f"weka:{path}"


def _azure(path):
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:50.99,396,109\n")  # fmt: skip
    return f"azure:{path}"


def _invoke(*args):
    _register()
    return CliRunner().invoke(app, ["experiment", "kvcache", *args])


def test_the_command_takes_any_trace_format_and_resumes(tmp_path):
    specs = [sessions_trace(tmp_path / "m.jsonl"), _bailian(tmp_path / "b.jsonl"),
             _weka(tmp_path / "w.json"), _azure(tmp_path / "a.csv")]  # fmt: skip
    out = tmp_path / "out"
    args = [a for s in specs for a in ("--trace", s)]
    args += ["--capacities", "20%,1", "--policies", "lru,wa-paper,opt", "--schemes",
             "type+turn,type", "--no-cluster", "--out", str(out), "--jobs", "1"]  # fmt: skip
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "kvcache.json").read_text())
    assert set(doc["sweeps"]) == set(specs[:3])  # Azure has no block ids: nothing to replay
    assert "no block ids" in doc["skipped"][specs[3]]
    for trace in specs[:3]:
        by_scheme = doc["sweeps"][trace]
        assert set(by_scheme["type+turn"]) == {"lru", "lru:leaf", "wa-paper", "wa-paper:leaf",
                                                "opt", "opt:leaf"}  # fmt: skip
        assert set(by_scheme["type"]) == {"wa-paper"}  # only category-aware policies repeat
    azure = next(r for r in doc["indicators"] if r["trace"] == specs[3])
    assert "no block ids" in azure["error"]
    text = (out / "kvcache.md").read_text()
    assert "cannot be evaluated" in text and "Not replayed" in text
    files = sorted((out / "runs").glob("*.json"))
    assert len(files) == 3 * (6 + 1)
    stamps = [f.stat().st_mtime_ns for f in files]
    again = _invoke(*args, "--report", str(tmp_path / "again.md"))
    assert again.exit_code == 0, again.output
    assert [f.stat().st_mtime_ns for f in files] == stamps  # resumed: nothing ran again
    assert json.loads((out / "kvcache.json").read_text())["sweeps"] == doc["sweeps"]
    assert "](out/hit_ratio_" in (tmp_path / "again.md").read_text()  # PNG links relative
    partial = _invoke(*args, "--cached-only", "--capacities", "50%", "--report",
                      str(tmp_path / "partial.md"))  # fmt: skip
    assert partial.exit_code == 0, partial.output
    assert "Partial report" in (tmp_path / "partial.md").read_text()


def test_an_unknown_trace_format_is_one_line_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n")
    res = _invoke("--trace", f"csvx:{path}", "--no-cluster", "--out", str(tmp_path / "o"))
    assert res.exit_code != 0
    msg = str(res.exception) if res.exception else res.output
    assert (
        "unknown trace format 'csvx'" in msg
        and "FORMAT:PATH (azure, bailian" in msg
        and "\n" not in msg.strip()
    )
    assert not (tmp_path / "o").exists()  # nothing half-written
    bad = _invoke("--capacities", "0,2", "--no-cluster", "--out", str(tmp_path / "o"))
    assert bad.exit_code != 0 and "(0, 1]" in str(bad.exception)


def test_reader_options_reach_every_trace_the_experiment_reads(tmp_path):
    from wildserve.experiments.kvcache import _requests

    trace = sessions_trace(tmp_path / "s.jsonl")
    plain = _requests(trace, 0)
    capped = _requests(trace, 0, (("output_cap", 2),))
    assert {r.output_tokens for r in plain} == {4}
    assert {r.output_tokens for r in capped} == {2}  # the option went to the reader
    out = tmp_path / "o"
    bad = _invoke("--trace", trace, "-o", "no_such_option=1", "--no-cluster", "--out", str(out))
    assert bad.exit_code != 0
    msg = str(bad.exception) if bad.exception else bad.output
    assert "no_such_option" in msg and "\n" not in msg.strip()
    assert not out.exists()  # nothing half-written
    args = ["--trace", trace, "--capacities", "1", "--policies", "lru", "--schemes", "type",
            "--no-leaf", "--no-cluster", "--jobs", "1"]  # fmt: skip
    ok = _invoke(*args, "-o", "output_cap=2", "--out", str(out))
    assert ok.exit_code == 0, ok.output
    (spec,) = json.loads((out / "kvcache.json").read_text())["config"]["reader_options"].items()
    assert spec == ("output_cap", 2)
