"""Backend health (periodic checks eject and re-admit) and vLLM ``/metrics`` polling."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import orjson

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Backend:
    """One upstream server as the gateway sees it.

    Its in-flight count is read from the view source's load (``load``: what the routing views see,
    the one place that dispatch and release update, summed over the workers of a ``--workers``
    gateway), so the views and the metrics cannot disagree.
    """

    index: int
    url: str
    load: Callable[[], tuple[Sequence[int], Sequence[int]]] | None = field(default=None, repr=False)
    healthy: bool = True
    consecutive_failures: int = 0
    num_ejections: int = 0
    models: frozenset[str] | None = None  # served model names; None until /v1/models answered

    @property
    def in_flight(self) -> int:
        """Requests dispatched to it and not finished (0 for a backend with no view source)."""
        return 0 if self.load is None else int(self.load()[0][self.index])

    def serves(self, model: str | None) -> bool:
        """True if the backend serves ``model`` or its models are not known yet."""
        return model is None or self.models is None or model in self.models


class HealthChecker:
    """GET ``/health`` on every backend each interval; eject after N failures, re-admit on success.

    ``on_readmit(i)`` runs when an ejected backend comes back: it may have restarted with an empty
    cache, so the caller forgets what it knew of that backend's prefixes. ``on_eject(i)`` runs when
    one is ejected (by checks or by the proxy): a dead engine holds no cache to route to.
    """

    def __init__(
        self,
        backends: list[Backend],
        session: aiohttp.ClientSession,
        interval_s: float,
        timeout_s: float,
        unhealthy_after: int,
        on_readmit: Callable[[int], None],
        on_eject: Callable[[int], None] | None = None,
    ) -> None:
        self.backends = backends
        self.session = session
        self.interval_s = interval_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.unhealthy_after = unhealthy_after
        self.on_readmit = on_readmit
        self.on_eject = on_eject

    async def check(self, b: Backend) -> bool:
        try:
            async with self.session.get(f"{b.url}/health", timeout=self.timeout) as resp:
                await resp.read()
                ok = resp.status == 200
            if ok and b.models is None:
                b.models = await self.served_models(b)
            return ok
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.info("health check of %s failed: %r", b.url, exc)
            return False

    async def served_models(self, b: Backend) -> frozenset[str] | None:
        """The model ids of ``/v1/models``; None if the backend does not list them."""
        async with self.session.get(f"{b.url}/v1/models", timeout=self.timeout) as resp:
            if resp.status != 200:
                return None
            try:
                doc = orjson.loads(await resp.read())
                return frozenset(str(m["id"]) for m in doc["data"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return None

    async def check_all(self) -> None:
        results = await asyncio.gather(*(self.check(b) for b in self.backends))
        for b, ok in zip(self.backends, results, strict=True):
            self.record(b, ok)

    def record(self, b: Backend, ok: bool) -> None:
        if ok:
            b.consecutive_failures = 0
            if not b.healthy:
                b.healthy = True
                log.warning("backend %s is healthy again: re-admitted", b.url)
                self.on_readmit(b.index)
            return
        b.consecutive_failures += 1
        if b.healthy and b.consecutive_failures >= self.unhealthy_after:
            self.eject(b, f"{b.consecutive_failures} failed health checks")

    def eject(self, b: Backend, why: str) -> None:
        if b.healthy:
            b.healthy = False
            b.num_ejections += 1
            log.warning("backend %s ejected: %s", b.url, why)
            if self.on_eject is not None:
                self.on_eject(b.index)

    async def run(self) -> None:
        while True:
            await self.check_all()  # at once on start: learns the served models
            await asyncio.sleep(self.interval_s)


_METRIC_LINE = re.compile(rb"^(vllm:[a-z_]+)(?:\{[^}]*\})?\s+(\S+)", re.MULTILINE)
_WANTED = {
    b"vllm:num_requests_running": "num_running",
    b"vllm:num_requests_waiting": "num_waiting",
    b"vllm:kv_cache_usage_perc": "kv_usage",
    b"vllm:gpu_cache_usage_perc": "kv_usage",  # the name before vLLM 0.10
}


def parse_vllm_metrics(text: bytes) -> dict[str, float]:
    """Running, waiting (summed over engines/DP ranks) and KV usage (their mean) from vLLM's text."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for m in _METRIC_LINE.finditer(text):
        key = _WANTED.get(m.group(1))
        if key is None:
            continue
        try:
            value = float(m.group(2))
        except ValueError:
            continue
        sums[key] = sums.get(key, 0.0) + value
        counts[key] = counts.get(key, 0) + 1
    if "kv_usage" in sums:
        sums["kv_usage"] /= counts["kv_usage"]
    return sums


class MetricsPoller:
    """Polls each healthy backend's ``/metrics`` and hands the parsed load to ``on_load(i, load)``."""

    def __init__(
        self,
        backends: list[Backend],
        session: aiohttp.ClientSession,
        interval_s: float,
        on_load: Callable[[int, dict[str, float]], None],
    ) -> None:
        self.backends = backends
        self.session = session
        self.interval_s = interval_s
        self.on_load = on_load
        self.timeout = aiohttp.ClientTimeout(total=max(1.0, 5 * interval_s))
        self.num_failures = 0

    async def poll(self, b: Backend) -> None:
        try:
            async with self.session.get(f"{b.url}/metrics", timeout=self.timeout) as resp:
                if resp.status != 200:
                    self.num_failures += 1
                    return
                self.on_load(b.index, parse_vllm_metrics(await resp.read()))
        except (TimeoutError, aiohttp.ClientError, OSError):
            self.num_failures += 1

    async def run(self) -> None:
        while True:
            await asyncio.gather(*(self.poll(b) for b in self.backends if b.healthy))
            await asyncio.sleep(self.interval_s)
