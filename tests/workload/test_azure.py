from __future__ import annotations

import pytest

from wildserve.errors import TraceFormatError
from wildserve.workload import load_trace
from wildserve.workload.azure import read_azure

from .conftest import write_lines

HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"
GOOD = [
    HEADER,
    "2023-11-16 18:15:46.6805900,374,44",
    "2023-11-16 18:15:50.9951690,396,109",
    "2023-11-16 18:16:46.6805900,0,1",
]


def test_reads_exact_fields(tmp_path):
    reqs = list(read_azure(write_lines(tmp_path / "a.csv", GOOD)))
    assert [r.request_id for r in reqs] == [0, 1, 2]
    assert reqs[0].arrival_s == 0.0
    assert reqs[1].arrival_s == pytest.approx(4.314579)
    assert reqs[2].arrival_s == pytest.approx(60.0)
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(374, 44), (396, 109), (0, 1)]
    assert all(r.hash_ids == () and r.block_size == 0 and r.session_id is None for r in reqs)


def test_column_order_from_header(tmp_path):
    lines = ["GeneratedTokens,TIMESTAMP,ContextTokens", "7,2023-11-16 18:15:46.68,100"]
    (r,) = read_azure(write_lines(tmp_path / "a.csv", lines))
    assert (r.prompt_tokens, r.output_tokens) == (100, 7)


@pytest.mark.parametrize(
    ("line", "field", "problem"),
    [
        ("2023-11-16 18:17:00,12x,3", "ContextTokens", "expected an integer"),
        ("2023-11-16 18:17:00,12,-3", "GeneratedTokens", "must be >= 0"),
        ("yesterday,12,3", "TIMESTAMP", "not a datetime"),
        ("2023-11-16 18:15:00,12,3", "TIMESTAMP", "decreases"),
    ],
)
def test_malformed_field_named(tmp_path, line, field, problem):
    path = write_lines(tmp_path / "a.csv", [*GOOD, line])
    with pytest.raises(TraceFormatError) as info:
        list(read_azure(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}:5: field '{field}':") and problem in msg


def test_wrong_column_count_and_header(tmp_path):
    path = write_lines(tmp_path / "a.csv", [*GOOD, "2023-11-16 18:17:00,12"])
    with pytest.raises(TraceFormatError, match=r"a.csv:5: has 2 columns, the header has 3"):
        list(read_azure(path))
    path = write_lines(tmp_path / "b.csv", ["TIMESTAMP,ContextTokens", "2023-11-16 18:17:00,12"])
    with pytest.raises(TraceFormatError, match=r"b.csv:1: field 'GeneratedTokens': missing"):
        list(read_azure(path))


def test_builtins():
    conv, code = load_trace("builtin:azure-conv"), load_trace("builtin:azure-code")
    assert (len(conv), len(code)) == (19366, 8819)
    assert conv[0].arrival_s == 0.0 and 3400 < conv[-1].arrival_s < 3600


def test_shared_files_load(shared_dir):
    path = shared_dir / "traces/azure/AzureLLMInferenceTrace_code.csv"
    if not path.exists():
        pytest.skip("azure trace not present")
    reqs = load_trace(str(path))  # bare path: sniffed
    assert len(reqs) == 8819 and reqs[0].prompt_tokens == 4808
