"""Empty inputs are errors: one line saying what was empty, exit status 2, nothing written."""

from __future__ import annotations

import numpy as np
import pytest

from wildserve.cli import run


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "sessions").mkdir()
    np.save(tmp_path / "empty.npy", np.zeros((0, 8), dtype=np.float32))
    (tmp_path / "empty.fvecs").write_bytes(b"")
    return tmp_path


CASES = [
    (["simulate", "--trace", "mooncake:empty.jsonl", "--out", "run"], "has no requests"),
    (["simulate", "--trace", "mooncake:empty.jsonl", "-o", "block_size=16", "--output-json",
      "r.json"], "-o block_size=16"),
    (["simulate", "--trace", "weka:sessions", "--out", "run"], "no .json"),
    (["replay", "--trace", "mooncake:empty.jsonl", "--output-json", "r.json"], "has no requests"),
    (["trace", "info", "mooncake:empty.jsonl"], "has no requests"),
    (["cache", "analyze", "mooncake:empty.jsonl", "--out", "run"], "no requests"),
    (["vsearch", "build", "--data", "empty.npy", "--out", "idx.npz"], "no vectors"),
    (["vsearch", "build", "--data", "empty.fvecs", "--out", "idx.npz"], "empty"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "says"), CASES, ids=[" ".join(a[:3]) for a, _ in CASES])
def test_empty_input_is_a_one_line_error(args, says, inputs, capsys):
    before = set(inputs.iterdir())
    assert run(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and says in err[0] and err[0].startswith("wildserve: error:"), err
    assert set(inputs.iterdir()) == before  # nothing written
