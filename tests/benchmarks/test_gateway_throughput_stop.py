"""`benchmarks/gateway_throughput.py` killed mid-run leaves none of its engines, routers or wrk behind.

SIGTERM and SIGINT run its cleanup (a handler turns SIGTERM into an exit); SIGKILL runs nothing, and
the children go on their own: each is started with ``PR_SET_PDEATHSIG`` (Linux).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from _servers import descendants  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None or not Path("/proc/self/stat").exists(), reason="needs wrk, /proc"
)


def _started(pid: int) -> str | None:
    """The start time of a live ``pid`` (None once it is gone or a zombie): pids get reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in "ZX" else fields[19]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_run_killed_while_it_measures_leaves_no_child(sig):
    args = [sys.executable, str(BENCH / "gateway_throughput.py"), "--routers", "round-robin",
            "--backends", "2", "--prompt-chars", "200", "--modes", "plain", "--connections", "2",
            "--wrk-threads", "1", "--warmup", "60", "--duration", "60"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kids: dict[int, str | None] = {}
    try:
        deadline = time.monotonic() + 180
        while True:  # the first cell's wrk runs: engines, router and wrk are all up
            kids = descendants(proc.pid)
            if any(_comm(p) == "wrk" for p in kids):
                break
            assert proc.poll() is None, "the benchmark ended before its first cell"
            assert time.monotonic() < deadline, "no cell started within 180 s"
            time.sleep(0.2)
        kids = {p: _started(p) for p in descendants(proc.pid)}
        assert len(kids) >= 4  # 2 engines, the gateway, wrk
        proc.send_signal(sig)
        proc.wait(60)
        deadline = time.monotonic() + 30
        while alive := [p for p, t in kids.items() if t is not None and _started(p) == t]:
            assert time.monotonic() < deadline, f"still running: {[(p, _comm(p)) for p in alive]}"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p, t in kids.items():  # a failed run leaves nothing behind either
            if t is not None and _started(p) == t:
                os.kill(p, signal.SIGKILL)
