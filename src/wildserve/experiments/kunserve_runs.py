"""One overload run reduced to what the KunServe report reads: latencies, blockers, peak demand, timeline.

Everything is JSON-ready and compact (per-second series, rounded), because the sweep keeps every run
in its run cache.
"""

from __future__ import annotations

import math

import numpy as np

from wildserve.engine import AdmissionBlocker
from wildserve.engine.admission import BLOCKERS, blocker_time
from wildserve.metrics import summarize
from wildserve.overload.systems import SystemRun

BURST_PERCENTILES = (50, 99, 99.9)


def _round(xs, digits: int = 4) -> list:
    return [None if x is None or not math.isfinite(x) else round(float(x), digits) for x in xs]


def blocker_shares(time: np.ndarray) -> dict[str, float]:
    """Each blocker's share of the step time in one window (empty window: all zero)."""
    total = float(time.sum())
    return {
        b.name.lower(): (float(t) / total if total > 0 else 0.0)
        for b, t in zip(BLOCKERS, time, strict=True)
    }


def tail_ttft_per_second(
    arrival: np.ndarray, ttft: np.ndarray, end_s: float, q: float = 99.0
) -> list[float | None]:
    """The ``q``-th percentile TTFT of the requests arriving in each second [0, end_s)."""
    out: list[float | None] = []
    second = np.floor(arrival).astype(int)
    for s in range(int(np.ceil(end_s))):
        sel = ttft[second == s]
        out.append(float(np.percentile(sel, q)) if sel.size else None)
    return out


def run_summary(run: SystemRun, window_s: tuple[float, float], duration_s: float) -> dict:
    """Latency, burst-window tail, admission blockers, peak KV demand and a per-second timeline."""
    m = run.metrics
    engines = run.result.engines
    logs = [e.admission_log for e in engines]
    lo, hi = window_s
    in_burst = (run.arrival >= lo) & (run.arrival < hi)
    end = max(run.result.end_s, duration_s)
    seconds = np.arange(0.0, math.ceil(end) + 1.0)
    per_s, _ = blocker_time(logs, seconds)
    win_time, win_budget = blocker_time(logs, [lo, hi])
    all_time, all_budget = blocker_time(logs, [0.0, end + 1.0])
    steps = {b.name.lower(): 0 for b in BLOCKERS}
    for log in logs:
        for k, v in log.step_counts().items():
            steps[k] += v
    tl = run.timeline
    demand = np.asarray(tl.kv_demand_blocks, dtype=float)
    blocks = np.asarray(tl.kv_blocks, dtype=float)
    t = np.asarray(tl.time_s)
    # per-second timeline: the last sample of each second
    idx = np.searchsorted(t, seconds[1:], side="left") - 1
    idx = idx[idx >= 0]
    busy = per_s.sum(axis=1)

    def share(b: AdmissionBlocker) -> list:
        col = per_s[:, int(b)]
        return _round(np.divide(col, busy, out=np.zeros_like(busy), where=busy > 0), 3)

    steady = (t >= duration_s / 3) & (t < duration_s)
    return {
        "latency": run.latency_summary(),
        "burst": {
            "ttft": summarize(m.ttft[in_burst], BURST_PERCENTILES),
            "requests": int(in_burst.sum()),
        },
        "blockers": {
            "burst": blocker_shares(win_time[0]),
            "burst_budget_use": float(win_budget[0] / win_time[0].sum()) if win_time.sum() else 0.0,
            "all": blocker_shares(all_time[0]),
            "all_budget_use": float(all_budget[0] / all_time[0].sum()) if all_time.sum() else 0.0,
            "steps": steps,
        },
        "peak_demand_blocks": float(demand.max()) if demand.size else 0.0,
        "peak_demand_s": float(t[int(demand.argmax())]) if demand.size else 0.0,
        "kv_blocks": float(blocks[0]) if blocks.size else 0.0,
        "per_second": {
            "kv_blocked": share(AdmissionBlocker.KV_BLOCKS),
            "budget_blocked": share(AdmissionBlocker.TOKEN_BUDGET),
            "tail_ttft_p99": _round(tail_ttft_per_second(run.arrival, m.ttft, duration_s), 3),
            "num_waiting": [int(tl.num_waiting[i]) for i in idx],
            "kv_usage": _round([tl.kv_usage[i] for i in idx], 3),
            "kv_demand": _round([tl.kv_demand_blocks[i] / max(1, tl.kv_blocks[i]) for i in idx], 3),
            "layers_dropped": [int(tl.layers_dropped[i]) for i in idx],
        },
        "sim_end_s": run.result.end_s,
        "wall_s": run.result.wall_s,
        # over the slice's last two thirds: the calibration's measure of the base load
        "mean_kv_usage": float(np.mean(np.asarray(tl.kv_usage)[steady])) if steady.any() else 0.0,
    }
