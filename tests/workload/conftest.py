"""Helpers for writing small trace files by hand."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

SHARED = Path(__file__).parents[2] / "../shared"


def write_lines(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared data is not present")
    return SHARED
