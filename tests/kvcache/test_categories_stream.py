"""Category inference on hand-built traces, native categories, and the block stream."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wildserve.errors import ConfigError, UnknownNameError
from wildserve.kvcache.categories import categorize, infer_followups, turn_bucket
from wildserve.kvcache.stream import NEVER, build_stream, stream_from_chains
from wildserve.workload import load_trace
from wildserve.workload.request import Request


def _mc(i: int, ids: list[int], t: float = 0.0) -> Request:
    """A Mooncake-style request: 512-token blocks, the last one partial."""
    return Request(i, t, 512 * (len(ids) - 1) + 100, 10, tuple(ids), 512)


def test_followups_extend_the_parent_minus_its_partial_last_block():
    reqs = [
        _mc(0, [1, 2, 3]),  # turn 1: blocks 1, 2 full, 3 partial
        _mc(1, [1, 2, 30, 31]),  # extends [1, 2] (3 was partial and changed): turn 2
        _mc(2, [1, 2, 30, 40, 41]),  # extends request 1's [1, 2, 30]: turn 3
        _mc(3, [7, 8]),  # unrelated: turn 1
        _mc(4, [1, 2, 30, 40, 50]),  # extends request 2's [1, 2, 30, 40]: turn 4
        _mc(5, [1, 9]),  # shares only block 1 with the others, no full list: turn 1
        _mc(6, [7, 8, 9]),  # extends [7] of request 3: turn 2
    ]
    parents, turns = infer_followups(reqs, shared_branches=0)
    assert parents.tolist() == [-1, 0, 1, -1, 2, -1, 3]
    assert turns.tolist() == [1, 2, 3, 1, 4, 1, 2]


def test_the_latest_and_longest_match_is_the_parent():
    reqs = [
        _mc(0, [1, 2, 5]),
        _mc(1, [1, 2, 6]),
        _mc(2, [1, 2, 3, 4, 7]),
        _mc(3, [1, 2, 3, 4, 8, 9]),
    ]
    parents, _ = infer_followups(reqs, shared_branches=0)
    # 1 extends 0 (a regenerated turn looks the same); 2 matches 0 and 1 on [1, 2]: the latest
    # wins; 3 matches 0, 1 on [1, 2] and 2 on [1..4]: the longest wins
    assert parents.tolist() == [-1, 0, 1, 2]


def test_a_shared_system_prompt_is_not_a_conversation():
    """Every request starts with block 0; a bare system-prompt request would parent them all."""
    reqs = [_mc(0, [0, 99])]
    reqs += [_mc(i, [0, 10 * i, 10 * i + 1, 10 * i + 2]) for i in range(1, 6)]
    reqs += [_mc(6, [0, 10, 11, 12, 13])]  # a real follow-up of request 1
    literal, _ = infer_followups(reqs, shared_branches=0)
    assert literal.tolist()[1:6] == [0, 0, 0, 0, 0]
    guarded, turns = infer_followups(reqs, shared_branches=3)
    assert guarded.tolist() == [-1, -1, -1, -1, -1, -1, 1]
    assert turns.tolist() == [1, 1, 1, 1, 1, 1, 2]


def test_categories_native_inferred_and_auto():
    reqs = [
        Request(0, 0.0, 64, 1, (1, 2, 3, 4), 16, session_id=5, category="text", turn=1),
        Request(1, 1.0, 80, 1, (1, 2, 3, 4, 5), 16, 5, "text", 2, parent_id=0),
        Request(2, 2.0, 32, 1, (9, 8), 16, 6, "image", 1),
    ]
    c = categorize(reqs, "type+t1/t2+")
    assert c.source == "native" and c.names == ["image|t1", "text|t1", "text|t2+"]
    assert c.ids.tolist() == [1, 2, 0] and c.parents.tolist() == [-1, 0, -1]
    assert c.sessions.tolist() == [5, 5, 6]
    inferred = categorize([_mc(0, [1, 2, 3]), _mc(1, [1, 2, 4, 5])], "type+t1/t2+")
    assert inferred.source == "inferred" and inferred.names == ["t1", "t2+"]
    assert inferred.ids.tolist() == [0, 1] and inferred.sessions.tolist() == [0, 0]
    assert turn_bucket(1) == "t1" and turn_bucket(7) == "t2+"
    assert [turn_bucket(t, (2, 4)) for t in (1, 2, 3, 4, 9)] == ["t1", "t2-3", "t2-3", "t4+", "t4+"]
    with pytest.raises(ConfigError, match="turn edges"):
        categorize(reqs, "type+t1/t2+@turn_edges=(3, 2)")
    with pytest.raises(ConfigError, match="no setting colour"):
        categorize(reqs, "type@colour=1")
    with pytest.raises(UnknownNameError, match="choose one of"):
        categorize(reqs, "type+day")
    with pytest.raises(ConfigError, match="source"):
        categorize(reqs, source="guessed")


def test_bailian_file_gets_native_type_and_turn_categories(tmp_path):
    lines = [
        {"chat_id": 0, "parent_chat_id": -1, "timestamp": 0.0, "input_length": 40,
         "output_length": 5, "type": "text", "turn": 1, "hash_ids": [1, 2, 3]},
        {"chat_id": 1, "parent_chat_id": 0, "timestamp": 2.0, "input_length": 70,
         "output_length": 5, "type": "text", "turn": 2, "hash_ids": [1, 2, 3, 4, 5]},
        {"chat_id": 2, "parent_chat_id": -1, "timestamp": 3.0, "input_length": 20,
         "output_length": 5, "type": "search", "turn": 1, "hash_ids": [1, 9]},
    ]  # fmt: skip
    path = tmp_path / "b.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    reqs = load_trace(f"bailian:{path}")
    s = build_stream(reqs)
    assert s.categories.names == ["search|pooled", "text|pooled"]  # the default pools rare pairs
    assert build_stream(
        reqs, categories=categorize(reqs, "type+turn@min_requests=1")
    ).categories.names == ["search|t1", "text|t1", "text|t2"]
    assert s.block_size == 16 and s.lengths.tolist() == [2, 4, 1]  # full 16-token blocks only
    # request 1 re-reads request 0's two blocks; request 2's block 1 is the same first block
    assert s.blocks.tolist()[:6] == [0, 1, 0, 1, 2, 3] and s.blocks[6] == 0


def test_stream_next_use_and_truncation():
    s = stream_from_chains([[1, 2, 3], [1, 2], [1, 5, 6, 7], [1, 2, 3]], [0, 1, 2, 3], [0, 1, 0, 1])
    assert s.num_blocks == 6 and s.lengths.tolist() == [3, 2, 4, 3]
    assert s.next_use().tolist() == [1, 1, 3, 2, 3, 3, NEVER, NEVER, NEVER, NEVER, NEVER, NEVER]
    # with 2 blocks a request only replays its first 2: request 3's block 3 is never replayed
    assert s.next_use(2)[2] == NEVER and s.next_use(2)[0] == 1
    assert s.depths().tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3, 0, 1, 2]
    assert np.array_equal(s.request_of_access(), [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3])


def test_stream_errors_name_the_problem():
    with pytest.raises(ConfigError, match="no requests"):
        build_stream([])
    with pytest.raises(ConfigError, match="no block ids"):
        build_stream([Request(0, 0.0, 100, 1)], name="azure")
