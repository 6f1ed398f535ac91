"""Commands as a user runs them: Ctrl-C stops each within 2 s (workers included), a taken port or an
unreachable replay target is one line, a failed replay exits non-zero, ``--cache-dir none`` is off."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}
WILDSERVE = [sys.executable, "-m", "wildserve.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(d))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _default_sigint() -> None:
    """A terminal's process gets SIGINT's default; a test run started in the background (``&``)
    would hand down "ignored", and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(args: list[str], ready, cwd: Path | None = None) -> tuple[float, set[int], str]:
    """Start ``wildserve args``, wait for ``ready(proc)``, Ctrl-C its process group as a terminal
    would; returns (seconds to exit, descendants still alive, stderr)."""
    proc = subprocess.Popen([*WILDSERVE, *args], env=ENV, cwd=cwd, start_new_session=True,
                            preexec_fn=_default_sigint, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready(proc):
            assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.1)
        family = _descendants(proc.pid)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # say where it hangs
            spy = Path(sys.executable).with_name("py-spy")
            where = subprocess.run([str(spy), "dump", "-p", str(proc.pid)], capture_output=True,
                                   text=True).stdout if spy.exists() else ""  # fmt: skip
            raise AssertionError(f"still running 30 s after Ctrl-C:\n{where}") from None
        took = time.monotonic() - t0
        time.sleep(0.2)
        return took, {p for p in family if _alive(p)}, proc.stderr.read().decode()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _listening(port: int):
    def ready(_proc) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    return ready


@pytest.mark.parametrize("kind", ["engine", "gateway"])
def test_servers_stop_on_ctrl_c_within_two_seconds(kind):
    port = _free_port()
    args = ["engine", "--speed", "inf", "--num-gpu-blocks", "1024", "--port", str(port)]
    if kind == "gateway":
        args = ["gateway", "--backend", "http://127.0.0.1:9", "--port", str(port)]
    took, alive, _ = _interrupt(args, _listening(port))
    assert took < 2.0 and not alive


def test_simulate_with_workers_stops_them_on_ctrl_c(tmp_path):
    args = ["simulate", "--trace", "builtin:mooncake-conversation", "--instances", "4",
            "--policy", "round-robin,lmetric,least-requests,vllm-v1", "--jobs", "2",
            "--output-json", str(tmp_path / "out.json")]  # fmt: skip

    def workers_running(proc) -> bool:  # the manager and both simulation workers
        return len(_descendants(proc.pid)) >= 3

    took, alive, _ = _interrupt(args, workers_running)
    assert took < 2.0, took
    assert not alive  # every worker process is gone
    assert not (tmp_path / "out.json").exists()  # nothing half-written


def test_simulate_killed_by_sigterm_leaves_no_process_behind(tmp_path):
    """``kill PID`` (SIGTERM, default action) skips every ``finally``: the workers and the pool's
    manager process must still die with the command, not live on orphaned."""
    args = ["simulate", "--trace", "builtin:mooncake-conversation", "--instances", "4",
            "--policy", "round-robin,lmetric", "--jobs", "2",
            "--output-json", str(tmp_path / "out.json")]  # fmt: skip
    proc = subprocess.Popen([*WILDSERVE, *args], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    family: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(_descendants(proc.pid)) < 3:  # the manager and both workers
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        family = _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in family) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in family)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for p in family:  # whatever the failure left behind
            if _alive(p):
                os.kill(p, signal.SIGKILL)


@pytest.mark.parametrize("experiment", ["lmetric", "kunserve"])
def test_experiment_with_workers_stops_them_on_ctrl_c(tmp_path, experiment):
    """The experiment commands share the simulator's worker pool: Ctrl-C stops manager and workers
    alike and leaves no report or results file behind."""
    out = tmp_path / "run"
    args = ["experiment", "lmetric", "--workloads", "mooncake", "--max-requests", "3000",
            "--linear", "", "--no-zero-score-demo", "--jobs", "2", "--cache-dir", "none",
            "--report", str(out / "report.md"), "--output-json", str(out / "results.json")]  # fmt: skip
    if experiment == "kunserve":
        args = ["experiment", "kunserve", "--jobs", "2", "--no-cache", "--out", str(out)]

    def workers_running(proc) -> bool:  # the manager and both workers
        return len(_descendants(proc.pid)) >= 3

    took, alive, _ = _interrupt(args, workers_running, cwd=tmp_path)
    assert took < 2.0, took
    assert not alive
    assert not any(p.is_file() for p in tmp_path.rglob("*")), sorted(tmp_path.rglob("*"))


def test_replay_stops_on_ctrl_c(loop_thread):
    from tests.gateway.conftest import start_engines

    urls, _ = start_engines(loop_thread, 1, speed=0.2)  # slow: requests are in flight
    args = ["replay", "--url", urls[0], "--max-requests", "200", "--rate-scale", "20"]
    started = time.monotonic()
    took, alive, _ = _interrupt(args, lambda _p: time.monotonic() - started > 6)
    assert took < 2.0 and not alive


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*WILDSERVE, *args], env=ENV, cwd=cwd, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


@pytest.mark.parametrize("kind", ["engine", "gateway"])
def test_a_taken_port_is_one_line_and_exit_2(kind):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["engine", "--speed", "inf", "--num-gpu-blocks", "1024", "--port", str(port)]
        if kind == "gateway":
            args = ["gateway", "--backend", "http://127.0.0.1:9", "--port", str(port)]
        done = _run(args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{port} is already in use" in lines[0], done.stderr


@pytest.mark.parametrize("model", [None, "qwen2.5-7b"])
def test_replay_against_nothing_listening_is_one_line(model):
    args = ["replay", "--url", f"http://127.0.0.1:{_free_port()}", "--max-requests", "3"]
    done = _run(args + (["--model", model] if model else []))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach" in lines[0], done.stderr


def test_replay_whose_requests_fail_exits_non_zero(loop_thread):
    from tests.gateway.conftest import start_gateway

    # a gateway with no live backend answers every request 503
    url, _ = start_gateway(loop_thread, ["http://127.0.0.1:9"], health_interval_s=0.05,
                           health_timeout_s=0.2, unhealthy_after=1)  # fmt: skip
    time.sleep(0.5)
    done = _run(["replay", "--url", url, "--model", "m", "--max-requests", "3"])
    assert done.returncode == 1
    assert "3 requests failed" in done.stdout, done.stdout


def test_cache_dir_none_means_no_cache():
    from wildserve.experiments.runcache import cache_dir_option

    assert cache_dir_option(Path("none")) is None and cache_dir_option("OFF") is None
    assert cache_dir_option(None) is None and cache_dir_option("") is None
    assert cache_dir_option("runs/x") == Path("runs/x")
