"""Registry, metrics, block hashing and atomic writes: the small shared pieces."""

from __future__ import annotations

import numpy as np
import pytest

from wildserve.blocks import token_block_hashes, trace_block_hashes
from wildserve.errors import TraceFormatError, UnknownNameError
from wildserve.io import atomic_write, atomic_write_json
from wildserve.metrics import RequestMetrics, summarize
from wildserve.registry import Registry


def test_registry_rejects_duplicates_and_lists_choices():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    reg.add("b", 2)
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", 3)
    with pytest.raises(UnknownNameError, match="unknown widget 'c'; choose one of: a, b"):
        reg.get("c")


def test_trace_format_error_names_file_line_field():
    e = TraceFormatError("t.jsonl", 7, "input_length", "expected an int")
    assert str(e) == "t.jsonl:7: field 'input_length': expected an int"


def test_summarize_matches_numpy_and_skips_nan():
    v = [1.0, 2.0, 3.0, 4.0, float("nan")]
    s = summarize(v)
    assert s["mean"] == 2.5 and s["p50"] == 2.5
    assert s["p99"] == pytest.approx(np.percentile([1, 2, 3, 4], 99))
    assert summarize([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


class _R:
    def __init__(self, arrival, sched, first, finish, out, prompt, hit):
        self.arrival_s, self.first_scheduled_s, self.first_token_s = arrival, sched, first
        self.finish_s, self.num_output_tokens = finish, out
        self.num_prompt_tokens, self.num_hit_tokens = prompt, hit


def test_request_metrics_definitions():
    reqs = [
        _R(0.0, 0.5, 1.0, 3.0, 5, 100, 50),
        _R(1.0, 1.0, 1.5, 1.5, 1, 300, 0),
        _R(2, -1, -1, 2.5, 0, 10, -1),
    ]
    m = RequestMetrics.from_requests(reqs, [0, 1, 0])
    assert m.num_finished == 2 and m.num_aborted == 1
    np.testing.assert_allclose(m.ttft, [1.0, 0.5])
    np.testing.assert_allclose(m.tpot[:1], [0.5])  # (3 - 1) / (5 - 1)
    assert np.isnan(m.tpot[1])
    np.testing.assert_allclose(m.queueing, [0.5, 0.0])
    assert m.hit_ratio() == pytest.approx(50 / 400)
    assert m.hit_ratio_per_instance(2) == [0.5, 0.0]
    assert m.slo_attainment(ttft_slo_s=0.8, tpot_slo_s=1.0) == 0.5


def test_trace_blocks_map_onto_engine_blocks_keeping_prefixes():
    a = trace_block_hashes([7, 8, 9], 512, 1500, 16)
    b = trace_block_hashes([7, 8, 10, 11], 512, 2048, 16)
    assert len(a) == 1500 // 16 and len(b) == 128
    assert a[:64] == b[:64] and a[64] != b[64]
    assert len(set(a)) == len(a)
    # same ids at a different position are a different prefix
    assert trace_block_hashes([8], 512, 512, 16)[0] != a[32]
    # a trace coarser than the engine and one finer agree on the prefix relation
    assert trace_block_hashes([1, 2], 16, 32, 32) == trace_block_hashes([1, 2, 3], 16, 48, 32)
    assert trace_block_hashes([1, 2], 16, 32, 32) != trace_block_hashes([1, 3], 16, 32, 32)


def test_token_block_hashes_are_chained():
    x = token_block_hashes(list(range(40)), 16)
    y = token_block_hashes(list(range(32)) + [0] * 8, 16)
    z = token_block_hashes([99] + list(range(1, 40)), 16)
    assert len(x) == 2 and x == y
    assert z[1] != x[1]  # block 2 has equal tokens but a different prefix


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    assert target.read_text().strip().startswith("{")

    def boom(tmp):
        tmp.write_text("partial")
        raise RuntimeError("fail")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert '"a": 1' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_write_gives_the_usual_file_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
