"""Where layers live: stage boundaries of a pipeline group, per-layer GPU memory, links between instances.

A group of g instances keeps one copy of the model between them: member r holds layers
[r·L/g, (r+1)·L/g) (integer boundaries) and drops the rest. The embedding and LM head stay on every
member (they are small next to the layers), so any member can run as any stage and a restore only
reloads layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from wildserve.engine import Engine
from wildserve.engine.cluster import ClusterConfig, build_engines
from wildserve.engine.memory import GpuMemory
from wildserve.errors import ConfigError
from wildserve.perf import StepCostModel, get_model


def stage_bounds(num_layers: int, degree: int) -> list[tuple[int, int]]:
    """Layer ranges [lo, hi) of the ``degree`` stages of a pipeline over ``num_layers`` layers."""
    if not 1 <= degree <= num_layers:
        raise ConfigError(f"pipeline degree {degree} must be in 1..{num_layers}")
    return [(r * num_layers // degree, (r + 1) * num_layers // degree) for r in range(degree)]


def staged_memory(mem: GpuMemory, lo: int, hi: int, kv_layers: int | None = None) -> GpuMemory:
    """A copy of ``mem`` holding layers [lo, hi) (see ``GpuMemory.hold_layers``)."""
    out = dataclasses.replace(mem)
    out.hold_layers(lo, hi, kv_layers)
    return out


def group_blocks(memories: Sequence[GpuMemory]) -> int:
    """KV blocks of a pipeline group: a group block holds block_size tokens on every stage."""
    return min(m.num_blocks() for m in memories)


def pipeline_blocks(memories: Sequence[GpuMemory], num_layers: int) -> int:
    """KV blocks these GPUs would have as a pipeline, stage r on memories[r]."""
    bounds = stage_bounds(num_layers, len(memories))
    return group_blocks(
        [staged_memory(m, lo, hi) for m, (lo, hi) in zip(memories, bounds, strict=True)]
    )


@dataclass(frozen=True)
class Links:
    """Per-GPU bandwidth between instances: NVLink inside a node, a NIC between nodes."""

    instances_per_node: int = 8  # instances sharing one NVLink domain
    inter_node_bw: float = 25e9  # bytes/s per GPU between nodes (a 200 Gb/s NIC per GPU)

    def bandwidth(self, members: Sequence[int]) -> float | None:
        """Bandwidth for traffic among ``members``; None means the cost model's NVLink rate."""
        nodes = {m // self.instances_per_node for m in members}
        return None if len(nodes) == 1 else self.inter_node_bw


@dataclass
class LayeredCluster:
    """Engines whose GPU memory tracks weights per layer, their shared cost model and links."""

    config: ClusterConfig
    engines: list[Engine]
    cost_model: StepCostModel
    num_layers: int
    links: Links = field(default_factory=Links)


def build_layered_cluster(cfg: ClusterConfig, links: Links | None = None) -> LayeredCluster:
    """``build_engines`` with per-layer memory accounting, so layers can be dropped and reloaded."""
    model = get_model(cfg.model)
    engines = build_engines(cfg)
    layer_params = model.param_bytes_per_gpu(cfg.tp, 1)
    for e in engines:
        m = e.memory
        assert m is not None
        e.memory = m.with_layers(model.num_layers, layer_params)
    if links is None:
        links = Links(instances_per_node=max(1, 8 // cfg.tp))
    return LayeredCluster(cfg, engines, engines[0].cost_model, model.num_layers, links)
