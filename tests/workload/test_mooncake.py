from __future__ import annotations

import itertools

import pytest

from wildserve.errors import TraceFormatError
from wildserve.workload import iter_trace, load_trace
from wildserve.workload.mooncake import read_mooncake

from .conftest import write_lines

GOOD = [
    '{"timestamp": 0, "input_length": 1000, "output_length": 20, "hash_ids": [0, 1]}',
    '{"timestamp": 1500, "input_length": 512, "output_length": 0, "hash_ids": [0]}',
    "",
    '{"timestamp": 1500.5, "input_length": 1025, "output_length": 7, "hash_ids": [0, 1, 9]}',
]


@pytest.mark.parametrize("gz", [False, True])
def test_reads_exact_fields(tmp_path, gz):
    path = write_lines(tmp_path / ("t.jsonl.gz" if gz else "t.jsonl"), GOOD, gz=gz)
    reqs = list(read_mooncake(path))
    assert [r.request_id for r in reqs] == [0, 1, 2]
    assert [r.arrival_s for r in reqs] == [0.0, 1.5, 1.5005]
    assert [r.prompt_tokens for r in reqs] == [1000, 512, 1025]
    assert [r.output_tokens for r in reqs] == [20, 0, 7]
    assert reqs[2].hash_ids == (0, 1, 9)
    assert all(r.block_size == 512 and r.session_id is None for r in reqs)


def _bad(tmp_path, line: str) -> str:
    path = write_lines(tmp_path / "bad.jsonl", [GOOD[0], line])
    with pytest.raises(TraceFormatError) as info:
        list(read_mooncake(path))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}:2:")
    return msg


@pytest.mark.parametrize(
    ("line", "field", "problem"),
    [
        ('{"timestamp": 5, "output_length": 1, "hash_ids": []}', "input_length", "missing"),
        (
            '{"timestamp": 5, "input_length": "9", "output_length": 1, "hash_ids": [0]}',
            "input_length",
            "str",
        ),
        (
            '{"timestamp": 5, "input_length": -1, "output_length": 1, "hash_ids": []}',
            "input_length",
            ">= 0",
        ),
        (
            '{"timestamp": 5, "input_length": 9, "output_length": -3, "hash_ids": [0]}',
            "output_length",
            ">= 0",
        ),
        (
            '{"timestamp": -5, "input_length": 9, "output_length": 3, "hash_ids": [0]}',
            "timestamp",
            ">= 0",
        ),
        (
            '{"timestamp": 5, "input_length": 9, "output_length": 3, "hash_ids": [0, "x"]}',
            "hash_ids[1]",
            "str",
        ),
        (
            '{"timestamp": 5, "input_length": 9, "output_length": 3, "hash_ids": 7}',
            "hash_ids",
            "array",
        ),
        (
            '{"timestamp": 5, "input_length": 513, "output_length": 3, "hash_ids": [0]}',
            "hash_ids",
            "expected ceil(513/512) = 2",
        ),
        (
            '{"timestamp": 5, "input_length": 10, "output_length": 3, "hash_ids": [0, 1]}',
            "hash_ids",
            "has 2 block ids",
        ),
    ],
)
def test_malformed_field_named(tmp_path, line, field, problem):
    msg = _bad(tmp_path, line)
    assert f":2: field '{field}': " in msg
    assert problem in msg and "invalid JSON" not in msg


def test_decreasing_timestamp(tmp_path):
    lines = [GOOD[1], GOOD[1].replace("1500", "1499")]
    path = write_lines(tmp_path / "dec.jsonl", lines)
    with pytest.raises(
        TraceFormatError, match=r"dec.jsonl:2: field 'timestamp': decreases from 1500 to 1499"
    ):
        list(read_mooncake(path))


def test_malformed_json_names_line(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [GOOD[0], GOOD[1], '{"timestamp": 5, "input_'])
    with pytest.raises(TraceFormatError, match=r"bad.jsonl:3: invalid JSON"):
        list(read_mooncake(path))


def test_builtin_loads_12031_requests():
    reqs = load_trace("builtin:mooncake-conversation")
    assert len(reqs) == 12031
    assert [r.request_id for r in reqs] == list(range(12031))
    assert all(a.arrival_s <= b.arrival_s for a, b in itertools.pairwise(reqs))
    assert reqs[0].hash_ids[:3] == (0, 1, 2) and reqs[0].block_size == 512
    assert 3500 < reqs[-1].arrival_s < 3600


def test_iter_trace_is_lazy_and_default():
    it = iter_trace()
    first = next(it)
    assert first.request_id == 0 and first.prompt_tokens == 6758


def test_shared_mooncake_matches_builtin(shared_dir):
    path = shared_dir / "traces/mooncake/conversation_trace.jsonl"
    if not path.exists():
        pytest.skip("mooncake trace not present")
    a = load_trace(f"mooncake:{path}")
    b = load_trace()
    assert len(a) == len(b) == 12031
    assert a[100].hash_ids == b[100].hash_ids and a[-1].arrival_s == b[-1].arrival_s
