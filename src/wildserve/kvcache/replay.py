"""The offline replay (cache simulator): a block stream on a pool of ``capacity`` blocks, no timing.

One request at a time is matched, allocated and released exactly as ``engine.BlockPool`` does it
(see ``_core.replay``), with the eviction policy's own jitted hooks. It answers "what hit ratio does
policy X reach with C blocks" for capacity sweeps, millions of block accesses per second.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wildserve.errors import ConfigError
from wildserve.kvcache._core import NO_HINTS, AccessHints
from wildserve.kvcache.policy import ArrayPolicy, EvictionPolicy, make_eviction_policy
from wildserve.kvcache.stream import BlockStream


@dataclass
class ReplayResult:
    """Hits of one policy at one capacity; ratios count full-block accesses."""

    policy: str
    capacity: int
    hits: np.ndarray  # int32 per request: blocks of its prefix found cached
    num_accesses: int
    max_cached: int
    violations: int  # evictions of a block in use (must be 0)
    wall_s: float
    cpu_s: float = 0.0  # process CPU time of the replay kernel (wall time is shared-machine noise)
    victims: np.ndarray | None = None  # block (slot) ids evicted, in order, when logged

    @property
    def hit_blocks(self) -> int:
        return int(self.hits.sum(dtype=np.int64))

    @property
    def hit_ratio(self) -> float:
        return self.hit_blocks / self.num_accesses if self.num_accesses else 0.0

    @property
    def accesses_per_s(self) -> float:
        return self.num_accesses / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def accesses_per_cpu_s(self) -> float:
        return self.num_accesses / self.cpu_s if self.cpu_s > 0 else float("inf")


def ideal_hits(stream: BlockStream) -> int:
    """Hits of an infinite cache: every access of a block seen before."""
    return stream.num_accesses - stream.num_blocks


def replay(
    stream: BlockStream,
    policy: str | EvictionPolicy,
    capacity: int,
    log_victims: bool = False,
    history: bool = True,
    **policy_kwargs: object,
) -> ReplayResult:
    """Replay ``stream`` on ``capacity`` blocks under ``policy`` (a spec like ``wa:leaf`` or an object).

    A policy object is used as is (fresh, or it carries state over); its state arrays are updated in
    place, so after the call it holds the final cache state. ``history=False`` withholds the access
    history from policies that learn from it (WA then sees only its own hits).
    """
    if capacity < 1:
        raise ConfigError(f"cache capacity must be >= 1 block, got {capacity}")
    pol = make_eviction_policy(policy, **policy_kwargs) if isinstance(policy, str) else policy
    if not isinstance(pol, ArrayPolicy):
        raise ConfigError(f"policy {type(pol).__name__} has no jitted hooks to replay")
    spec = policy if isinstance(policy, str) else pol.name + (":leaf" if pol.leaf_only else "")
    pol.resize(capacity)
    pol.ensure_categories(len(stream.categories.names))
    if pol.hint_kind == "next_use":
        hints = AccessHints.make(next_use=stream.next_use(capacity))
    elif pol.hint_kind == "history" and history:
        hints = stream.history(pol.history_s, capacity)
    else:
        hints = NO_HINTS
    t0, c0 = time.perf_counter(), time.process_time()
    hits, victims, max_cached, violations = pol.replay_kernel()(
        pol.arena, stream.req_start, stream.blocks, stream.times, stream.cats, hints,
        stream.num_blocks, capacity, log_victims,
    )  # fmt: skip
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return ReplayResult(
        policy=spec,
        capacity=capacity,
        hits=hits,
        num_accesses=stream.num_accesses,
        max_cached=int(max_cached),
        violations=int(violations),
        wall_s=wall,
        cpu_s=cpu,
        victims=victims if log_victims else None,
    )


def capacity_grid(stream: BlockStream, fractions: Sequence[float]) -> list[int]:
    """Capacities in blocks for fractions of the ideal working set (every distinct block)."""
    return sorted({max(1, round(f * stream.num_blocks)) for f in fractions})


def capacity_for(
    stream: BlockStream,
    policy: str,
    target_ratio: float,
    lo: int,
    hi: int,
    rel_tol: float = 0.01,
) -> int:
    """Smallest capacity in ``[lo, hi]`` (bisection, to ``rel_tol``) whose hit ratio reaches target.

    Assumes the hit ratio grows with capacity (true for LRU and OPT here, up to ties).
    """
    while hi - lo > max(1, int(rel_tol * lo)):
        mid = (lo + hi) // 2
        if replay(stream, policy, mid).hit_ratio >= target_ratio:
            hi = mid
        else:
            lo = mid
    return hi
