"""Real servers on 127.0.0.1 for the gateway tests: in a background event loop, or as processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("zmq")

from wildserve.engine import EngineConfig
from wildserve.gateway.config import EngineServerConfig, GatewayConfig
from wildserve.gateway.engine_server import make_engine_app
from wildserve.gateway.proxy import GATEWAY, make_gateway_app
from wildserve.gateway.serve import start_app
from wildserve.gateway.vllm_cpu import wait_healthy

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopThread:
    """An asyncio loop in a thread, so synchronous clients (the openai package) can call servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list = []

    def run(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def serve(self, app) -> int:
        runner, port = self.run(start_app(app, "127.0.0.1", 0))
        self.runners.append(runner)
        return port

    def close(self) -> None:
        for runner in reversed(self.runners):
            self.run(runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop_thread():
    lt = LoopThread()
    yield lt
    lt.close()


def engine_cfg(speed: float = 20.0, kv_port: int | None = None, **engine) -> EngineServerConfig:
    """A small emulated instance (few KV blocks keep tests quick); ``speed`` x the modeled clock."""
    engine.setdefault("num_gpu_blocks", 4096)
    return EngineServerConfig(
        speed=speed,
        kv_events_endpoint=None if kv_port is None else f"tcp://127.0.0.1:{kv_port}",
        engine=EngineConfig(max_fast_forward_steps=0, **engine),
    )


def start_engines(lt: LoopThread, n: int, speed: float = 20.0, kv: bool = False):
    """``n`` emulated engines; returns their URLs and (if ``kv``) KV-event endpoints."""
    urls, endpoints = [], []
    for _ in range(n):
        kv_port = free_port() if kv else None
        port = lt.serve(make_engine_app(engine_cfg(speed, kv_port)))
        urls.append(f"http://127.0.0.1:{port}")
        if kv_port is not None:
            endpoints.append(f"tcp://127.0.0.1:{kv_port}")
    return urls, endpoints


def start_gateway(lt: LoopThread, urls, **options):
    """A gateway app in the loop thread; returns (base URL, the Gateway object)."""
    app = make_gateway_app(GatewayConfig(backends=list(urls), **options))
    port = lt.serve(app)
    return f"http://127.0.0.1:{port}", app[GATEWAY]


def eventually(cond, timeout: float = 5.0) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class ServerProcess:
    """``python -m wildserve.cli ...`` as a child process that a test may kill."""

    def __init__(self, args: list[str], port: int) -> None:
        self.args = args
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wildserve.cli", *self.args, "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_healthy(self.url, self.proc, 30.0)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def processes():
    procs: list[ServerProcess] = []

    def spawn(args: list[str], port: int | None = None) -> ServerProcess:
        p = ServerProcess(args, port or free_port()).start()
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        p.stop()
