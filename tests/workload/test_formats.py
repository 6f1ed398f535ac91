from __future__ import annotations

import json

import pytest

from wildserve.errors import ConfigError, TraceFormatError, UnknownNameError
from wildserve.workload import BUILTINS, FORMATS, iter_trace, load_trace
from wildserve.workload.formats import renumber, sniff_format
from wildserve.workload.request import Request

from .conftest import write_lines

MOONCAKE = '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [0]}'
BAILIAN = (
    '{"chat_id": 0, "parent_chat_id": -1, "timestamp": 0.0, "input_length": 10, '
    '"output_length": 1, "type": "text", "turn": 1, "hash_ids": [0]}'
)
WEKA = json.dumps({"id": "s", "block_size": 64, "hash_id_scope": "local", "requests": []})
AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,10,1"


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("m.jsonl", MOONCAKE, "mooncake"),
        ("b.jsonl", BAILIAN, "bailian"),
        ("w.json", WEKA, "weka"),
        ("a.csv", AZURE, "azure"),
    ],
)
def test_sniffs_each_format(tmp_path, name, text, fmt):
    path = write_lines(tmp_path / name, [text])
    assert sniff_format(path).name == fmt
    gz = write_lines(tmp_path / (name + ".gz"), [text], gz=True)
    assert sniff_format(gz).name == fmt


def test_sniffs_directory_as_weka(tmp_path):
    (tmp_path / "s.json").write_text(WEKA)
    assert sniff_format(tmp_path).name == "weka"


def test_unknown_content(tmp_path):
    path = write_lines(tmp_path / "x.txt", ["hello"])
    with pytest.raises(
        TraceFormatError, match=r"cannot tell the trace format.*azure, bailian, mooncake, weka"
    ):
        load_trace(str(path))


def test_spec_errors(tmp_path):
    with pytest.raises(UnknownNameError, match="mooncake-conversation"):
        load_trace("builtin:nope")
    with pytest.raises(TraceFormatError, match=r"nope\.jsonl: no such file"):
        load_trace(f"mooncake:{tmp_path}/nope.jsonl")
    with pytest.raises(TraceFormatError, match="unknown trace format 'mooncak'; a trace spec is"):
        load_trace("mooncak:/x/y")
    with pytest.raises(
        ConfigError, match="has no option session_rate; its options are: block_size"
    ):
        load_trace("builtin:mooncake-conversation", session_rate=1.0)


def test_explicit_format_overrides_sniffing(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [MOONCAKE])
    (r,) = load_trace(f"mooncake:{path}", block_size=16)
    assert r.block_size == 16


def test_registries_list_everything():
    assert FORMATS.names() == ["azure", "bailian", "mooncake", "weka"]
    assert BUILTINS.names() == [
        "azure-code",
        "azure-conv",
        "mooncake-conversation",
        "weka-claude-code",
    ]
    for name in BUILTINS:
        assert BUILTINS.get(name).path.is_file()
        assert next(iter_trace(f"builtin:{name}")).request_id == 0
    assert (BUILTINS.get("mooncake-conversation").path.parent / "ATTRIBUTION.md").is_file()


def test_renumber_sorts_stably_and_remaps_parents():
    reqs = [
        Request(7, 2.0, 1, 1),
        Request(3, 1.0, 1, 1),
        Request(5, 2.0, 1, 1, parent_id=3),
        Request(9, 3.0, 1, 1, parent_id=7),
    ]
    out = renumber(reqs)
    assert [(r.request_id, r.arrival_s, r.parent_id) for r in out] == [
        (0, 1.0, None),
        (1, 2.0, None),
        (2, 2.0, 0),
        (3, 3.0, 1),
    ]
