"""Trace characterization on hand-built streams, the history hints, and the commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.kvcache.conftest import random_streams
from wildserve.cli import _register, app
from wildserve.kvcache.analyze import capacity_search, characterize, exp_ks_distance
from wildserve.kvcache.replay import replay
from wildserve.kvcache.stream import stream_from_chains


def _stream():
    # block ids by chain: A=[1], AB=[1,2], C=[3]; times 0, 10, 30, 100
    chains = [[1, 2], [1, 2], [3], [1]]
    s = stream_from_chains(chains, [0.0, 10.0, 30.0, 100.0], [0, 1, 0, 1], 2)
    s.categories.turns[:] = [1, 2, 1, 2]
    s.categories.sessions[:] = [7, 7, 8, 9]
    return s


def test_characterize_hand_built_stream():
    a = characterize(_stream())
    # accesses: 1,2 | 1,2 | 3 | 1 -> 6 accesses, 3 distinct blocks, 3 ideal hits
    assert (a.num_accesses, a.num_blocks) == (6, 3) and a.ideal_hit_ratio == pytest.approx(0.5)
    c0, c1 = a.categories
    # reuses: block 1 at 10 s (after cat 0) and at 90 s (after cat 1); block 2 at 10 s (after cat 0)
    assert c0.num_reuses == 2 and c0.reuse_time_pcts["p50"] == pytest.approx(10.0)
    assert c1.num_reuses == 1 and c1.reuse_time_pcts["p50"] == pytest.approx(90.0)
    assert c0.reuse_probability == pytest.approx(2 / 3)  # 1, 2 came back; 3 did not
    assert c1.reuse_probability == pytest.approx(1 / 3)  # of 1, 2, 1 only the first 1 came back
    assert c1.ideal_hit_ratio == 1.0 and c0.ideal_hit_ratio == 0.0 and c1.hit_share == 1.0
    assert a.hit_shares["follow-up requests"] == 1.0
    # two hits in session 7 (request 1 after request 0), one across sessions (9 after 7)
    assert a.hit_shares["block last used in the same session"] == pytest.approx(2 / 3)
    # block 1 is reused twice, block 2 once, block 3 never: top 1% (one block) has 2 of 3
    assert a.skew["top1%"] == pytest.approx(2 / 3)
    assert a.single_use_block_share == pytest.approx(1 / 3)
    assert a.lifespan_pcts["p50"] == pytest.approx(55.0)  # lifespans 100 and 10
    assert c0.exp_rate == pytest.approx(0.1) and c0.exp_ks is not None


def test_exp_ks_distance_is_small_for_exponential_samples_and_large_otherwise():
    rng = np.random.default_rng(3)
    x = rng.exponential(5.0, 20_000)
    assert exp_ks_distance(x, 1 / x.mean()) < 0.02
    heavy = rng.pareto(1.1, 20_000)
    assert exp_ks_distance(heavy, 1 / heavy.mean()) > 0.2


def test_capacity_search_brackets_each_target():
    chains = [[i % 7, 10 + i % 3, 20 + i] for i in range(60)]
    s = stream_from_chains(chains, np.arange(60.0), [0] * 60)
    a = characterize(s)
    capacity_search(s, a, grid_points=6)
    for policy in ("lru", "opt"):
        for target, blocks in a.capacity[policy].items():
            goal = float(target.rstrip("%")) / 100 * a.ideal_hit_ratio
            assert replay(s, policy, blocks).hit_ratio >= goal - 1e-12
            if blocks > 1:
                assert replay(s, policy, max(1, int(blocks * 0.97) - 1)).hit_ratio < goal
    assert a.capacity["opt"]["90%"] <= a.capacity["lru"]["90%"]


@settings(max_examples=40, deadline=None)
@given(random_streams(), st.sampled_from([0.5, 3.0, 1e9]), st.integers(1, 6))
def test_history_hints_equal_a_forward_scan(stream, max_age, capacity):
    h = stream.history(max_age, capacity)
    last: dict[int, tuple[float, int, int]] = {}
    for r in range(stream.num_requests):
        a, b = int(stream.req_start[r]), int(stream.req_start[r + 1])
        for i in range(a, min(b, a + capacity)):
            x, now = int(stream.blocks[i]), float(stream.times[r])
            prev = last.get(x)
            got = [float(h.age_s[i]), int(h.prev_category[i]), int(h.prior_accesses[i])]
            if prev is None or now - prev[0] > max_age:
                assert got == [np.inf, -1, 0]
                last[x] = (now, int(stream.cats[r]), 1)
            else:
                assert got == [now - prev[0], prev[1], prev[2]]
                last[x] = (now, int(stream.cats[r]), prev[2] + 1)


def _mooncake_file(tmp_path):
    lines = []
    for i in range(40):
        conv = i % 5
        ids = [0] + [100 * conv + k for k in range(1 + i // 5)] + [9000 + i]
        lines.append({"timestamp": 1000 * i, "input_length": 512 * (len(ids) - 1) + 10,
                      "output_length": 5, "hash_ids": ids})  # fmt: skip
    path = tmp_path / "mc.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_cache_analyze_command_writes_report_json_and_plots(tmp_path):
    _register()
    out = tmp_path / "report"
    res = CliRunner().invoke(
        app,
        ["cache", "analyze", f"mooncake:{_mooncake_file(tmp_path)}", "--out", str(out),
         "--scheme", "type+t1/t2+"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    text = (out / "report.md").read_text()
    assert "ideal hit ratio" in text and "| t1 |" in text and "90% of ideal" in text
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["num_requests"] == 40 and doc["category_scheme"] == "type+t1/t2+"
    assert doc["category_source"] == "inferred"
    for png in ("reuse_time.png", "category_split.png", "capacity.png"):
        assert (out / png).stat().st_size > 1000
    bad = CliRunner().invoke(app, ["cache", "analyze", "mooncake:/no/such/file"])
    assert bad.exit_code != 0
