"""OMEGA: one top-1 model (trained on K=1) plus offline statistics serve every K and recall target.

Training queries are split three ways (seeded): 50% train the model, 20% fit its isotonic calibration,
30% measure the precision table below, so no statistic is measured on data it was fitted to.

Base model: a LightGBM classifier of "has the true nearest neighbour been evaluated yet?" on the 11
trajectory features of full-length (ef = TrainConfig.ef) searches, positives re-weighted so both
classes weigh the same, isotonically calibrated; evaluated inside the numba search from its dumped trees.

Any K (dynamic refinement): with ranks 1..c confirmed, "is the true (c+1)-th neighbour found?" is asked
as a masked top-1 question: the same model on the same features except that the best distance is the
(c+1)-th best (the confirmed points are masked out). Per-rank target: a rank is confirmed when the
first-crossing precision of its probability (the table below) reaches the recall target. At a check, a
doubling search (ranks c+1, c+2, c+4, ...) then a binary search finds how many ranks are confirmed, so
easy queries need few model calls.

Offline statistics. (1) `prec[r, p]`: on held-out queries, how often the true r-th neighbour had been
found the first time the masked probability reached p at checks `check_growth` apart (lower confidence
bound; real checks are never denser, so the bound stays on the safe side). (2) `cond[c, t, j]`: on a
log grid of distance computations t, how often the true j-th neighbour is found by t given ranks 1..c
are (lower confidence bound, sparse cells shrunk toward the marginal). Expected recall@K at a check:
    ( sum_{j<=c} prec_j + prec_{c+1}(current p) + sum_{j>c+1} cond[c, t, j] ) / K
and the search stops once it reaches the target. Checks start at a low quantile of the top-1 discovery
times; the next comes at least `check_growth` later and, when the statistics say the target is still
far, halfway to when they alone would reach it. Nothing is tuned per K or per target.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from numba import njit

from wildserve.vsearch import kernel
from wildserve.vsearch.baselines import subsample_rows
from wildserve.vsearch.config import OmegaConfig, TrainConfig
from wildserve.vsearch.index import _atomic_savez
from wildserve.vsearch.methods import METHODS, FitContext, Method
from wildserve.vsearch.search import StopRule
from wildserve.vsearch.trajectory import TrajectoryLog
from wildserve.vsearch.trees import (
    FlatForest,
    Isotonic,
    fit_isotonic,
    forest_raw,
    from_booster,
    train_lightgbm,
)

log = logging.getLogger(__name__)

# scratch slots of one OMEGA search
P_NEXT, P_CONFIRMED, P_SUM_CONF, P_CALLS, P_CHECKS, P_ER = range(6)
NUM_PST = 6


@njit(cache=True)
def _rank_confidence(feats, top_d, rank, forest, cal_x, cal_y, prec, grid, pst):
    """q_rank(p): the first-crossing precision of the calibrated masked top-1 probability p."""
    feats[3] = top_d[rank - 1]
    pst[P_CALLS] += 1.0
    p = np.interp(forest_raw(forest, feats), cal_x, cal_y)
    g = np.searchsorted(grid, p, side="right") - 1
    return prec[rank - 1, max(g, 0)]


@njit(cache=True)
def omega_check(tr, top_d, ring, q, cargs, pst):
    forest, cal_x, cal_y, prec, grid, cond, edges, params, feats = cargs
    target, first_check, growth, min_gap = params[0], params[1], params[2], params[3]
    jump = params[4] > 0.0
    k = int(tr[kernel.T_K])
    ndis = tr[kernel.T_NDIS]
    if pst[P_NEXT] == 0.0:
        pst[P_NEXT] = first_check
    if ndis < pst[P_NEXT] or tr[kernel.T_TOPN] < k:
        return False
    pst[P_CHECKS] += 1.0
    kernel.base_features(tr, top_d, ring, 1, feats)
    c = int(pst[P_CONFIRMED])
    q_next = 1.0
    if c < k:
        lo = c
        q_lo = 0.0
        hi = -1
        step = 1
        while True:  # doubling: c+1, c+2, c+4, ... until a rank fails or K is confirmed
            m = min(lo + step, k)
            qm = _rank_confidence(feats, top_d, m, forest, cal_x, cal_y, prec, grid, pst)
            if qm >= target:
                lo = m
                q_lo = qm
                if m == k:
                    break
                step *= 2
            else:
                hi = m
                q_next = qm
                break
        if hi > 0:  # binary search between the last confirmed and the first failed rank
            while hi - lo > 1:
                mid = (lo + hi) // 2
                qm = _rank_confidence(feats, top_d, mid, forest, cal_x, cal_y, prec, grid, pst)
                if qm >= target:
                    lo = mid
                    q_lo = qm
                else:
                    hi = mid
                    q_next = qm
        if lo > c:
            pst[P_SUM_CONF] += (lo - c) * q_lo
            pst[P_CONFIRMED] = lo
            c = lo
    b = np.searchsorted(edges, ndis, side="right") - 1
    b = min(max(b, 0), cond.shape[1] - 1)
    rest = 0.0
    if c < k:
        rest = q_next  # the first unconfirmed rank: what the model says about it
        for j in range(c + 1, k):  # later ranks: how often they are found once c are, by now
            rest += cond[c, b, j]
    er = (pst[P_SUM_CONF] + rest) / k
    pst[P_ER] = er
    if er >= target:
        return True
    # next check: at least `growth` later, and halfway to when the offline statistics alone would
    # bring the expected recall to the target (no point asking the model before then)
    t_done = edges[-1] if jump else ndis
    for bb in range(b + 1, edges.size if jump else 0):
        est = pst[P_SUM_CONF]
        for j in range(c, k):
            est += cond[c, bb, j]
        if est >= target * k:
            t_done = edges[bb]
            break
    pst[P_NEXT] = max(ndis + min_gap, ndis * (1.0 + growth), ndis + 0.5 * (t_done - ndis))
    return False


def conditional_found(
    found_at: np.ndarray, edges: np.ndarray, prior: float, z: float
) -> np.ndarray:
    """cond[c, b, j]: a lower confidence bound (z standard errors) on P(rank j found by edges[b] |
    ranks < c found by then); sparse cells are shrunk toward the marginal by `prior` pseudo-counts."""
    nq, k_max = found_at.shape
    num_bins = edges.size
    found_by = (found_at[:, None, :] <= edges[None, :, None]).astype(np.float64)  # (nq, B, k_max)
    marginal = found_by.mean(axis=0)  # (B, k_max)
    # all ranks < c found by t  <=>  the latest of them was found by t
    latest = np.maximum.accumulate(found_at, axis=1)  # latest[:, c-1] = max found_at[:, :c]
    cond = np.empty((k_max + 1, num_bins, k_max), np.float64)
    cond[0] = marginal - z * np.sqrt(marginal * (1.0 - marginal) / nq)
    for c in range(1, k_max + 1):
        given = (latest[:, c - 1][:, None] <= edges[None, :]).astype(np.float64)  # (nq, B)
        n = given.sum(axis=0)  # (B,)
        pos = np.einsum("qb,qbj->bj", given, found_by)
        mean = (pos + prior * marginal) / (n[:, None] + prior)
        cond[c] = mean - z * np.sqrt(mean * (1.0 - mean) / (n[:, None] + prior))
    np.clip(cond, 0.0, 1.0, out=cond)
    # ranks already confirmed are found by definition
    for c in range(1, k_max + 1):
        cond[c, :, :c] = 1.0
    return cond


#: Probability thresholds of the first-crossing precision table (dense near 1, where targets live).
PROB_GRID = np.unique(
    np.concatenate([np.linspace(0.0, 0.9, 46), 1.0 - np.geomspace(0.1, 1e-4, 60)])
)


@njit(cache=True)
def _first_crossing_hits(p, found, ndis, starts, grid, schedule, hits, crossed):
    """For each query (rows starts[i]:starts[i+1], in search order) and threshold grid[g]: did p ever
    reach grid[g] at a check of OMEGA's schedule, and was the neighbour already found the first time?"""
    first, growth, min_gap = schedule[0], schedule[1], schedule[2]
    for i in range(starts.size - 1):
        runmax = -1.0
        g = 0
        next_check = first
        for r in range(starts[i], starts[i + 1]):
            if ndis[r] < next_check:
                continue
            next_check = max(ndis[r] + min_gap, ndis[r] * (1.0 + growth))
            if p[r] > runmax:
                runmax = p[r]
            while g < grid.size and grid[g] <= runmax:
                crossed[g] += 1.0
                hits[g] += found[r]
                g += 1


def rank_bucket(rank0: int) -> int:
    """Ranks pooled for the precision table: 1 | 2-3 | 4-7 | 8-15 | ... (0-based rank in)."""
    return int(np.log2(rank0 + 1))


def first_crossing_precision(
    forest: FlatForest,
    calibration: Isotonic,
    log_: TrajectoryLog,
    rows: np.ndarray,
    k_max: int,
    z: float,
    schedule: np.ndarray,
) -> np.ndarray:
    """prec[r, g]: a lower confidence bound on the fraction of held-out queries whose true (r+1)-th
    neighbour was already found the first time its masked probability reached grid[g] at one of
    OMEGA's checks (the schedule is replayed on the logged rows).

    This is what confirming at that threshold is worth; the calibrated probability itself is too
    optimistic there (its top bin is full of late rows where everything is found). Ranks are pooled in
    doubling buckets, the curve is made monotone by isotonic regression over the thresholds (not a
    running max, which would pick the luckiest estimate), and z standard errors are taken off, counting
    the ranks of one query as one observation so the bound is not overconfident.
    """
    from sklearn.isotonic import IsotonicRegression

    order = rows[np.lexsort((log_.row_ndis[rows], log_.row_query[rows]))]
    qs = log_.row_query[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(qs)) + 1, [qs.size]]).astype(np.int64)
    feats = log_.feats[order].copy()
    ndis = log_.row_ndis[order]
    num_buckets = rank_bucket(k_max - 1) + 1
    hits = np.zeros((num_buckets, PROB_GRID.size))
    crossed = np.zeros((num_buckets, PROB_GRID.size))
    size = np.zeros(num_buckets)
    for r in range(k_max):
        b = rank_bucket(r)
        size[b] += 1
        feats[:, 3] = log_.tops[order, r]
        p = calibration(forest.predict(feats))
        found = log_.found_by_row(r)[order].astype(np.float64)
        _first_crossing_hits(p, found, ndis, starts, PROB_GRID, schedule, hits[b], crossed[b])
    bound = np.zeros((num_buckets, PROB_GRID.size))
    grid_idx = np.arange(PROB_GRID.size, dtype=np.float64)
    for b in range(num_buckets):
        ok = crossed[b] > 0
        if not ok.any():
            continue
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True)
        smooth = iso.fit(grid_idx[ok], hits[b, ok] / crossed[b, ok], sample_weight=crossed[b, ok])
        mean = smooth.predict(grid_idx[ok])
        n_eff = crossed[b, ok] / size[b]
        bound[b, ok] = np.clip(mean - z * np.sqrt(mean * (1.0 - mean) / n_eff), 0.0, 1.0)
    return bound[[rank_bucket(r) for r in range(k_max)]]


@dataclass(frozen=True)
class OmegaModel:
    """Everything OMEGA needs at search time; saved and loaded as one .npz."""

    forest: FlatForest
    calibration: Isotonic
    prec: np.ndarray  # (k_max, len(PROB_GRID)) first-crossing precision per rank
    cond: np.ndarray  # (k_max + 1, B, k_max)
    edges: np.ndarray  # (B,) distance-computation grid of `cond`
    first_check: float
    config: OmegaConfig

    @property
    def k_max(self) -> int:
        return int(self.cond.shape[2])

    def rule(self, k: int, target: float) -> StopRule:
        from wildserve.errors import ConfigError

        if not 1 <= k <= self.k_max:
            raise ConfigError(f"omega serves K in 1..{self.k_max}, got {k}")
        if not 0.0 < target < 1.0:
            raise ConfigError(f"recall target must be in (0, 1), got {target}")
        params = np.array(
            [
                target,
                self.first_check,
                self.config.check_growth,
                self.config.min_check_gap,
                float(self.config.jump_to_statistics),
            ],
            np.float64,
        )
        cargs = (
            self.forest.arrays(),
            self.calibration.x,
            self.calibration.y,
            self.prec,
            PROB_GRID,
            self.cond,
            self.edges,
            params,
            np.zeros(kernel.NUM_BASE_FEATURES),
        )
        return StopRule(omega_check, cargs, NUM_PST, k)

    def save(self, path: str | Path) -> None:
        cfg = asdict(self.config)
        _atomic_savez(
            Path(path),
            **self.forest.to_npz("forest_"),
            cal_x=self.calibration.x,
            cal_y=self.calibration.y,
            prec=self.prec,
            cond=self.cond,
            edges=self.edges,
            first_check=np.array(self.first_check),
            config_keys=np.array(list(cfg)),
            config_values=np.array([float(v) for v in cfg.values()]),
        )

    @classmethod
    def load(cls, path: str | Path) -> OmegaModel:
        from wildserve.vsearch.index import IndexFileError

        try:
            with np.load(path, allow_pickle=False) as z:
                raw = dict(zip(z["config_keys"].tolist(), z["config_values"].tolist(), strict=True))
                types = {f.name: f.type for f in fields(OmegaConfig)}
                cast = {"int": int, "bool": bool, "float": float}
                cfg = OmegaConfig(**{n: cast[types[n]](v) for n, v in raw.items()})
                return cls(
                    forest=FlatForest.from_npz(z, "forest_"),
                    calibration=Isotonic(z["cal_x"], z["cal_y"]),
                    prec=z["prec"],
                    cond=z["cond"],
                    edges=z["edges"],
                    first_check=float(z["first_check"]),
                    config=cfg,
                )
        except (KeyError, ValueError, OSError) as exc:
            raise IndexFileError(f"{path}: not a wildserve OMEGA model ({exc})") from None


def fit_omega(train: TrajectoryLog, train_config: TrainConfig, config: OmegaConfig) -> OmegaModel:
    """Train the K=1 model, calibrate it and gather the offline statistics."""
    nq = train.found_at.shape[0]
    order = np.random.default_rng(train_config.seed).permutation(nq)
    n_cal = max(1, round(nq * train_config.calib_fraction))
    n_prec = max(1, round(nq * config.precision_fraction))
    part = np.zeros(nq, np.int64)  # 0: model, 1: isotonic calibration, 2: precision table
    part[order[:n_cal]] = 1
    part[order[n_cal : n_cal + n_prec]] = 2
    row_part = part[train.row_query]
    label = train.found_by_row(0).astype(np.float64)
    fit_rows = np.flatnonzero(row_part == 0)
    fit_rows = fit_rows[subsample_rows(fit_rows.size, train_config.max_rows, train_config.seed)]
    y = label[fit_rows]
    n_pos, n_neg = y.sum(), y.size - y.sum()
    weight = np.where(y > 0, n_neg / max(n_pos, 1.0), 1.0)
    booster = train_lightgbm(
        train.feats[fit_rows], y, objective="binary", config=train_config, weight=weight
    )
    forest = from_booster(booster)
    cal_rows = np.flatnonzero(row_part == 1)
    calibration = fit_isotonic(forest.predict(train.feats[cal_rows]), label[cal_rows])
    top1 = train.found_at[:, 0]
    first_check = float(np.quantile(top1[np.isfinite(top1)], config.first_check_quantile))
    hi = float(max(train.final_ndis.max(), 2.0))
    edges = np.unique(np.round(np.geomspace(1.0, hi, config.num_time_bins)))
    cond = conditional_found(train.found_at, edges, config.prior_strength, config.confidence_z)
    schedule = np.array([first_check, config.check_growth, config.min_check_gap], np.float64)
    prec = first_crossing_precision(
        forest,
        calibration,
        train,
        np.flatnonzero(row_part == 2),
        train.found_at.shape[1],
        config.confidence_z,
        schedule,
    )
    log.info(
        "omega: %d fit rows, %d calibration rows, first check at %.0f",
        y.size,
        cal_rows.size,
        first_check,
    )
    return OmegaModel(forest, calibration, prec, cond, edges, first_check, config)


@METHODS.register("omega")
class Omega(Method):
    """OMEGA as a method of the comparison: fitted on the training log only (no tuning on validation)."""

    uses_val_log = False
    uses_val_queries = False
    calls_slot = P_CALLS

    def _fit(self, ctx: FitContext) -> None:
        self.model = fit_omega(ctx.train, ctx.train_config, ctx.omega)

    def rule(self, k: int, target: float) -> StopRule:
        return self.model.rule(k, target)

    def model_count(self) -> int:
        return 1
