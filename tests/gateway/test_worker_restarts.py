"""``--workers N``: a worker that keeps dying is restarted with backoff, then the gateway gives up."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.gateway.conftest import REPO
from wildserve.gateway.workers import RestartBudget, _how_it_exited


def test_each_restart_of_a_worker_waits_twice_as_long_until_the_deaths_run_out():
    budget = RestartBudget(max_deaths=5, window_s=30.0)
    assert budget.on_death(0, 0.0) == pytest.approx(0.1)
    assert budget.on_death(1, 0.5) == pytest.approx(0.1)  # the other worker: its own backoff
    assert budget.on_death(0, 1.0) == pytest.approx(0.2)
    assert budget.on_death(0, 2.0) == pytest.approx(0.4)
    assert budget.on_death(1, 3.0) is None  # five deaths in 30 s: give up


def test_deaths_older_than_the_window_are_forgotten_and_the_delay_is_capped():
    budget = RestartBudget(max_deaths=5, window_s=30.0)
    for t in range(4):
        budget.on_death(0, float(t))
    assert budget.on_death(0, 40.0) == pytest.approx(0.1)  # alone in its window again
    many = RestartBudget(max_deaths=100, window_s=30.0)
    delays = [many.on_death(0, i * 0.01) for i in range(12)]
    assert delays[-1] == 5.0 and max(delays) == 5.0


def test_a_worker_that_said_nothing_is_described_by_how_it_exited():
    assert _how_it_exited(-9) == "killed by SIGKILL"
    assert _how_it_exited(-40) == "killed by signal 40"  # real-time signals have no name
    assert _how_it_exited(3) == "exit code 3"


@pytest.mark.timeout(120)
def test_a_gateway_whose_workers_cannot_start_exits_with_one_line_naming_why(tmp_path):
    missing = tmp_path / "no-such" / "tokenizer.json"  # each worker loads it, and fails
    args = ["gateway", "--workers", "2", "--port", "0", "--backend", "http://127.0.0.1:9"]
    args += ["--tokenizer", str(missing), "--worker-death-window", "600"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "wildserve.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("wildserve: error: gateway workers died 5 times within 600 s")
    assert f"{missing}: tokenizer file not found" in lines[-1]
    assert "Traceback" not in done.stderr  # an expected failure is a line, not a stack
    assert "gateway on http://" not in done.stderr  # never announced: no worker ever served
    # four restarts, each worker's waiting twice as long as its previous one
    delays = re.findall(r"restarting it in (\S+) s", done.stderr)
    assert sorted(map(float, delays)) == [0.1, 0.1, 0.2, 0.2], done.stderr
