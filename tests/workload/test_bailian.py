from __future__ import annotations

import json

import pytest

from wildserve.errors import TraceFormatError
from wildserve.workload import load_trace
from wildserve.workload.bailian import read_bailian

from .conftest import write_lines


def _line(chat_id, parent, ts, inp, out=5, typ="text", turn=1, ids=None, **over):
    rec = {
        "chat_id": chat_id,
        "parent_chat_id": parent,
        "timestamp": ts,
        "input_length": inp,
        "output_length": out,
        "type": typ,
        "turn": turn,
        "hash_ids": ids if ids is not None else list(range(-(-inp // 16))),
    }
    rec.update(over)
    return json.dumps(rec)


GOOD = [
    _line(10, -1, 0.0, 502, out=1494, typ="thinking", ids=list(range(32))),
    _line(11, -1, 0.25, 16, typ="image", ids=[100]),
    _line(12, 10, 1.5, 40, typ="thinking", turn=2, ids=[0, 1, 7]),
    _line(13, 12, 2.0, 48, typ="thinking", turn=3, ids=[0, 1, 7]),
    _line(14, 99, 2.0, 17, typ="file", turn=4, ids=[5, 6]),  # parent not in the file
]


def test_reads_exact_fields(tmp_path):
    reqs = list(read_bailian(write_lines(tmp_path / "b.jsonl", GOOD)))
    assert [r.request_id for r in reqs] == [0, 1, 2, 3, 4]
    assert [r.arrival_s for r in reqs] == [0.0, 0.25, 1.5, 2.0, 2.0]
    assert [r.prompt_tokens for r in reqs] == [502, 16, 40, 48, 17]
    assert reqs[0].output_tokens == 1494 and reqs[0].hash_ids == tuple(range(32))
    assert [r.category for r in reqs] == ["thinking", "image", "thinking", "thinking", "file"]
    assert [r.turn for r in reqs] == [1, 1, 2, 3, 4]
    # session = root chat of the parent chain; a missing parent is taken as the root
    assert [r.session_id for r in reqs] == [10, 11, 10, 10, 99]
    assert [r.parent_id for r in reqs] == [None, None, 0, 2, None]
    assert all(r.block_size == 16 for r in reqs)
    assert reqs[2].extra["chat_id"] == 12


def test_load_trace_remaps_parent_ids(tmp_path):
    # same timestamps: load_trace keeps file order on ties, so parents keep pointing at the right one
    path = write_lines(tmp_path / "b.jsonl", GOOD)
    reqs = load_trace(f"bailian:{path}")
    assert [r.extra["chat_id"] for r in reqs] == [10, 11, 12, 13, 14]
    assert reqs[3].parent_id == 2 and reqs[2].parent_id == 0


@pytest.mark.parametrize(
    ("line", "field", "problem"),
    [
        (_line(20, -1, 3.0, 16, turn=0, ids=[1]), "turn", ">= 1"),
        (_line(20, -2, 3.0, 16, ids=[1]), "parent_chat_id", ">= -1"),
        (_line(20, -1, 3.0, 33, ids=[1, 2]), "hash_ids", "expected ceil(33/16) = 3"),
        (_line(20, -1, 3.0, 16, typ=3, ids=[1]), "type", "got `int`"),
        (_line(20, -1, "3", 16, ids=[1]), "timestamp", "got `str`"),
        (_line(10, -1, 3.0, 16, ids=[1]), "chat_id", "appears twice"),
        (_line(20, -1, 0.1, 16, ids=[1]), "timestamp", "decreases from 2 to 0.1"),
        (_line(20, -1, 3.0, -4, ids=[]), "input_length", ">= 0"),
    ],
)
def test_malformed_field_named(tmp_path, line, field, problem):
    path = write_lines(tmp_path / "b.jsonl", [*GOOD, line])
    with pytest.raises(TraceFormatError) as info:
        list(read_bailian(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}:6: field '{field}':"), msg
    assert problem in msg and "\n" not in msg


def test_missing_field(tmp_path):
    rec = json.loads(GOOD[1])
    del rec["turn"]
    path = write_lines(tmp_path / "b.jsonl", [json.dumps(rec)])
    with pytest.raises(TraceFormatError, match=r"b.jsonl:1: field 'turn': missing required field"):
        list(read_bailian(path))
