"""Build a cluster of engines from names (model, GPU, cost model).

The simulator (``sim.run``), the overload controllers and the emulated HTTP server all build their
engines here, so a cluster means the same thing on the virtual and the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wildserve.engine.config import EngineConfig
from wildserve.engine.engine import Engine
from wildserve.engine.memory import GpuMemory
from wildserve.perf import MemoryConfig, build_cost_model, get_gpu, get_model, kv_capacity
from wildserve.perf.cost import CostModelSpec


@dataclass
class ClusterConfig(CostModelSpec):
    """A homogeneous cluster: every instance runs the same model (``CostModelSpec``: model, GPU,
    tensor parallelism, step-time model) on the same GPUs."""

    num_instances: int = field(default=16, metadata={"help": "serving instances", "ge": 1})
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
