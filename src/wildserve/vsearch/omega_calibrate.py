"""OMEGA's offline calibration, on held-out training queries only (never validation or test queries).

1. Masked probabilities: every logged row of the held-out queries is asked the masked top-1 question
   at every rank (the same `window_features` the online search uses, from the row's stored window), and
   an isotonic map per rank bucket turns the raw forest score into P(true neighbour of that rank found).
2. Stop levels: for each recall target and each K of a fixed grid (not the Ks under test), the online
   rule is replayed over those trajectories (`omega_rule.replay`) and its stop level `theta` bisected to
   the smallest value whose replayed recall meets the target with the same one-sided margin the
   baselines are tuned with. The replayed cost is mean distance computations + check_cost x mean
   checks + call_cost x mean model calls (both costs measured in the search, in distance
   computations; `OmegaConfig`). The confirmation threshold `tau` is chosen per target, among a few
   candidates, for the lowest cost over the grid with the base schedule; then, per target and grid
   K, the check schedule (first-check quantile x gap scale, a small fixed set that includes the
   base) with the lowest cost among those meeting the target. One forest, no per-K training: any K
   is served from its grid neighbours (conservatively: the stop level and schedule of the neighbour
   with the larger stop level).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numba import njit

from wildserve.vsearch import kernel
from wildserve.vsearch.methods import bisect_smallest, lower_bound
from wildserve.vsearch.omega_rule import S_TAU, S_THETA, rank_bucket, replay
from wildserve.vsearch.trajectory import TrajectoryLog
from wildserve.vsearch.trees import FlatForest, fit_isotonic, forest_raw

log = logging.getLogger(__name__)

#: K values the stop levels are calibrated at (any K in between is interpolated).
K_GRID = (1, 2, 4, 8, 16, 32, 64, 100)


@njit(cache=True)
def masked_raw_scores(feats, tops, wins, rows, forest, k_max):
    """raw[i, r]: the forest's raw score of the masked question at rank r+1 in logged row rows[i]."""
    out = np.empty((rows.size, k_max), np.float64)
    tr = np.zeros(kernel.NUM_TR)
    top_d = np.empty(tops.shape[1], np.float64)
    srt = np.empty(kernel.RING, np.float64)
    pre1 = np.empty(kernel.RING + 1, np.float64)
    pre2 = np.empty(kernel.RING + 1, np.float64)
    x = np.empty(kernel.NUM_BASE_FEATURES, np.float64)
    for i in range(rows.size):
        row = rows[i]
        tr[kernel.T_HOPS] = feats[row, 0]
        tr[kernel.T_NDIS] = feats[row, 1]
        tr[kernel.T_EP] = feats[row, 2]
        topn = 0
        for j in range(tops.shape[1]):
            top_d[j] = tops[row, j]
            if np.isfinite(top_d[j]):
                topn += 1
        tr[kernel.T_TOPN] = topn
        n = 0
        for j in range(kernel.RING):
            if np.isfinite(wins[row, j]):
                srt[j] = wins[row, j]
                n += 1
        kernel.prefix_sums(srt, n, pre1, pre2)
        for r in range(k_max):
            kernel.window_features(tr, top_d, srt, pre1, pre2, n, r + 1, x)
            out[i, r] = forest_raw(forest, x)
    return out


@dataclass(frozen=True)
class Calibration:
    """Per-bucket isotonic maps (concatenated knots) and the replay-fitted stop levels."""

    cal_x: np.ndarray
    cal_y: np.ndarray
    cal_off: np.ndarray  # bucket b's knots are [cal_off[b], cal_off[b+1])
    targets: np.ndarray  # (T,) recall targets calibrated
    k_grid: np.ndarray  # (G,) Ks calibrated
    theta: np.ndarray  # (T, G) stop levels (> 1: never stop early)
    tau: np.ndarray  # (T,) confirmation thresholds
    first_quantile: np.ndarray  # (T, G) chosen first-check quantile
    gap_scale: np.ndarray  # (T, G) chosen factor on (gap_min, gap_max)
    replay_recall: np.ndarray  # (T, G) replayed mean recall at the chosen levels
    replay_ndis: np.ndarray  # (T, G) replayed mean distance computations
    replay_checks: np.ndarray  # (T, G) replayed mean checks
    replay_calls: np.ndarray  # (T, G) replayed mean model calls
    replay_cost: np.ndarray  # (T, G) replayed cost (ndis + check and call costs), chosen schedule
    base_cost: np.ndarray  # (T, G) the same with the base schedule (the first candidate)


def fit_bucket_calibration(raw: np.ndarray, found: np.ndarray, k_max: int, cap: int, seed: int):
    """Isotonic map per rank bucket from (raw score, found) pairs of all ranks in the bucket."""
    rng = np.random.default_rng(seed)
    num_buckets = rank_bucket(k_max - 1) + 1
    xs, ys, off = [], [], [0]
    for b in range(num_buckets):
        ranks = [r for r in range(k_max) if rank_bucket(r) == b]
        x = raw[:, ranks].ravel()
        y = found[:, ranks].ravel()
        if x.size > cap:
            pick = rng.choice(x.size, cap, replace=False)
            x, y = x[pick], y[pick]
        iso = fit_isotonic(x, y.astype(np.float64))
        xs.append(iso.x)
        ys.append(iso.y)
        off.append(off[-1] + iso.x.size)
    return np.concatenate(xs), np.concatenate(ys), np.asarray(off, np.int64)


@dataclass
class ReplaySet:
    """Held-out trajectories prepared for fast replays."""

    table: np.ndarray  # (rows, k_max) float64 calibrated masked probabilities
    row_ndis: np.ndarray
    row_topn: np.ndarray
    starts: np.ndarray
    found_at: np.ndarray  # (nq, k_max)
    final_ndis: np.ndarray
    oargs: tuple  # the online probe's arguments, only for their types (the table is read instead)

    def run(self, k: int, sched: np.ndarray, cum, edges, grid) -> np.ndarray:
        out = np.empty((self.starts.size - 1, 4))
        replay(self.table, self.row_ndis, self.row_topn, self.starts, self.found_at,
               self.final_ndis, k, sched, cum, edges, grid, self.oargs, out)  # fmt: skip
        return out


def build_replay_set(
    train: TrajectoryLog, queries: np.ndarray, forest: FlatForest, k_max: int, seed: int
) -> tuple[ReplaySet, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Masked raw scores of the held-out queries' rows, their isotonic maps, and the replay tables."""
    rows = np.flatnonzero(np.isin(train.row_query, queries))
    rows = rows[np.lexsort((train.row_ndis[rows], train.row_query[rows]))]
    raw = masked_raw_scores(train.feats, train.tops, train.windows, rows, forest.packed, k_max)
    qs = train.row_query[rows]
    found = train.found_at[qs, :k_max] <= train.row_ndis[rows][:, None]
    cal = fit_bucket_calibration(raw, found, k_max, cap=300_000, seed=seed)
    table = np.empty_like(raw)
    cal_x, cal_y, cal_off = cal
    for r in range(k_max):
        b = rank_bucket(r)
        lo, hi = cal_off[b], cal_off[b + 1]
        table[:, r] = np.interp(raw[:, r], cal_x[lo:hi], cal_y[lo:hi])
    # renumber the held-out queries 0..n-1 in row order
    uniq, inv = np.unique(qs, return_inverse=True)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(inv)) + 1, [inv.size]]).astype(np.int64)
    topn = np.isfinite(train.tops[rows]).sum(axis=1).astype(np.float64)
    rs = ReplaySet(
        table=table,
        row_ndis=train.row_ndis[rows].copy(),
        row_topn=topn,
        starts=starts,
        found_at=train.found_at[uniq, :k_max].copy(),
        final_ndis=train.final_ndis[uniq].copy(),
        oargs=typing_oargs(forest, cal_x, cal_y, cal_off),
    )
    return rs, cal


def typing_oargs(forest: FlatForest, cal_x, cal_y, cal_off) -> tuple:
    """Arguments of the same types as the online probe's (the replay passes but never reads them)."""
    ring = kernel.RING
    return (forest.packed, cal_x, cal_y, cal_off, np.zeros(kernel.NUM_TR), np.zeros(1),
            np.zeros(ring), np.zeros(ring + 1), np.zeros(ring + 1), 0,
            np.zeros(kernel.NUM_BASE_FEATURES))  # fmt: skip


def replay_cost(out: np.ndarray, check_cost: float, call_cost: float) -> float:
    """A replay's mean cost per query in distance computations (out as `omega_rule.replay` fills it)."""
    return float(out[:, 1].mean() + check_cost * out[:, 3].mean() + call_cost * out[:, 2].mean())


def calibrate_levels(
    rs: ReplaySet,
    sched_for,
    cum: np.ndarray,
    edges: np.ndarray,
    grid: np.ndarray,
    targets: tuple[float, ...],
    taus: tuple[float, ...],
    schedules: tuple[tuple[float, float], ...],
    k_max: int,
    z: float,
    check_cost: float,
    call_cost: float,
    steps: int = 12,
) -> dict[str, np.ndarray]:
    """Per target: for each candidate tau, with the base schedule (schedules[0]), the smallest theta
    per grid K whose replayed recall meets the target (mean - z stderr); keep the tau with the lowest
    replayed cost (`replay_cost`, summed in log over the grid). Then per grid K, with that tau, the
    (first-check quantile, gap scale) in `schedules` of lowest cost, each with its own bisected
    theta. `sched_for(k, target, quantile, gap_scale)` is the rule's schedule vector (theta and tau
    are overwritten here). Returns the `Calibration` fields after the isotonic maps."""
    k_grid = np.array([k for k in K_GRID if k <= k_max] + ([k_max] if k_max not in K_GRID else []))
    k_grid = np.unique(k_grid)
    shape = (len(targets), k_grid.size)
    res = {n: np.empty(shape) for n in _LEVEL_FIELDS}
    tau_best = np.empty(len(targets))

    def fit_one(k: int, target: float, tau: float, quantile: float, gap_scale: float):
        sched = sched_for(k, target, quantile, gap_scale).copy()
        sched[S_TAU] = tau

        def run(th: float) -> np.ndarray:
            sched[S_THETA] = th
            return rs.run(k, sched, cum, edges, grid)

        th = _bisect_theta(run, target, z, steps)
        out = run(th)
        return replay_cost(out, check_cost, call_cost), th, out

    for ti, target in enumerate(targets):
        best = None
        for tau in taus:
            fits = [fit_one(int(k), target, tau, *schedules[0]) for k in k_grid]
            total = float(np.sum(np.log([f[0] for f in fits])))
            if best is None or total < best[0]:
                best = (total, tau, fits)
        _, tau_best[ti], base_fits = best
        for gi, k in enumerate(k_grid):
            chosen, sched_of = base_fits[gi], schedules[0]
            for cand in schedules[1:]:
                fit = fit_one(int(k), target, tau_best[ti], *cand)
                if fit[0] < chosen[0]:
                    chosen, sched_of = fit, cand
            cost, th, out = chosen
            row = {
                "theta": th, "first_quantile": sched_of[0], "gap_scale": sched_of[1],
                "replay_recall": out[:, 0].mean(), "replay_ndis": out[:, 1].mean(),
                "replay_calls": out[:, 2].mean(), "replay_checks": out[:, 3].mean(),
                "replay_cost": cost, "base_cost": base_fits[gi][0],
            }  # fmt: skip
            for name, value in row.items():
                res[name][ti, gi] = value
        log.info(
            "omega calibration: target %.3f tau %.2f theta %s first-check quantiles %s gap scales "
            "%s", target, tau_best[ti], res["theta"][ti], res["first_quantile"][ti],
            res["gap_scale"][ti],
        )  # fmt: skip
    return {"targets": np.asarray(targets, np.float64), "k_grid": k_grid, "tau": tau_best, **res}


_LEVEL_FIELDS = ("theta", "first_quantile", "gap_scale", "replay_recall", "replay_ndis",
                 "replay_checks", "replay_calls", "replay_cost", "base_cost")  # fmt: skip


def _bisect_theta(run, target: float, z: float, steps: int) -> float:
    """Smallest stop level in [0, 1] whose replayed recall meets the target; 2.0 (never stop
    early) when even 1.0 does not."""

    def ok(th: float) -> bool:
        return lower_bound(run(th)[:, 0], z) >= target

    if not ok(1.0):
        return 2.0
    return bisect_smallest(ok, 0.0, 1.0, steps)
