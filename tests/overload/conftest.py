from __future__ import annotations

import numpy as np

from wildserve.engine import EngineConfig
from wildserve.engine.cluster import ClusterConfig
from wildserve.workload.request import Request


def burst_workload(
    seed: int,
    n: int = 900,
    base_rate: float = 2.0,
    burst_rate: float = 30.0,
    window: tuple[float, float] = (20.0, 35.0),
) -> list[Request]:
    """Poisson arrivals at ``base_rate``, at ``burst_rate`` inside ``window``; chat-like lengths."""
    rng = np.random.default_rng(seed)
    t, out = 0.0, []
    for i in range(n):
        t += rng.exponential(1 / (burst_rate if window[0] <= t < window[1] else base_rate))
        out.append(Request(i, t, int(rng.integers(300, 3000)), int(rng.integers(20, 600))))
    return out


def small_cluster(num_instances: int = 4, util: float = 0.5, **engine) -> ClusterConfig:
    """Qwen2.5-14B on H100s with half the memory usable: about 53k KV tokens per instance."""
    return ClusterConfig(
        model="qwen2.5-14b",
        gpu="h100",
        num_instances=num_instances,
        engine=EngineConfig(**{"gpu_memory_utilization": util, "watermark": 0.01, **engine}),
    )
