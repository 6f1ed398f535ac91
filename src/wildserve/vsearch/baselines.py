"""The learned baselines OMEGA is compared with, on the same kernel and the same training searches.

LAET (Li et al., SIGMOD 2020): after a fixed warm-up, a regressor predicts log2 of the distance
computations the query needs; the search then runs to multiplier * 2**prediction, with the multiplier
tuned per (K, target) on validation queries. As in OMEGA's paper's comparison, one model per K: it
predicts when all true top-K neighbours are found. Features: the trajectory features at the warm-up,
the K-th best distance then, and the query vector itself (as LAET uses the query).

DARTH (Chatzakis et al., 2025): one regressor per K predicts the current recall@K from the search state
(the trajectory features plus the K-th best distance); it is consulted with an adaptive interval that
starts at `ipi` and shrinks toward `mpi` as the prediction nears the target, and the search stops once
the prediction reaches the target. Where validation queries show that stopping at the target itself
misses it, the stopping level is raised (bisected) per (K, target), as a practitioner would. ipi/mpi are fractions of the mean computations the training queries
need to reach the target, as in the paper.
"""

from __future__ import annotations

import logging

import numpy as np
from numba import njit

from wildserve.errors import ConfigError
from wildserve.vsearch import kernel
from wildserve.vsearch.methods import (
    METHODS,
    FitContext,
    Method,
    bisect_log_multiplier,
    bisect_smallest,
    keyed,
    lower_bound,
    recall_at_budget,
    tuning_key,
    unkeyed,
)
from wildserve.vsearch.search import StopRule, recall_at_k
from wildserve.vsearch.trajectory import TrajectoryLog
from wildserve.vsearch.trees import FlatForest, forest_raw, from_booster, train_lightgbm

log = logging.getLogger(__name__)

NB = kernel.NUM_BASE_FEATURES


def subsample_rows(n: int, cap: int, seed: int) -> np.ndarray:
    """Seeded subsample of row indices (all of them when there are at most `cap`)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


# --------------------------------------------------------------------------------------------- LAET


@njit(cache=True)
def laet_check(tr, top_d, ring, q, cargs, pst):
    forest, params, feats = cargs
    warmup, multiplier = params[0], params[1]
    k = int(tr[kernel.T_K])
    ndis = tr[kernel.T_NDIS]
    if pst[0] == 0.0:
        if ndis < warmup or tr[kernel.T_TOPN] < k:
            return False
        kernel.base_features(tr, top_d, ring, 1, feats)
        feats[NB] = top_d[k - 1]
        for j in range(q.shape[0]):
            feats[NB + 1 + j] = q[j]
        pred = 2.0 ** forest_raw(forest, feats)
        pst[0] = max(warmup, multiplier * pred)
        pst[1] += 1.0
    return ndis >= pst[0]


def _laet_rows(train: TrajectoryLog, warmup: float, k: int) -> np.ndarray:
    """Per query: the first logged row at or after the warm-up (with K points seen), with the K-th
    best distance and the query vector appended."""
    nq = train.found_at.shape[0]
    first = np.full(nq, -1, np.int64)
    ok = np.flatnonzero((train.row_ndis >= warmup) & np.isfinite(train.tops[:, k - 1]))
    # rows are grouped by query in ascending ndis, so the first qualifying row per query is wanted
    qs = train.row_query[ok]
    uniq, idx = np.unique(qs, return_index=True)
    first[uniq] = ok[idx]
    missing = first < 0
    if missing.any():  # searches that ended before the warm-up: take their last row
        last = np.zeros(nq, np.int64)
        last[train.row_query] = np.arange(train.row_query.size)
        first[missing] = last[missing]
    kth = train.tops[first, k - 1 : k].astype(np.float64)
    kth[~np.isfinite(kth)] = 0.0
    return np.hstack([train.feats[first], kth, train.queries.astype(np.float64)])


def time_to_all(log_: TrajectoryLog, k: int) -> np.ndarray:
    """Per query: the computations after which all true top-k were found (the full search's length
    for queries that never find them all)."""
    t = log_.found_at[:, :k].max(axis=1)
    return np.where(np.isfinite(t), t, log_.final_ndis)


@METHODS.register("laet")
class Laet(Method):
    """Learned adaptive early termination: one predicted budget per query, a model per K and a
    multiplier per (K, target)."""

    calls_slot = 1

    def _fit(self, ctx: FitContext) -> None:
        top1 = ctx.train.found_at[:, 0]
        self.warmup = float(np.quantile(top1[np.isfinite(top1)], ctx.baseline.laet_warmup_quantile))
        z = ctx.baseline.tune_z
        self.query_dim = ctx.train.queries.shape[1]
        self.forests: dict[int, FlatForest] = {}
        self._mult: dict[tuple[int, float], float] = {}
        for k in ctx.ks:
            x = _laet_rows(ctx.train, self.warmup, k)
            y = np.log2(np.maximum(time_to_all(ctx.train, k), 1.0))
            forest = from_booster(
                train_lightgbm(x, y, objective="regression", config=ctx.train_config)
            )
            self.forests[k] = forest
            pred = 2.0 ** forest.predict(_laet_rows(ctx.val, self.warmup, k))
            for target in ctx.targets:

                def ok(m: float, k: int = k, target: float = target, pred=pred) -> bool:
                    budget = np.maximum(self.warmup, m * pred)
                    return lower_bound(recall_at_budget(ctx.val.found_at, budget, k), z) >= target

                self._mult[tuning_key(k, target)] = bisect_log_multiplier(ok)

    def multiplier(self, k: int, target: float) -> float:
        try:
            return self._mult[tuning_key(k, target)]
        except KeyError:
            raise ConfigError(f"laet was not tuned for K={k}, target={target}") from None

    def rule(self, k: int, target: float) -> StopRule:
        params = np.array([self.warmup, self.multiplier(k, target)], np.float64)
        feats = np.zeros(NB + 1 + self.query_dim)
        return StopRule(laet_check, (self.forests[k].packed, params, feats), 2, k)

    def model_count(self) -> int:
        return len(self.forests)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        meta = {"ks": sorted(self.forests), "mult": keyed(self._mult), "warmup": self.warmup,
                "query_dim": self.query_dim}  # fmt: skip
        return meta, forest_arrays(self.forests)

    def load_state(self, meta: dict, arrays) -> None:
        self.forests = {k: FlatForest.from_npz(arrays, f"k{k}_") for k in meta["ks"]}
        self._mult = unkeyed(meta["mult"])
        self.warmup, self.query_dim = float(meta["warmup"]), int(meta["query_dim"])


def forest_arrays(forests: dict[int, FlatForest]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, forest in forests.items():
        out |= forest.to_npz(f"k{k}_")
    return out


# -------------------------------------------------------------------------------------------- DARTH


@njit(cache=True)
def darth_check(tr, top_d, ring, q, cargs, pst):
    forest, params, feats = cargs
    target, ipi, mpi = params[0], params[1], params[2]
    k = int(tr[kernel.T_K])
    ndis = tr[kernel.T_NDIS]
    if pst[0] == 0.0:
        pst[0] = ipi
    if ndis < pst[0] or tr[kernel.T_TOPN] < k:
        return False
    kernel.base_features(tr, top_d, ring, 1, feats)
    feats[NB] = top_d[k - 1]
    pred = forest_raw(forest, feats)
    pst[1] += 1.0
    if pred >= target:
        return True
    gap = min(max((target - pred) / target, 0.0), 1.0)
    pst[0] = ndis + mpi + (ipi - mpi) * gap
    return False


def darth_features(log_: TrajectoryLog, rows: np.ndarray, k: int) -> np.ndarray:
    return np.hstack([log_.feats[rows], log_.tops[rows, k - 1 : k].astype(np.float64)])


def mean_ndis_to_target(found_at: np.ndarray, k: int, target: float) -> float:
    """Mean over queries of the computations after which recall@k first reaches the target."""
    need = int(np.ceil(target * k - 1e-9))
    t = np.sort(found_at[:, :k], axis=1)[:, need - 1]
    return float(t[np.isfinite(t)].mean()) if np.isfinite(t).any() else float("inf")


@METHODS.register("darth")
class Darth(Method):
    """Declarative recall: a recall@K regressor per K consulted on an adaptive schedule."""

    calls_slot = 1

    uses_val_log = False

    def _fit(self, ctx: FitContext) -> None:
        self._fit_models(ctx)
        self._thresholds: dict[tuple[int, float], float] = {}
        for k in ctx.ks:
            for target in ctx.targets:
                self._thresholds[tuning_key(k, target)] = self._tune_threshold(ctx, k, target)

    def _tune_threshold(self, ctx: FitContext, k: int, target: float) -> float:
        """The predicted-recall level to stop at: the target itself unless validation queries miss it,
        then bisected upward (a prediction of the mean recall stops too early on its hard queries)."""
        z = ctx.baseline.tune_z

        def ok(threshold: float) -> bool:
            res = ctx.searcher.search(
                ctx.val.queries, k, ctx.train_config.ef, self._rule(k, target, threshold)
            )
            return lower_bound(recall_at_k(res.ids, ctx.val_truth, k), z) >= target

        if ok(target):
            return target
        return bisect_smallest(ok, target, 1.0, ctx.baseline.darth_tune_steps)

    def _fit_models(self, ctx: FitContext) -> None:
        cfg = ctx.train_config
        rows = subsample_rows(ctx.train.row_query.size, cfg.max_rows, cfg.seed)
        self.forests: dict[int, FlatForest] = {}
        self._intervals: dict[tuple[int, float], tuple[float, float]] = {}
        for k in ctx.ks:
            x = darth_features(ctx.train, rows, k)
            y = ctx.train.recall_by_row(k)[rows]
            booster = train_lightgbm(x, y, objective="regression", config=cfg)
            self.forests[k] = from_booster(booster)
            for target in ctx.targets:
                mean = mean_ndis_to_target(ctx.train.found_at, k, target)
                ipi = max(mean * ctx.baseline.darth_ipi_fraction, 16.0)
                mpi = max(mean * ctx.baseline.darth_mpi_fraction, 8.0)
                self._intervals[tuning_key(k, target)] = (ipi, mpi)

    def rule(self, k: int, target: float) -> StopRule:
        try:
            threshold = self._thresholds[tuning_key(k, target)]
        except KeyError:
            raise ConfigError(f"darth was not tuned for K={k}, target={target}") from None
        return self._rule(k, target, threshold)

    def _rule(self, k: int, target: float, threshold: float) -> StopRule:
        if k not in self.forests:
            raise ConfigError(f"darth has no model for K={k}; trained for {sorted(self.forests)}")
        try:
            ipi, mpi = self._intervals[tuning_key(k, target)]
        except KeyError:
            raise ConfigError(f"darth was not fitted for target {target}") from None
        params = np.array([threshold, ipi, mpi], np.float64)
        return StopRule(darth_check, (self.forests[k].packed, params, np.zeros(NB + 1)), 2, k)

    def model_count(self) -> int:
        return len(self.forests)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        meta = {"ks": sorted(self.forests), "thresholds": keyed(self._thresholds),
                "intervals": [[k, t, *v] for (k, t), v in self._intervals.items()]}  # fmt: skip
        return meta, forest_arrays(self.forests)

    def load_state(self, meta: dict, arrays) -> None:
        self.forests = {k: FlatForest.from_npz(arrays, f"k{k}_") for k in meta["ks"]}
        self._thresholds = unkeyed(meta["thresholds"])
        self._intervals = {tuning_key(k, t): (a, b) for k, t, a, b in meta["intervals"]}
