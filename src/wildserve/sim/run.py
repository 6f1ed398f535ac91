"""Run one routing policy over a workload on a fresh simulated cluster."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from wildserve.engine import Engine
from wildserve.engine.cluster import ClusterConfig, build_engines
from wildserve.errors import ConfigError
from wildserve.routing.local import RouterLocalViews
from wildserve.routing.policy import RoutingPolicy, make_policy
from wildserve.routing.view import ViewSource
from wildserve.sim.simulator import ExactViews, SimResult, Simulator
from wildserve.workload.request import Request

VIEW_SOURCES = ("exact", "router-local")


def make_view_source(name: str, engines: list[Engine]) -> ViewSource:
    """``exact``: the engines' own caches and queues; ``router-local``: the router's bookkeeping."""
    if name == "exact":
        return ExactViews(engines)
    if name == "router-local":
        return RouterLocalViews(
            len(engines), engines[0].config.block_size, capacity_blocks=engines[0].num_kv_blocks
        )
    raise ConfigError(f"unknown view source '{name}'; choose one of: {', '.join(VIEW_SOURCES)}")


def run_policy(
    requests: Sequence[Request],
    cfg: ClusterConfig,
    policy: str | RoutingPolicy,
    progress: Callable[[int, int], None] | None = None,
    view_source: str = "exact",
) -> SimResult:
    """Simulate ``requests`` on a fresh cluster under a routing policy (a name or an object)."""
    engines = build_engines(cfg)
    policy_obj = make_policy(policy) if isinstance(policy, str) else policy
    views = make_view_source(view_source, engines)
    sim = Simulator(engines, policy_obj, views=views, progress=progress)
    result = sim.run(requests)
    result.extra["policy"] = policy_obj.name
    result.extra["view_source"] = view_source
    stats = policy_obj.stats()
    if stats:  # policies that keep no counters leave the summary's field empty (None)
        result.extra["policy_stats"] = stats
    return result
