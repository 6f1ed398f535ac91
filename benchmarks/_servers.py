"""Processes for the gateway benchmarks: emulated engines and routers on 127.0.0.1, and their CPU.

Shared by ``gateway_vs_sglang_router.py``, ``gateway_throughput.py`` and ``gateway_engine_tap.py``
(run as scripts, so this directory is on ``sys.path``).

No child outlives its benchmark: every one is started ``dies_with_us`` (SIGTERM when the benchmark
exits, however it exits: ``PR_SET_PDEATHSIG``), and ``exit_on_sigterm`` turns a SIGTERM into an exit
that runs the benchmark's ``finally: stop(...)``, as Ctrl-C does.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from wildserve.process_pool import die_with_parent

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CLK = os.sysconf("SC_CLK_TCK")
MODEL = "qwen2.5-7b"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def _die_with(parent_pid: int) -> None:
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent_pid:  # the benchmark went before the prctl
        os._exit(1)


def dies_with_us() -> Callable[[], None]:
    """A ``preexec_fn`` for a child that must not outlive this process. (The signal comes when the
    thread that started the child ends: every benchmark starts its children from the main thread.)"""
    return functools.partial(_die_with, os.getpid())


def exit_on_sigterm() -> None:
    """SIGTERM exits through the ``finally`` blocks (``SystemExit``, status 143) instead of at once."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def spawn(args: list[str], health: str | None = None) -> subprocess.Popen:
    """Start ``args`` quietly (the repo's ``src`` first on the path); wait for ``health`` if given."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=dies_with_us())  # fmt: skip
    if health is not None:
        wait_http(health)
    return proc


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def _proc_table() -> tuple[dict[int, list[int]], dict[int, float]]:
    """(parent -> children, pid -> user + system CPU seconds) of every process, from /proc."""
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            text = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2 :].split()
        children.setdefault(int(rest[1]), []).append(int(d))
        stats[int(d)] = (int(rest[11]) + int(rest[12])) / CLK
    return children, stats


def descendants(pid: int) -> list[int]:
    children, _ = _proc_table()
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants (all threads included), from /proc."""
    children, stats = _proc_table()
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total


def start_engines(
    n: int, speed: str, kv_events: bool = True, extra: list[str] | None = None
) -> tuple[list[subprocess.Popen], list[str], list[str]]:
    """``n`` emulated engines (started together); returns processes, URLs, KV-event endpoints."""
    procs, urls, endpoints = [], [], []
    for _ in range(n):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = [PY, "-m", "wildserve.cli", "engine", "--model", MODEL, "--gpu", "h20",
                "--speed", speed, "--port", str(port), *(extra or [])]  # fmt: skip
        if kv_events:
            kv_port = free_port()
            args += ["--kv-events-port", str(kv_port)]
            endpoints.append(f"tcp://127.0.0.1:{kv_port}")
        procs.append(spawn(args))
        urls.append(url)
    for url in urls:
        wait_http(f"{url}/health")
    return procs, urls, endpoints


def start_router(
    kind: str, urls: list[str], endpoints: list[str], extra: list[str] | None = None
) -> tuple[subprocess.Popen, str]:
    """``sglang-router`` (cache_aware) or this gateway with policy ``kind`` (``+kv-events``: fed
    by the engines' KV events; ``@Nw``: ``--workers N`` gateway processes sharing their load)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if kind == "sglang-router":
        args = [PY, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
                "--policy", "cache_aware", "--log-level", "warn", "--worker-urls", *urls]  # fmt: skip
    else:
        base, _, workers = kind.partition("@")
        policy = base.removesuffix("+kv-events")
        args = [PY, "-m", "wildserve.cli", "gateway", "--policy", policy, "--port", str(port)]
        if workers:
            args += ["--workers", str(int(workers.removesuffix("w")))]
        for i, u in enumerate(urls):
            args += ["--backend", u]
            if base.endswith("+kv-events"):
                args += ["--kv-events", endpoints[i]]
    proc = spawn([*args, *(extra or [])], f"{url}/health")
    time.sleep(1.0)  # sglang-router activates workers just after it answers /health
    return proc, url
