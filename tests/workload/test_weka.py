from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pytest

from wildserve.errors import ConfigError, TraceFormatError
from wildserve.workload import load_trace
from wildserve.workload.weka import read_weka


def _call(t, n_in, ids=None, typ="n", types=("tool_result",), **over):
    rec = {
        "t": t,
        "type": typ,
        "model": "m",
        "in": n_in,
        "out": 10,
        "hash_ids": ids if ids is not None else list(range(1, n_in // 64 + 1)),
        "input_types": list(types),
        "output_types": ["text"],
        "stop": "end_turn",
        "api_time": 1.0,
        "think_time": 0.0,
    }
    rec.update(over)
    return rec


def _session(sid, requests, **over):
    doc = {"id": sid, "block_size": 64, "hash_id_scope": "local", "requests": requests}
    doc.update(over)
    return doc


SESSION_A = _session(
    "a",
    [
        _call(0.0, 200, types=("text",)),  # 3 full blocks: ids 1, 2, 3
        _call(10.0, 256, typ="s"),  # 4 blocks
        # completed subagent: t is its finish; started 20 - 12 = 8 s; nested t count from there
        {
            "t": 20.0,
            "type": "subagent",
            "agent_id": "agent_001",
            "duration_ms": 12000,
            "status": "completed",
            "requests": [_call(0.0, 128, ids=[50, 51]), _call(5.0, 192, ids=[50, 51, 52])],
        },
        _call(30.0, 320),
    ],
)
SESSION_B = _session("b", [_call(0.0, 200, types=("text",)), _call(4.0, 200)])


def _write(dirpath: Path, name: str, doc: dict, gz: bool = False) -> Path:
    data = json.dumps(doc).encode()
    path = dirpath / name
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture
def session_dir(tmp_path):
    _write(tmp_path, "trace_0001.json", SESSION_A)
    _write(tmp_path, "trace_0002.json.gz", SESSION_B, gz=True)
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


def test_flattens_subagents_with_timing(tmp_path):
    path = _write(tmp_path, "one.json", SESSION_A)
    reqs = list(read_weka(path))
    assert [r.arrival_s for r in reqs] == [0.0, 8.0, 10.0, 13.0, 30.0]
    assert [r.prompt_tokens for r in reqs] == [200, 128, 256, 192, 320]
    assert [r.turn for r in reqs] == [1, 2, 3, 4, 5]
    assert [r.request_id for r in reqs] == [0, 1, 2, 3, 4]
    assert [r.category for r in reqs] == [
        "text",
        "tool_result",
        "tool_result",
        "tool_result",
        "tool_result",
    ]
    assert reqs[1].extra["agent_id"] == "agent_001" and "agent_id" not in reqs[0].extra
    assert reqs[0].hash_ids == (1, 2, 3)  # session 0: namespace 0
    assert reqs[3].hash_ids == (50, 51, 52)
    assert all(r.block_size == 64 and r.session_id == 0 for r in reqs)


def test_async_subagent_starts_at_its_t(tmp_path):
    sub = {
        "t": 5.0,
        "type": "subagent",
        "duration_ms": None,
        "status": "async_launched",
        "requests": [_call(0.0, 64, ids=[9]), _call(2.0, 64, ids=[9])],
    }
    path = _write(
        tmp_path, "one.json", _session("x", [_call(0.0, 64, ids=[1]), sub, _call(6.0, 64, ids=[1])])
    )
    assert [r.arrival_s for r in read_weka(path)] == [0.0, 5.0, 6.0, 7.0]


def test_poisson_starts_keep_internal_timing(session_dir):
    reqs = load_trace(f"weka:{session_dir}", session_rate=0.5, seed=7)
    assert [r.request_id for r in reqs] == list(range(7))
    assert all(a.arrival_s <= b.arrival_s for a, b in itertools.pairwise(reqs))
    by_session = {s: [r for r in reqs if r.session_id == s] for s in (0, 1)}
    a, b = by_session[0], by_session[1]
    assert [r.arrival_s - a[0].arrival_s for r in a] == pytest.approx([0.0, 8.0, 10.0, 13.0, 30.0])
    assert b[1].arrival_s - b[0].arrival_s == pytest.approx(4.0)
    assert a[0].arrival_s == 0.0 and b[0].arrival_s > 0.0
    # seeded: the same seed places sessions identically, another seed differently
    again = load_trace(f"weka:{session_dir}", session_rate=0.5, seed=7)
    other = load_trace(f"weka:{session_dir}", session_rate=0.5, seed=8)
    assert [r.arrival_s for r in again] == [r.arrival_s for r in reqs]
    assert [r.arrival_s for r in other] != [r.arrival_s for r in reqs]


def test_session_starts_are_poisson(tmp_path):
    for i in range(400):
        _write(tmp_path, f"s{i:04d}.json", _session(str(i), [_call(0.0, 64, ids=[1])]))
    reqs = list(read_weka(tmp_path, session_rate=2.0, seed=3))
    gaps = [b.arrival_s - a.arrival_s for a, b in itertools.pairwise(reqs)]
    mean = sum(gaps) / len(gaps)
    assert mean == pytest.approx(0.5, rel=0.15)  # 399 Exp(0.5) gaps: std of the mean is 5%


def test_namespacing_separates_equal_local_ids(session_dir):
    reqs = load_trace(f"weka:{session_dir}", session_rate=0.5, seed=7)
    first_a = next(r for r in reqs if r.session_id == 0 and r.turn == 1)
    first_b = next(r for r in reqs if r.session_id == 1 and r.turn == 1)
    # both sessions open with local ids (1, 2, 3) ...
    assert [h & 0xFFFFFFFF for h in first_b.hash_ids] == [1, 2, 3] == list(first_a.hash_ids)
    # ... but share neither trace ids nor engine block hashes
    assert not set(first_a.hash_ids) & set(first_b.hash_ids)
    assert not set(first_a.engine_block_hashes(16)) & set(first_b.engine_block_hashes(16))
    # inside one session the prefix relation holds
    second_a = next(r for r in reqs if r.session_id == 0 and r.turn == 3)
    assert second_a.engine_block_hashes(16)[:12] == first_a.engine_block_hashes(16)


def test_bundle_equals_directory(tmp_path, session_dir):
    bundle = tmp_path / "bundle.jsonl.gz"
    bundle.write_bytes(
        gzip.compress((json.dumps(SESSION_A) + "\n" + json.dumps(SESSION_B) + "\n").encode())
    )
    a = load_trace(f"weka:{bundle}", seed=1)
    b = load_trace(f"weka:{session_dir}", seed=1)
    assert [(r.arrival_s, r.hash_ids) for r in a] == [(r.arrival_s, r.hash_ids) for r in b]


def test_max_idle_caps_gaps(tmp_path):
    path = _write(
        tmp_path,
        "one.json",
        _session(
            "x", [_call(0.0, 64, ids=[1]), _call(5000.0, 64, ids=[1]), _call(5001.0, 64, ids=[1])]
        ),
    )
    assert [r.arrival_s for r in read_weka(path, max_idle_s=60)] == [0.0, 60.0, 61.0]


def test_block_count_tolerance(tmp_path):
    # floor(130/64) = 2 and ceil = 3 are both accepted; 1 is not
    ok = _session("x", [_call(0.0, 130, ids=[1, 2]), _call(1.0, 130, ids=[1, 2, 3])])
    assert len(list(read_weka(_write(tmp_path, "ok.json", ok)))) == 2
    bad = _session(
        "x",
        [
            _call(0.0, 130, ids=[1, 2]),
            {
                "t": 3.0,
                "type": "subagent",
                "duration_ms": 1000,
                "requests": [_call(0.0, 130, ids=[1])],
            },
        ],
    )
    path = _write(tmp_path, "bad.json", bad)
    with pytest.raises(TraceFormatError) as info:
        list(read_weka(path))
    assert str(info.value) == (
        f"{path}:1: field 'requests[1].requests[0].hash_ids': has 1 block ids, "
        "expected ceil(130/64) = 3 or floor = 2"
    )


@pytest.mark.parametrize(
    ("mutate", "field", "problem"),
    [
        (lambda d: d["requests"][1].pop("in"), "requests[1].in", "missing required field"),
        (lambda d: d["requests"][1].update({"out": -1}), "requests[1].out", ">= 0"),
        (lambda d: d["requests"][1].update({"type": "x"}), "requests[1].type", "Invalid value 'x'"),
        (lambda d: d["requests"][3].update({"t": 1.0}), "requests[3].t", "decreases from 20 to 1"),
        (
            lambda d: d["requests"][2]["requests"][1].update({"t": -1}),
            "requests[2].requests[1].t",
            ">= 0",
        ),
        (lambda d: d.update({"block_size": 0}), "block_size", ">= 1"),
        (
            lambda d: d.update({"hash_id_scope": "galaxy"}),
            "hash_id_scope",
            "Invalid enum value 'galaxy'",
        ),
        (
            lambda d: d["requests"][0].update({"hash_ids": [1, 2, -3]}),
            "requests[0].hash_ids",
            "[0, 2**32)",
        ),
    ],
)
def test_malformed_field_named(tmp_path, mutate, field, problem):
    doc = json.loads(json.dumps(SESSION_A))
    mutate(doc)
    path = _write(tmp_path, "bad.json", doc)
    with pytest.raises(TraceFormatError) as info:
        list(read_weka(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}:1: field '{field}': "), msg
    assert problem in msg and "\n" not in msg


def test_bundle_error_names_line(tmp_path):
    bundle = tmp_path / "b.jsonl"
    bundle.write_text(json.dumps(SESSION_A) + "\n" + json.dumps(SESSION_B)[:-5] + "\n")
    with pytest.raises(TraceFormatError, match=r"b.jsonl:2: invalid JSON"):
        list(read_weka(bundle))


def test_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="session_rate"):
        read_weka(tmp_path, session_rate=0)  # checked before the first request is asked for
    with pytest.raises(TraceFormatError, match=r"no \.json"):
        list(read_weka(tmp_path))


def test_builtin_subset():
    reqs = load_trace("builtin:weka-claude-code")
    assert len(reqs) == 3351
    assert len({r.session_id for r in reqs}) == 41
    assert all(a.arrival_s <= b.arrival_s for a, b in itertools.pairwise(reqs))


def test_shared_sessions_load(shared_dir, tmp_path):
    src = shared_dir / "traces/weka_claude_code"
    files = sorted(src.glob("trace_*.json.gz"))[:60]
    if not files:
        pytest.skip("weka sessions not present")
    for f in files:
        (tmp_path / f.name).symlink_to(f.resolve())
    reqs = load_trace(str(tmp_path))  # bare directory: sniffed as weka
    assert len({r.session_id for r in reqs}) == len(files)
    assert all(r.turn >= 1 and r.block_size == 64 for r in reqs)


@pytest.mark.slow
def test_all_shared_sessions_load(shared_dir):
    reqs = load_trace(f"weka:{shared_dir / 'traces/weka_claude_code'}")
    assert len({r.session_id for r in reqs}) == 400 and len(reqs) == 25834
