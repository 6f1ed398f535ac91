"""OMEGA's offline calibration, on held-out training queries only (never validation or test queries).

1. Masked probabilities: logged rows of the held-out queries are asked the masked top-1 question
   (the same `window_features` the online search uses, from the row's stored window), and an
   isotonic map per rank bucket, fitted on a fixed sample of (row, rank) pairs, turns the raw forest
   score into P(true neighbour of that rank found). Pairs outside the sample are asked only when a
   replay reaches them (a replay asks few of a row's 100 ranks).
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
from wildserve.vsearch.omega_rule import S_TAU, S_THETA, load_logged, rank_bucket, replay
from wildserve.vsearch.trajectory import TrajectoryLog
from wildserve.vsearch.trees import FlatForest, fit_isotonic, forest_raw

log = logging.getLogger(__name__)

#: K values the stop levels are calibrated at (any K in between is interpolated).
K_GRID = (1, 2, 4, 8, 16, 32, 64, 100)


@njit(cache=True)
def masked_raw_scores(table, col, need, forest, top_w):
    """raw[i, r]: the forest's raw score of the masked question at rank r+1 in row i of the replay
    table (logged state from column `col` on) where need[i, r], NaN elsewhere."""
    rows, k_max = need.shape
    out = np.full((rows, k_max), np.nan)
    tr = np.zeros(kernel.NUM_TR)
    top_d = np.empty(top_w, np.float64)
    srt = np.empty(kernel.RING, np.float64)
    pre1 = np.empty(kernel.RING + 1, np.float64)
    pre2 = np.empty(kernel.RING + 1, np.float64)
    x = np.empty(kernel.NUM_BASE_FEATURES, np.float64)
    for i in range(rows):
        if not need[i].any():
            continue
        n = load_logged(table, i, col, tr, top_d, srt, pre1, pre2)
        for r in range(k_max):
            if need[i, r]:
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


def calibration_picks(rows: int, k_max: int, cap: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """Per rank bucket, the (row, rank) pairs its isotonic map is fitted on: every pair of the bucket's
    ranks, or a uniform sample of `cap` of them. They depend only on the sizes, so only these pairs'
    raw scores are computed up front (a quarter of the table at 1,000 training queries)."""
    rng = np.random.default_rng(seed)
    picks = []
    for b in range(rank_bucket(k_max - 1) + 1):
        ranks = np.array([r for r in range(k_max) if rank_bucket(r) == b])
        size = rows * ranks.size
        flat = rng.choice(size, cap, replace=False) if size > cap else np.arange(size)
        picks.append((flat // ranks.size, ranks[flat % ranks.size]))
    return picks


def fit_bucket_calibration(raw: np.ndarray, found: np.ndarray, picks) -> tuple[np.ndarray, ...]:
    """Isotonic map per rank bucket from the (raw score, found) pairs `calibration_picks` chose."""
    xs, ys, off = [], [], [0]
    for rows, ranks in picks:
        iso = fit_isotonic(raw[rows, ranks], found[rows, ranks].astype(np.float64))
        xs.append(iso.x)
        ys.append(iso.y)
        off.append(off[-1] + iso.x.size)
    return np.concatenate(xs), np.concatenate(ys), np.asarray(off, np.int64)


@dataclass
class ReplaySet:
    """Held-out trajectories prepared for fast replays."""

    # (rows, k_max + logged columns): calibrated masked probabilities (NaN until a replay first asks
    # for one, see `omega_rule.probe`), then each row's logged state (`logged_columns`)
    table: np.ndarray
    row_ndis: np.ndarray
    row_topn: np.ndarray
    starts: np.ndarray
    found_at: np.ndarray  # (nq, k_max)
    final_ndis: np.ndarray
    oargs: tuple  # the model and scratch that fill the table, laid out as the online probe's

    def run(self, k: int, sched: np.ndarray, cum, edges, grid) -> np.ndarray:
        out = np.empty((self.starts.size - 1, 4))
        replay(self.table, self.row_ndis, self.row_topn, self.starts, self.found_at,
               self.final_ndis, k, sched, cum, edges, grid, self.oargs, out)  # fmt: skip
        return out


def logged_columns(train: TrajectoryLog, rows: np.ndarray) -> list[np.ndarray]:
    """The logged state a masked question is asked from (`omega_rule.load_logged`'s layout)."""
    return [train.feats[rows, :3], train.tops[rows], train.windows[rows]]


def build_replay_set(
    train: TrajectoryLog, queries: np.ndarray, forest: FlatForest, k_max: int, seed: int
) -> tuple[ReplaySet, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The held-out queries' rows, the isotonic maps fitted on a sample of their masked raw scores,
    and the replay table holding the sample's calibrated probabilities (the rest on demand)."""
    rows = np.flatnonzero(np.isin(train.row_query, queries))
    rows = rows[np.lexsort((train.row_ndis[rows], train.row_query[rows]))]
    logged = logged_columns(train, rows)
    top_w = train.tops.shape[1]
    table = np.empty((rows.size, k_max + sum(a.shape[1] for a in logged)))
    col = k_max
    for part in logged:
        table[:, col : col + part.shape[1]] = part
        col += part.shape[1]
    picks = calibration_picks(rows.size, k_max, cap=300_000, seed=seed)
    need = np.zeros((rows.size, k_max), bool)
    for pick_rows, pick_ranks in picks:
        need[pick_rows, pick_ranks] = True
    raw = masked_raw_scores(table, k_max, need, forest.packed, top_w)
    qs = train.row_query[rows]
    found = train.found_at[qs, :k_max] <= train.row_ndis[rows][:, None]
    cal = fit_bucket_calibration(raw, found, picks)
    cal_x, cal_y, cal_off = cal
    table[:, :k_max] = np.nan
    for r in range(k_max):
        b = rank_bucket(r)
        lo, hi = cal_off[b], cal_off[b + 1]
        asked = need[:, r]
        table[asked, r] = np.interp(raw[asked, r], cal_x[lo:hi], cal_y[lo:hi])
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
        oargs=replay_oargs(forest, cal_x, cal_y, cal_off, top_w),
    )
    return rs, cal


def replay_oargs(forest: FlatForest, cal_x, cal_y, cal_off, top_w: int) -> tuple:
    """The online probe's arguments with scratch for one logged row: the replay fills its table's
    missing entries with them (`omega_rule.fill_entry`)."""
    ring = kernel.RING
    return (forest.packed, cal_x, cal_y, cal_off, np.zeros(kernel.NUM_TR), np.zeros(top_w),
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

        runs: dict[float, np.ndarray] = {}  # the bisection ends on a level it already replayed

        def run(th: float) -> np.ndarray:
            if th not in runs:
                sched[S_THETA] = th
                runs[th] = rs.run(k, sched, cum, edges, grid)
            return runs[th]

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
