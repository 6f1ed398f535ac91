"""Category schemes bucket a hand-built Qwen-Bailian file (and WEKA-style calls) as specified."""

from __future__ import annotations

import json

import pytest

from wildserve.kvcache.categories import CATEGORY_SCHEMES, categorize
from wildserve.kvcache.stream import load_stream
from wildserve.workload.request import Request

# (type, turn) of each line; every first turn opens a chat, later turns continue the previous one
CHATS = [("text", 1), ("text", 2), ("text", 3), ("text", 12), ("text", 1), ("text", 2),
         ("image", 1), ("image", 2), ("search", 1)]  # fmt: skip


def _bailian(tmp_path):
    lines = []
    for i, (kind, turn) in enumerate(CHATS):
        parent = -1 if turn == 1 else i - 1
        lines.append({"chat_id": i, "parent_chat_id": parent, "timestamp": float(i),
                      "input_length": 48, "output_length": 4, "type": kind, "turn": turn,
                      "hash_ids": [100 + i, 200 + i, 300 + i]})  # fmt: skip
    path = tmp_path / "bailian.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return f"bailian:{path}"


def _labels(spec: str, scheme: str) -> list[str]:
    _, stream = load_stream(spec, scheme=scheme)
    names = stream.categories.names
    return [names[c] for c in stream.cats]


def test_every_scheme_buckets_a_bailian_file_as_specified(tmp_path):
    spec = _bailian(tmp_path)
    assert _labels(spec, "type") == ["text"] * 6 + ["image", "image", "search"]
    assert _labels(spec, "type+t1/t2+") == [
        "text|t1", "text|t2+", "text|t2+", "text|t2+", "text|t1", "text|t2+",
        "image|t1", "image|t2+", "search|t1"]  # fmt: skip
    # raw turns; turn 12 is beyond the pool edge (10); pairs with < 2 requests are pooled too
    assert _labels(spec, "type+turn@min_requests=2") == [
        "text|t1", "text|t2", "text|pooled", "text|pooled", "text|t1", "text|t2",
        "image|pooled", "image|pooled", "search|pooled"]  # fmt: skip
    # a lower edge pools turn 3 as well; min_requests=0 keeps every rare pair
    assert _labels(spec, "type+turn@pool_turn=3@min_requests=0") == [
        "text|t1", "text|t2", "text|pooled", "text|pooled", "text|t1", "text|t2",
        "image|t1", "image|t2", "search|t1"]  # fmt: skip
    # the paper's scheme is the default
    _, stream = load_stream(spec)
    assert stream.categories.scheme == "type+turn" and stream.categories.source == "native"


def test_weka_input_types_by_agent():
    reqs = [
        Request(0, 0.0, 64, 1, (1, 2), 16, 0, "text", 1),
        Request(1, 1.0, 64, 1, (1, 2, 3), 16, 0, "tool_result", 2),
        Request(2, 2.0, 64, 1, (7,), 16, 0, "text", 3, extra={"agent_id": "a1"}),
    ]
    c = categorize(reqs, "input-types+agent")
    assert [c.names[i] for i in c.ids] == ["text|main", "tool_result|main", "text|sub"]
    t = categorize(reqs, "type")
    assert [t.names[i] for i in t.ids] == ["text", "tool_result", "text"]


def test_schemes_without_types_use_turns_alone():
    """Mooncake-style requests (no type, no turn): inferred turns, one category for `type`."""
    reqs = [Request(0, 0.0, 600, 1, (1, 2), 512), Request(1, 1.0, 1100, 1, (1, 2, 3), 512)]
    assert categorize(reqs, "type").names == ["all"]
    inferred = categorize(reqs, "type+turn@min_requests=0")
    assert inferred.source == "inferred" and inferred.names == ["t1", "t2"]


@pytest.mark.parametrize("name", CATEGORY_SCHEMES.names())
def test_every_registered_scheme_labels_every_request(name, tmp_path):
    _, stream = load_stream(_bailian(tmp_path), scheme=name)
    assert len(stream.cats) == len(CHATS) and stream.categories.counts().sum() == len(CHATS)
