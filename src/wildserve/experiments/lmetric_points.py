"""The LMetric experiment's runs folded over seeds: one point per (workload, model, load, policy).

Each seed's run gives one value per metric (its mean TTFT, its p99 TTFT, ...); a point holds the mean
over seeds and the half-width of its 95% t-interval. Recorded-arrival runs (seed None) form points of
their own ("recorded"), never mixed with the Poisson seeds. A tuned family's best grid point at a
load is the one with the lowest mean (over seeds) of mean TTFT: the grid is searched on the very
seeds it is reported on, which favours the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from wildserve.experiments.lmetric import LINEAR_FAMILIES, run_label
from wildserve.metrics import mean_interval


def _costly_share(s: dict) -> float | None:
    st = s.get("policy_stats") or {}
    if "costly_switch_decisions" not in st or not st.get("decisions"):
        return None
    return st["costly_switch_decisions"] / st["decisions"]


METRICS: dict[str, Callable[[dict], float | None]] = {
    "ttft_mean": lambda s: s["ttft"]["mean"],
    "ttft_p50": lambda s: s["ttft"]["p50"],
    "ttft_p99": lambda s: s["ttft"]["p99"],
    "tpot_mean": lambda s: s["tpot"]["mean"],
    "tpot_p99": lambda s: s["tpot"]["p99"],
    "hit_ratio": lambda s: s["hit_ratio"],
    "preemptions": lambda s: s["preemptions"],
    "switch_rate": lambda s: s.get("session_switch_rate"),
    "costly_share": _costly_share,
}


@dataclass
class Point:
    """One policy (or grid point) at one load, over its seeds."""

    workload: str
    model: str
    gpu: str
    rate_scale: float
    arrivals: str  # "poisson" (seeded) or "recorded"
    policy: str
    kwargs: dict
    label: str
    seeds: list = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    values: dict[str, list] = field(default_factory=dict)

    def stat(self, metric: str) -> tuple[float, float]:
        """(mean over seeds, 95% half-width) of one metric."""
        return mean_interval(self.values[metric])

    def mean(self, metric: str) -> float:
        return self.stat(metric)[0]


def fold(runs: Sequence[dict]) -> list[Point]:
    """Group runs over seeds, in plan order."""
    points: dict[tuple, Point] = {}
    for r in runs:
        arrivals = "recorded" if r["seed"] is None else "poisson"
        label = run_label(r)
        key = (r["workload"], r["model"], r["gpu"], r["rate_scale"], arrivals, label)
        p = points.get(key)
        if p is None:
            p = points[key] = Point(
                r["workload"], r["model"], r["gpu"], r["rate_scale"], arrivals, r["policy"],
                r["kwargs"], label, values={m: [] for m in METRICS},
            )  # fmt: skip
        p.seeds.append(r["seed"])
        p.keys.append(r["key"])
        for m, get in METRICS.items():
            p.values[m].append(get(r["summary"]))
    return list(points.values())


def select(
    points: Sequence[Point], workload: str, model: str, scale: float, arrivals: str = "poisson"
) -> list[Point]:
    return [
        p
        for p in points
        if (p.workload, p.model, p.rate_scale, p.arrivals) == (workload, model, scale, arrivals)
    ]


def untuned(points: Sequence[Point], policy: str) -> Point | None:
    """The point of a policy run with its defaults (no grid kwargs)."""
    return next((p for p in points if p.policy == policy and not p.kwargs), None)


def best_of(points: Sequence[Point], family: str) -> Point | None:
    """A tuned family's grid point with the lowest mean TTFT (mean over seeds)."""
    grid = [p for p in points if p.policy == family and p.kwargs]
    return min(grid, key=lambda p: p.mean("ttft_mean")) if grid else None


def fair_linear(points: Sequence[Point]) -> Point | None:
    """The better (by mean TTFT) of the linear families' best grid points."""
    best = [b for f in LINEAR_FAMILIES if (b := best_of(points, f)) is not None]
    return min(best, key=lambda p: p.mean("ttft_mean")) if best else None


def at_grid_edge(points: Sequence[Point], best: Point) -> bool:
    """True when the best grid point is the smallest or largest value searched."""
    values = sorted(
        next(iter(p.kwargs.values())) for p in points if p.policy == best.policy and p.kwargs
    )
    v = next(iter(best.kwargs.values()))
    return len(values) > 1 and v in (values[0], values[-1])


def groups(points: Sequence[Point]) -> list[tuple[str, str, str]]:
    seen: list[tuple[str, str, str]] = []
    for p in points:
        g = (p.workload, p.model, p.gpu)
        if g not in seen:
            seen.append(g)
    return seen


def scales(points: Sequence[Point], workload: str, model: str, arrivals: str) -> list[float]:
    return sorted(
        {
            p.rate_scale
            for p in points
            if (p.workload, p.model, p.arrivals) == (workload, model, arrivals)
        }
    )
