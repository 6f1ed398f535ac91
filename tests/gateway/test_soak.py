"""Soak: after thousands of requests the gateway's open sockets and memory return to their start."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import aiohttp
import pytest


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _sockets(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


async def _load(url: str, n: int, concurrency: int, seed: int) -> int:
    """``n`` requests, a mix of streamed, plain, chat and aborted; returns how many succeeded."""
    rng = random.Random(seed)
    sem = asyncio.Semaphore(concurrency)
    ok = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def one(i: int) -> None:
            nonlocal ok
            kind = rng.random()
            prompt = f"session {rng.randrange(50)} " * 20 + f"turn {i}"
            body = {"model": "m", "prompt": prompt, "max_tokens": rng.randint(1, 8)}
            path = "/v1/completions"
            if kind < 0.25:
                body = {
                    "model": "m",
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 3,
                }
                path = "/v1/chat/completions"
            elif kind < 0.7:
                body["stream"] = True
            async with sem, s.post(url + path, json=body) as r:
                if kind > 0.95:  # the client walks away mid-answer
                    await r.content.readany()
                    r.close()
                    ok += 1
                    return
                await r.read()
                ok += r.status == 200

        await asyncio.gather(*(one(i) for i in range(n)))
    return ok


def _soak(processes, n: int) -> None:
    engines = [
        processes(["engine", "--speed", "inf", "--num-gpu-blocks", "20000"]) for _ in range(2)
    ]
    args = ["gateway", "--health-interval", "0.5", "--upstream-keepalive", "1"]
    for e in engines:
        args += ["--backend", e.url]
    gw = processes(args)
    pid = gw.proc.pid
    url = gw.url
    concurrency = 16
    idle = 3.0  # idle backend connections close after 1 s; aiohttp sweeps them on its timer
    asyncio.run(asyncio.sleep(idle))  # health checks have opened their connections
    sock_start = _sockets(pid)
    asyncio.run(_load(url, 400, concurrency, seed=1))  # warm-up: pools, caches, lazy imports
    asyncio.run(asyncio.sleep(idle))
    rss0, sock0 = _rss_kib(pid), _sockets(pid)
    ok = asyncio.run(_load(url, n, concurrency, seed=2))
    asyncio.run(asyncio.sleep(idle))
    rss1, sock1 = _rss_kib(pid), _sockets(pid)
    assert sock0 == sock_start
    print(f"soak {n}: rss {rss0} -> {rss1} KiB, sockets {sock_start} / {sock0} -> {sock1}")
    assert ok == n
    assert sock1 <= sock0 * 1.05 + 1, (sock0, sock1)
    assert rss1 <= rss0 * 1.05, (rss0, rss1)


def test_soak_small(processes):
    _soak(processes, 1000)


@pytest.mark.slow
def test_soak_5000(processes):
    _soak(processes, 5000)
