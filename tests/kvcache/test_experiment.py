"""``wildserve experiment kvcache`` end to end on a hand-built trace whose reuse is known.

Ten sessions each send a 20-block prompt and, a minute later (after the other sessions' prompts
have pushed it out of a small GPU cache), a follow-up that extends it. So: offline, a cache of the
whole working set hits every repeated block and OPT bounds every policy; in the cluster, a GPU of
1% of an instance's memory cannot keep the prefixes, and a host-memory tier must serve them back.
"""

from __future__ import annotations

import json

import pytest

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
    )
    res = run(cfg, jobs=1)
    rows = res.sweeps[trace]
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
    doc = json.loads((tmp_path / "out" / "kvcache.json").read_text())
    assert doc["config"]["instances"] == 2 and len(doc["cluster"]) == 3
    assert (tmp_path / "out" / "cluster_ttft.png").stat().st_size > 1000
