"""Soak: thousands of mixed requests through a gateway process; every answer is checked, abandoned
requests are released, and the gateway's sockets and memory return to where they started."""

from __future__ import annotations

import asyncio
import os
import random
import re
import urllib.request
from pathlib import Path

import aiohttp
import orjson
import pytest

MODEL = "qwen2.5-7b"


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


def _metric_sum(url: str, name: str, label: str = "") -> float:
    """Sum of every sample of ``name`` (whose labels contain ``label``) on ``url``/metrics."""
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)$", re.MULTILINE)
    return sum(float(m.group(2)) for m in pattern.finditer(text) if label in (m.group(1) or ""))


def _tokens_in_stream(raw: bytes) -> tuple[int, bool]:
    """(token chunks, ended with [DONE]) of an SSE body."""
    tokens, done = 0, False
    for line in raw.split(b"\n"):
        if not line.startswith(b"data: "):
            continue
        data = line[6:].strip()
        if data == b"[DONE]":
            done = True
            continue
        obj = orjson.loads(data)
        assert "error" not in obj, obj
        tokens += sum(1 for c in obj.get("choices", ()) if c.get("text") or c.get("delta"))
    return tokens, done


async def _load(url: str, n: int, concurrency: int, seed: int) -> tuple[int, int, list[str]]:
    """``n`` requests, a mix of streamed, plain, chat and abandoned; returns (checked answers,
    abandoned requests, problems)."""
    rng = random.Random(seed)
    sem = asyncio.Semaphore(concurrency)
    ok, abandoned, problems = 0, 0, []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def one(i: int) -> None:
            nonlocal ok, abandoned
            kind = rng.random()
            max_tokens = rng.randint(1, 8)
            prompt = f"session {rng.randrange(50)} " * 20 + f"turn {i}"
            body: dict = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens}
            path = "/v1/completions"
            if kind < 0.25:
                body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}],
                        "max_tokens": max_tokens}  # fmt: skip
                path = "/v1/chat/completions"
            stream = 0.25 <= kind < 0.7 or kind > 0.95
            body["stream"] = stream
            async with sem, s.post(url + path, json=body) as r:
                if kind > 0.95:  # the client walks away after the first bytes
                    await r.content.readany()
                    r.close()
                    abandoned += 1
                    return
                raw = await r.read()
                if r.status != 200:
                    problems.append(f"{r.status}: {raw[:100]!r}")
                    return
                if stream:
                    tokens, done = _tokens_in_stream(raw)
                else:
                    tokens, done = orjson.loads(raw)["usage"]["completion_tokens"], True
                if tokens != max_tokens or not done:
                    problems.append(f"{path} stream={stream}: {tokens}/{max_tokens} tokens")
                    return
                ok += 1

        await asyncio.gather(*(one(i) for i in range(n)))
    return ok, abandoned, problems


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
    idle = 3.0  # idle backend connections close after 1 s
    asyncio.run(asyncio.sleep(idle))  # health checks have opened (and closed) their connections
    sock_start = _sockets(pid)
    asyncio.run(_load(url, 400, concurrency, seed=1))  # warm-up: pools, caches, lazy imports
    asyncio.run(asyncio.sleep(idle))
    rss0, sock0 = _rss_kib(pid), _sockets(pid)
    sent0 = _metric_sum(url, "wildserve_gateway_requests_total")
    ok, abandoned, problems = asyncio.run(_load(url, n, concurrency, seed=2))
    asyncio.run(asyncio.sleep(idle))
    rss1, sock1 = _rss_kib(pid), _sockets(pid)
    print(f"soak {n}: rss {rss0} -> {rss1} KiB, sockets {sock_start} / {sock0} -> {sock1}, "
          f"{ok} checked, {abandoned} abandoned")  # fmt: skip
    assert not problems, problems[:5]
    assert ok + abandoned == n and abandoned > 0
    # each request was dispatched exactly once (no retries, nothing answered by the gateway)
    assert _metric_sum(url, "wildserve_gateway_requests_total") - sent0 == n
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    assert _metric_sum(url, "wildserve_gateway_rejected_total") == 0, [
        x for x in text.splitlines() if "rejected" in x
    ]
    assert _metric_sum(url, "wildserve_gateway_in_flight") == 0  # abandoned ones released too
    for e in engines:  # and the engines aborted what the clients left
        assert _metric_sum(e.url, "vllm:num_requests_running") == 0
        assert _metric_sum(e.url, "vllm:num_requests_waiting") == 0
    assert sock0 == sock_start
    assert sock1 <= sock0 * 1.05 + 1, (sock0, sock1)
    assert rss1 <= rss0 * 1.05, (rss0, rss1)


def test_soak_small(processes):
    _soak(processes, 1000)


@pytest.mark.slow
def test_soak_5000(processes):
    _soak(processes, 5000)
