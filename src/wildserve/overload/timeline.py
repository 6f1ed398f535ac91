"""Cluster state sampled on a fixed period: queue length, KV usage and demand, layers dropped.

Every system of the overload experiment runs under a controller derived from ``SampledController``,
so their timelines come from the same sampler and their router sees serving units by the same rule
(``dispatch.py``). Engines apply a fast-forwarded decode run when it starts, so a sample taken inside
a run sees the run's end state (runs never cross an arrival).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from wildserve.engine import Engine
from wildserve.overload.dispatch import unit_views
from wildserve.routing.view import InstanceView
from wildserve.sim.events import Call, Event
from wildserve.sim.simulator import ClusterController, Simulator


@dataclass
class Timeline:
    """Samples in time order; each list has one entry per sample."""

    time_s: list[float] = field(default_factory=list)
    num_waiting: list[int] = field(default_factory=list)  # queued requests, whole cluster
    num_running: list[int] = field(default_factory=list)
    kv_usage: list[float] = field(default_factory=list)  # used / total KV tokens over live pools
    kv_demand_blocks: list[int] = field(default_factory=list)  # used + blocks the queues need
    kv_blocks: list[int] = field(default_factory=list)  # KV blocks of the live pools
    layers_dropped: list[int] = field(default_factory=list)  # summed over GPUs (instances x tp)
    extra: dict[str, list[float]] = field(default_factory=dict)  # system-specific series

    def as_dict(self) -> dict:
        out = {
            "time_s": self.time_s,
            "num_waiting": self.num_waiting,
            "num_running": self.num_running,
            "kv_usage": self.kv_usage,
            "kv_demand_blocks": self.kv_demand_blocks,
            "kv_blocks": self.kv_blocks,
            "layers_dropped": self.layers_dropped,
        }
        out.update(self.extra)
        return out


class SampledController(ClusterController):
    """A controller that samples the cluster every ``period_s`` while anything is left to do."""

    def __init__(self, engines: Sequence[Engine], period_s: float = 0.5) -> None:
        self.engines = list(engines)
        self.period_s = period_s
        self.timeline = Timeline()

    # ---- what subclasses override -----------------------------------------------------------
    def live_engines(self) -> Iterable[Engine]:
        """Engines whose KV pool serves requests now (a pipeline group counts once)."""
        return self.engines

    def layers_dropped(self) -> int:
        return 0

    def units(self) -> Sequence[Sequence[int]]:
        """Instances serving as one unit, leader first (only units of more than one instance)."""
        return ()

    def route_views(
        self, views: list[InstanceView]
    ) -> tuple[Sequence[InstanceView], Sequence[int] | None]:
        units = self.units()
        return (unit_views(views, units) if units else views), self.targets()

    def extra_sample(self) -> dict[str, float]:
        return {}

    def busy_elsewhere(self) -> bool:
        """Work the controller itself still has in flight (a migration, a reload)."""
        return False

    def on_sample(self, sim: Simulator, now: float) -> list[tuple[float, Event]]:
        """Periodic work of the controller, run right after each sample."""
        return []

    def summary(self) -> dict:
        """What the controller did, for the report (JSON-ready)."""
        return {}

    # ---- sampling ---------------------------------------------------------------------------
    def start(self, sim: Simulator) -> Iterable[tuple[float, Event]]:
        t0 = sim.requests[0].arrival_s if sim.requests else 0.0
        return [(t0, Call(self._sample))]

    def _sample(self, sim: Simulator, now: float) -> list[tuple[float, Event]]:
        tl = self.timeline
        waiting = running = used = total = demand = 0
        for e in self.live_engines():
            waiting += e.num_waiting
            running += e.num_running
            used += e.num_used_blocks
            total += e.num_kv_blocks
            demand += e.queued_kv_demand()
        tl.time_s.append(now)
        tl.num_waiting.append(waiting)
        tl.num_running.append(running)
        tl.kv_usage.append(used / total if total else 0.0)
        tl.kv_demand_blocks.append(used + demand)
        tl.kv_blocks.append(total)
        tl.layers_dropped.append(self.layers_dropped())
        for k, v in self.extra_sample().items():
            tl.extra.setdefault(k, []).append(v)
        follow = self.on_sample(sim, now)
        more = (
            sim.next_arrival_s < np.inf
            or any(e.has_work for e in self.engines)
            or self.busy_elsewhere()
        )
        if more:
            follow.append((now + self.period_s, Call(self._sample)))
        return follow
