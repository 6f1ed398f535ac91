"""`benchmarks/gateway_throughput.py` rejects a router it cannot start before any cell runs."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from gateway_throughput import router_problem  # noqa: E402


@pytest.mark.parametrize(
    "kind",
    ["sglang-router", "lmetric", "lmetric+kv-events", "round-robin@2w", "lmetric+kv-events@1w"],
)
def test_routers_it_can_start(kind):
    assert router_problem(kind) is None


@pytest.mark.parametrize(
    ("kind", "words"),
    [("lmetric-kv", "unknown policy 'lmetric-kv'"), ("lmetric@2x", "@Nw"), ("lmetric@0w", "@Nw")],
)
def test_routers_it_cannot_start(kind, words):
    assert words in router_problem(kind)


def test_a_bad_router_exits_at_once_with_one_line():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gateway_throughput.py"), "--routers", "lmetric,lmetric-kv"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("warning:")]
    assert lines == [lines[0]] and lines[0].startswith("--routers: 'lmetric-kv': unknown policy")
