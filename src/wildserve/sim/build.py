"""Build a cluster of engines from names (model, GPU, cost model) and run one policy over a workload."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from wildserve.engine import Engine, EngineConfig
from wildserve.engine.memory import GpuMemory
from wildserve.errors import ConfigError
from wildserve.perf import MemoryConfig, build_cost_model, get_gpu, get_model, kv_capacity
from wildserve.routing.local import RouterLocalViews
from wildserve.routing.policy import RoutingPolicy, make_policy
from wildserve.sim.simulator import ExactViews, SimResult, Simulator, ViewSource
from wildserve.workload.request import Request


@dataclass
class ClusterConfig:
    """A homogeneous cluster: every instance runs the same model on the same GPUs."""

    model: str = field(
        default="qwen2.5-7b", metadata={"help": "model name (see `wildserve perf models`)"}
    )
    gpu: str = field(default="h20", metadata={"help": "GPU name: h100, h200, h20, a100, a800"})
    tp: int = field(default=1, metadata={"help": "tensor-parallel GPUs per instance", "ge": 1})
    num_instances: int = field(default=16, metadata={"help": "serving instances", "ge": 1})
    cost_model: str = field(
        default="analytic",
        metadata={"help": "step-time model: analytic, or table (Vidur profiles)"},
    )
    engine: EngineConfig = field(default_factory=EngineConfig)


def build_engines(cfg: ClusterConfig) -> list[Engine]:
    """Engines sized from GPU memory; they share one (stateless) cost model."""
    model = get_model(cfg.model)
    gpu = get_gpu(cfg.gpu)
    cost = build_cost_model(cfg.cost_model, model, gpu, cfg.tp)
    ec = cfg.engine
    cap = kv_capacity(
        model,
        gpu,
        cfg.tp,
        MemoryConfig(ec.gpu_memory_utilization, ec.max_num_batched_tokens, ec.max_num_seqs),
    )
    return [
        Engine(ec, cost, instance_id=i, memory=GpuMemory.from_capacity(cap, ec.block_size))
        for i in range(cfg.num_instances)
    ]


VIEW_SOURCES = ("exact", "router-local")


def make_view_source(name: str, engines: list[Engine]) -> ViewSource:
    """``exact``: the engines' own caches and queues; ``router-local``: the router's bookkeeping."""
    if name == "exact":
        return ExactViews(engines)
    if name == "router-local":
        return RouterLocalViews(
            len(engines), engines[0].config.block_size, capacity_blocks=engines[0].pool.num_blocks
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
    stats = getattr(policy_obj, "stats", None)
    if stats is not None:
        result.extra["policy_stats"] = stats()
    return result
