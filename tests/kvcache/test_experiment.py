"""``wildserve experiment kvcache`` on a small slice of both traces (offline and cluster parts)."""

from __future__ import annotations

import json

import pytest

from wildserve.experiments.kvcache import NO_HISTORY, KVCacheExperiment, run
from wildserve.experiments.kvcache_report import gap_closed, write


def test_gap_closed():
    assert gap_closed(0.3, 0.2, 0.4) == pytest.approx(0.5)
    assert gap_closed(0.1, 0.2, 0.4) == pytest.approx(-0.5)
    assert gap_closed(0.3, 0.3, 0.301) is None


def test_small_experiment_end_to_end(tmp_path):
    cfg = KVCacheExperiment(
        policies=("lru", "wa", "opt"),
        fractions=(0.05, 1.0),
        cluster_policies=("lru", "wa"),
        cluster_capacities=(0.1,),
        host_memory_gb=8.0,
        host_policies=("lru",),
        instances=2,
        max_requests=80,
    )
    res = run(cfg, jobs=1)
    for trace in cfg.traces:
        rows = res.sweeps[trace]
        assert set(rows) == {"lru", "lru:leaf", "wa", "wa:leaf", "opt", "opt:leaf", NO_HISTORY}
        for i in range(2):
            opt = rows["opt"][i]["hit_ratio"]
            assert all(rows[s][i]["hit_ratio"] <= opt + 1e-12 for s in rows)
        full = [rows[s][1]["hit_ratio"] for s in rows]
        assert max(full) - min(full) < 1e-12  # at 100% of the working set every policy is ideal
    assert len(res.cluster) == 3 and all(r["finished"] == 80 for r in res.cluster)
    host = [r for r in res.cluster if r["host_memory_gb"] > 0]
    assert host and host[0]["host_hit_blocks"] >= 0
    path = write(res, tmp_path, "wildserve experiment kvcache --max-requests 80")
    text = path.read_text()
    assert "wa gap closed" in text and "Only leaves of the prefix tree" in text
    assert "queueing mean s" in text
    doc = json.loads((tmp_path / "kvcache.json").read_text())
    assert doc["config"]["instances"] == 2 and doc["cluster"]
    assert (tmp_path / "cluster_ttft.png").stat().st_size > 1000
