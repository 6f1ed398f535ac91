"""Trace characterization of prefix-KV reuse: what an infinite cache sees, per request category.

Definitions (all over full-block accesses of a ``BlockStream``):
- ideal hit ratio: accesses of a block seen before / all accesses (an infinite cache);
- reuse time: seconds between two consecutive accesses of one block, credited to the category of the
  earlier access (the request that left the block behind); reuse probability of a category: share of
  its accesses whose block is accessed again later in the trace;
- reuse skew: share of all reuses that go to the top 1% / 10% most reused blocks;
- hit shares: ideal hits by first-turn vs follow-up requests, and by whether the block was last used
  in the same session (conversation context) or another one (shared prompts);
- lifespan: last minus first access time of blocks used at least twice;
- capacity for x% of the ideal hit ratio: smallest cache (blocks) whose hit ratio reaches x% of the
  ideal one, under LRU (what engines do) and OPT (a lower bound for any policy);
- WA indicators (``wa_indicators``), what a per-category reuse model can exploit: the spread of the
  categories' mean reuse times (largest / smallest) and of their reuse probabilities (largest -
  smallest), over categories with at least 1% of the accesses and 10 reuses; the share of ideal hits
  made by first-turn requests (single-turn reuse: shared prompts, not conversation context); the
  access-weighted KS distance of the categories' reuse times from their exponential fit (how wrong
  WA's model is); and the access share of the largest category (one dominant category leaves a
  per-category model nothing to separate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from wildserve.kvcache.replay import capacity_for, ideal_hits, replay
from wildserve.kvcache.stream import BlockStream

TARGETS = (0.90, 0.95, 0.99)
PCTS = (50, 90, 99)


@dataclass
class CategoryStats:
    """Reuse statistics of one request category."""

    name: str
    num_requests: int
    num_accesses: int
    access_share: float
    ideal_hit_ratio: float
    hit_share: float  # share of all ideal hits made by this category's requests
    reuse_probability: float
    num_reuses: int
    reuse_time_pcts: dict[str, float | None]
    exp_rate: float | None  # 1 / mean reuse time (the exponential MLE)
    exp_ks: float | None  # Kolmogorov-Smirnov distance between the reuse times and that fit


@dataclass
class TraceAnalysis:
    """Everything ``wildserve cache analyze`` reports about one trace."""

    name: str
    block_size: int
    num_requests: int
    num_accesses: int
    num_blocks: int
    ideal_hit_ratio: float
    skew: dict[str, float]
    hit_shares: dict[str, float]
    lifespan_pcts: dict[str, float | None]
    single_use_block_share: float
    categories: list[CategoryStats]
    category_scheme: str
    category_source: str = ""  # native or inferred types and turns
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    capacity: dict[str, dict[str, int]] = field(default_factory=dict)
    reuse_times: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # for plots

    def wa_indicators(self, min_share: float = 0.01, min_reuses: int = 10) -> dict[str, float]:
        """What makes a per-category reuse model useful (see the module docstring)."""
        big = [c for c in self.categories
               if c.access_share >= min_share and c.num_reuses >= min_reuses and c.exp_rate]  # fmt: skip
        means = [1.0 / c.exp_rate for c in big if c.exp_rate]
        probs = [c.reuse_probability for c in big]
        weight = sum(c.access_share for c in big if c.exp_ks is not None)
        ks = sum(c.access_share * c.exp_ks for c in big if c.exp_ks is not None)
        return {
            "categories_used": float(len(big)),
            "reuse_time_spread": max(means) / min(means) if len(means) > 1 else 1.0,
            "reuse_probability_spread": max(probs) - min(probs) if len(probs) > 1 else 0.0,
            "single_turn_reuse_share": self.hit_shares["first-turn requests"],
            "ks_from_exponential": ks / weight if weight > 0 else float("nan"),
            "largest_category_share": max((c.access_share for c in self.categories), default=1.0),
        }


def _pcts(x: np.ndarray) -> dict[str, float | None]:
    if len(x) == 0:
        return {f"p{p}": None for p in PCTS}
    return {f"p{p}": float(v) for p, v in zip(PCTS, np.percentile(x, PCTS), strict=True)}


def exp_ks_distance(samples: np.ndarray, rate: float) -> float:
    """sup |F_empirical - F_exponential(rate)| over the samples."""
    x = np.sort(samples)
    n = len(x)
    model = 1.0 - np.exp(-rate * x)
    upper = np.arange(1, n + 1) / n - model
    lower = model - np.arange(n) / n
    return float(max(upper.max(), lower.max()))


def reuse_pairs(stream: BlockStream) -> tuple[np.ndarray, np.ndarray]:
    """(earlier access, later access) index pairs of consecutive accesses of the same block."""
    order = np.lexsort((np.arange(stream.num_accesses), stream.blocks))
    same = stream.blocks[order[1:]] == stream.blocks[order[:-1]]
    return order[:-1][same], order[1:][same]


def characterize(stream: BlockStream) -> TraceAnalysis:
    """Infinite-cache statistics of ``stream`` (no capacity search; see ``capacity_search``)."""
    n, u = stream.num_accesses, stream.num_blocks
    req = stream.request_of_access()
    t = stream.times[req]
    cat = stream.cats[req]
    ncat = len(stream.categories.names)
    prev, cur = reuse_pairs(stream)
    reuse_t = t[cur] - t[prev]
    reuse_cat = cat[prev]
    is_hit = np.zeros(n, bool)
    is_hit[cur] = True
    has_next = np.zeros(n, bool)
    has_next[prev] = True
    total_hits = int(is_hit.sum())

    counts = np.bincount(stream.blocks, minlength=u)
    reuses_per_block = np.sort(counts - 1)[::-1]
    total_reuses = max(1, int(reuses_per_block.sum()))
    skew = {
        f"top{k}%": float(reuses_per_block[: max(1, math.ceil(k / 100 * u))].sum() / total_reuses)
        for k in (1, 10)
    }
    turns = stream.categories.turns[req]
    sessions = stream.categories.sessions[req]
    same_session = (sessions[cur] == sessions[prev]) & (sessions[cur] >= 0)
    hits = max(1, total_hits)
    hit_shares = {
        "first-turn requests": float(is_hit[turns == 1].sum() / hits),
        "follow-up requests": float(is_hit[turns > 1].sum() / hits),
        "block last used in the same session": float(same_session.sum() / hits),
        "block last used in another session": float((~same_session).sum() / hits),
    }
    first_t = np.full(u, np.inf)
    last_t = np.full(u, -np.inf)
    np.minimum.at(first_t, stream.blocks, t)
    np.maximum.at(last_t, stream.blocks, t)
    multi = counts >= 2

    req_counts = np.bincount(stream.cats, minlength=ncat)
    acc = np.bincount(cat, minlength=ncat)
    cat_hits = np.bincount(cat, weights=is_hit, minlength=ncat)
    cat_next = np.bincount(cat, weights=has_next, minlength=ncat)
    categories = []
    reuse_times = {}
    for c, name in enumerate(stream.categories.names):
        rt = reuse_t[reuse_cat == c]
        reuse_times[name] = rt
        mean = float(rt.mean()) if len(rt) else 0.0
        rate = 1.0 / mean if mean > 0 else None
        categories.append(
            CategoryStats(
                name=name,
                num_requests=int(req_counts[c]),
                num_accesses=int(acc[c]),
                access_share=float(acc[c] / max(1, n)),
                ideal_hit_ratio=float(cat_hits[c] / acc[c]) if acc[c] else 0.0,
                hit_share=float(cat_hits[c] / hits),
                reuse_probability=float(cat_next[c] / acc[c]) if acc[c] else 0.0,
                num_reuses=len(rt),
                reuse_time_pcts=_pcts(rt),
                exp_rate=rate,
                exp_ks=exp_ks_distance(rt, rate) if rate else None,
            )
        )
    return TraceAnalysis(
        name=stream.name,
        block_size=stream.block_size,
        num_requests=stream.num_requests,
        num_accesses=n,
        num_blocks=u,
        ideal_hit_ratio=ideal_hits(stream) / n if n else 0.0,
        skew=skew,
        hit_shares=hit_shares,
        lifespan_pcts=_pcts((last_t - first_t)[multi]),
        single_use_block_share=float((~multi).sum() / max(1, u)),
        categories=categories,
        category_scheme=stream.categories.scheme,
        category_source=stream.categories.source,
        reuse_times=reuse_times,
    )


def capacity_search(
    stream: BlockStream,
    analysis: TraceAnalysis,
    policies: Sequence[str] = ("lru", "opt"),
    grid_points: int = 14,
    targets: Sequence[float] = TARGETS,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Fill ``analysis.curves`` (hit ratio on a log grid of capacities) and ``analysis.capacity``."""
    ideal = analysis.ideal_hit_ratio
    grid = sorted(
        {max(1, round(x)) for x in np.geomspace(0.005, 1.0, grid_points) * stream.num_blocks}
    )
    for policy in policies:
        curve = []
        for c in grid:
            curve.append((c, replay(stream, policy, c).hit_ratio))
            if progress is not None:
                progress(policy)
        analysis.curves[policy] = curve
        found: dict[str, int] = {}
        for target in targets:
            goal = target * ideal
            hi = next((c for c, r in curve if r >= goal - 1e-12), None)
            if hi is None:
                continue
            lo = max([c for c, r in curve if c < hi] or [0])
            found[f"{target:.0%}"] = capacity_for(stream, policy, goal - 1e-12, lo, hi)
            if progress is not None:
                progress(policy)
        analysis.capacity[policy] = found
