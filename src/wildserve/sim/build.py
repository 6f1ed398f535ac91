"""Build a cluster of engines from names (model, GPU, cost model) and run one policy over a workload."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from wildserve.engine import Engine, EngineConfig
from wildserve.engine.memory import GpuMemory
from wildserve.perf import AnalyticCostModel, MemoryConfig, get_gpu, get_model, kv_capacity
from wildserve.routing.policy import make_policy
from wildserve.sim.simulator import SimResult, Simulator
from wildserve.workload.request import Request


@dataclass
class ClusterConfig:
    """A homogeneous cluster: every instance runs the same model on the same GPUs."""

    model: str = field(
        default="qwen2.5-7b", metadata={"help": "model name (see `wildserve perf models`)"}
    )
    gpu: str = field(default="h20", metadata={"help": "GPU name: h100, h200, h20, a100, a800"})
    tp: int = field(default=1, metadata={"help": "tensor-parallel GPUs per instance"})
    num_instances: int = field(default=16, metadata={"help": "serving instances"})
    engine: EngineConfig = field(default_factory=EngineConfig)


def build_engines(cfg: ClusterConfig) -> list[Engine]:
    """Engines sized from GPU memory; they share one (stateless) cost model."""
    model = get_model(cfg.model)
    gpu = get_gpu(cfg.gpu)
    cost = AnalyticCostModel(model, gpu, cfg.tp)
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


def run_policy(
    requests: Sequence[Request],
    cfg: ClusterConfig,
    policy: str,
    progress: Callable[[int, int], None] | None = None,
    **policy_kwargs: object,
) -> SimResult:
    """Simulate ``requests`` on a fresh cluster under the named routing policy."""
    engines = build_engines(cfg)
    sim = Simulator(engines, make_policy(policy, **policy_kwargs), progress=progress)
    result = sim.run(requests)
    result.extra["policy"] = policy
    return result
