"""The systems of the overload comparison, each a small recipe over the same engines and simulator.

``vllm``: vLLM v1 engines (recompute preemption of the newest request; new requests wait behind a
free-block watermark). ``infercept``: the same engines whose preemption chooses discard, preserve or
swap per request (``infercept.py``). ``llumnix``: freeness dispatch plus live migration
(``migration.py``). ``kunserve``: drop layers into pipelines under overload (``kunserve.py``), with the
running requests' KV exchanged; ``kunserve-recompute`` recomputes it instead. All but Llumnix route
with the same policy (``least-requests`` unless told otherwise).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from wildserve.engine.cluster import ClusterConfig
from wildserve.metrics import RequestMetrics, summarize, time_between_tokens
from wildserve.overload.infercept import InferCeptController
from wildserve.overload.kunserve import KunServeConfig, KunServeController
from wildserve.overload.layout import LayeredCluster, build_layered_cluster
from wildserve.overload.migration import LlumnixController
from wildserve.overload.timeline import SampledController, Timeline
from wildserve.registry import Registry
from wildserve.routing.policy import make_policy
from wildserve.sim.simulator import SimResult, Simulator
from wildserve.workload.request import Request

PERCENTILES = (50, 90, 99, 99.9)


class OverloadSystem(ABC):
    """How one system is set up on a fresh cluster: its controller and its router."""

    name: ClassVar[str]
    router: ClassVar[str | None] = None  # None: the experiment's default router

    @abstractmethod
    def controller(self, cluster: LayeredCluster, period_s: float) -> SampledController: ...


SYSTEMS: Registry[type[OverloadSystem]] = Registry("overload system")


@SYSTEMS.register("vllm")
class Vllm(OverloadSystem):
    def controller(self, cluster: LayeredCluster, period_s: float) -> SampledController:
        return SampledController(cluster.engines, period_s)


@SYSTEMS.register("infercept")
class InferCept(OverloadSystem):
    def controller(self, cluster: LayeredCluster, period_s: float) -> SampledController:
        return InferCeptController(cluster.engines, None, period_s)


@SYSTEMS.register("llumnix")
class Llumnix(OverloadSystem):
    router = "llumnix"

    def controller(self, cluster: LayeredCluster, period_s: float) -> SampledController:
        return LlumnixController(cluster.engines, cluster.cost_model, cluster.links, None, period_s)


@SYSTEMS.register("kunserve")
class KunServe(OverloadSystem):
    config = KunServeConfig()

    def controller(self, cluster: LayeredCluster, period_s: float) -> SampledController:
        return KunServeController(cluster, self.config, period_s)


@SYSTEMS.register("kunserve-recompute")
class KunServeRecompute(KunServe):
    config = KunServeConfig(kv_mode="recompute")


@SYSTEMS.register("kunserve-deg4")
class KunServeDegree4(KunServe):
    """Diagnostic: every group has 4 stages."""

    config = KunServeConfig(degrees=(4,))


@SYSTEMS.register("kunserve-deg8")
class KunServeDegree8(KunServe):
    """Diagnostic: every group has 8 stages."""

    config = KunServeConfig(degrees=(8,))


@dataclass
class SystemRun:
    """One system's run: the simulation, the controller's timeline and summary, latency metrics."""

    system: str
    result: SimResult
    timeline: Timeline
    summary: dict
    metrics: RequestMetrics
    tbt: np.ndarray  # time between consecutive tokens, pooled over requests
    arrival: np.ndarray = field(default_factory=lambda: np.zeros(0))  # of the finished requests

    def latency_summary(self, percentiles: Sequence[float] = PERCENTILES) -> dict:
        m = self.metrics
        return {
            "ttft": summarize(m.ttft, percentiles),
            "queueing": summarize(m.queueing, percentiles),
            "tbt": summarize(self.tbt, percentiles),
            "finished": m.num_finished,
            "aborted": m.num_aborted,
            "preemptions": int(sum(r.num_preemptions for r in self.result.requests)),
            **self.summary,
        }


def run_system(
    system: str,
    requests: Sequence[Request],
    cluster_cfg: ClusterConfig,
    router: str = "least-requests",
    period_s: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> SystemRun:
    """Simulate ``requests`` under ``system`` on a fresh cluster built from ``cluster_cfg``."""
    recipe = SYSTEMS.get(system)()
    cluster = build_layered_cluster(cluster_cfg)
    ctl = recipe.controller(cluster, period_s)
    sim = Simulator(
        cluster.engines, make_policy(recipe.router or router), controller=ctl, progress=progress
    )
    res = sim.run(requests)
    engines = cluster.engines
    done = [r for r in res.requests if r.finish_s >= 0 and r.first_token_s >= 0]
    tbt = time_between_tokens(r.token_times(engines[r.engine_id].step_end_s) for r in done)
    return SystemRun(
        system,
        res,
        ctl.timeline,
        ctl.summary(),
        res.metrics(),
        tbt,
        np.fromiter((r.arrival_s for r in done), float, len(done)),
    )
