"""OMEGA: one top-1 model (trained on K=1) plus offline statistics serve every K and recall target.

Training queries are split (seeded): `1 - holdout_fraction` of them train the forest, the rest are held
out for everything measured afterwards (per-rank calibration and the replayed stop levels), so no
statistic is measured on rows the forest was fitted to. Validation and test queries are never used.

Base model: a LightGBM classifier of "has the true nearest neighbour been evaluated yet?" on the 11
trajectory features of full-length (ef = TrainConfig.ef) searches, positives re-weighted so both
classes weigh the same; evaluated inside the numba search from its dumped trees.

Any K (the paper's dynamic refinement): with ranks 1..c confirmed, "is the true (c+1)-th neighbour
found?" is the same model's masked top-1 question: the confirmed points are taken out of the features
(the (c+1)-th best distance is the best, the count of computations drops by c, their distances leave
the window). Each rank bucket has its own isotonic calibration of that question, the stopping rule is
in `omega_rule.py`; its stop levels and check schedules come from replaying the held-out trajectories
per target, the schedule (first check, gaps) chosen for the lowest replayed cost with measured check and
call costs (`omega_calibrate.py`). Nothing is trained per K.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from wildserve.errors import ConfigError
from wildserve.vsearch import kernel, omega_rule
from wildserve.vsearch.baselines import subsample_rows
from wildserve.vsearch.config import DEFAULT_TARGETS, OmegaConfig, TrainConfig
from wildserve.vsearch.index import _atomic_savez
from wildserve.vsearch.methods import METHODS, FitContext, Method
from wildserve.vsearch.omega_calibrate import (
    Calibration,
    ReplaySet,
    build_replay_set,
    calibrate_levels,
)
from wildserve.vsearch.search import StopRule
from wildserve.vsearch.trajectory import TrajectoryLog
from wildserve.vsearch.trees import FlatForest, from_booster, train_lightgbm

log = logging.getLogger(__name__)

P_CALLS = omega_rule.P_CALLS


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


def first_check(found_at: np.ndarray, k: int, target: float, quantile: float) -> float:
    """A target-dependent first check: the given quantile, over training queries, of the computations
    after which their recall@k first reached the target."""
    need = max(int(np.ceil(target * k - 1e-9)), 1)
    t = np.sort(found_at[:, :k], axis=1)[:, need - 1]
    t = t[np.isfinite(t)]
    return float(np.quantile(t, quantile)) if t.size else 1.0


@dataclass(frozen=True)
class OmegaModel:
    """Everything OMEGA needs at search time; saved and loaded as one .npz."""

    forest: FlatForest
    calibration: Calibration
    cum: np.ndarray  # (k_max + 1, B, k_max + 1) cumulative conditional statistics over ranks
    edges: np.ndarray  # (B,) distance-computation bins of the statistics
    grid: np.ndarray  # the logging grid checks snap to
    found_at: np.ndarray  # (nq, k_max) float32 training discovery times (first checks)
    config: OmegaConfig

    @property
    def k_max(self) -> int:
        return int(self.cum.shape[2] - 1)

    def schedule(self, k: int, target: float, quantile: float, gap_scale: float) -> np.ndarray:
        """The rule's parameter vector for one candidate schedule, without theta and tau."""
        c = self.config
        sched = np.zeros(omega_rule.NUM_SCHEDULE)
        first = first_check(self.found_at, k, target, quantile)
        g = min(np.searchsorted(self.grid, first, side="left"), self.grid.size - 1)
        sched[omega_rule.S_FIRST] = self.grid[g]
        sched[omega_rule.S_GAP_MIN] = c.gap_min * gap_scale
        sched[omega_rule.S_GAP_MAX] = c.gap_max * gap_scale
        sched[omega_rule.S_SPAN] = c.gap_span
        sched[omega_rule.S_MIN_GAP] = c.min_check_gap
        sched[omega_rule.S_JUMP] = float(c.jump_to_statistics)
        return sched

    def choice(self, k: int, target: float) -> tuple[float, float, float, float]:
        """(theta, tau, first-check quantile, gap scale) for K and target: the calibrated target
        itself or the next higher one; a K between grid points takes the stop level and schedule of
        the neighbour with the larger stop level (the higher K on a tie)."""
        cal = self.calibration
        idx = np.flatnonzero(cal.targets >= target - 1e-9)
        if idx.size == 0:
            raise ConfigError(
                f"omega is calibrated for targets up to {cal.targets.max():g}, got {target}"
            )
        ti = int(idx[np.argmin(cal.targets[idx])])
        g = cal.k_grid
        hi = int(np.searchsorted(g, k, side="left"))
        lo = hi if g[hi] == k else hi - 1
        gi = lo if cal.theta[ti, lo] > cal.theta[ti, hi] else hi
        return (
            float(cal.theta[ti, gi]), float(cal.tau[ti]),
            float(cal.first_quantile[ti, gi]), float(cal.gap_scale[ti, gi]),
        )  # fmt: skip

    def rule(self, k: int, target: float) -> StopRule:
        if not 1 <= k <= self.k_max:
            raise ConfigError(f"omega serves K in 1..{self.k_max}, got {k}")
        if not 0.0 < target < 1.0:
            raise ConfigError(f"recall target must be in (0, 1), got {target}")
        theta, tau, quantile, gap_scale = self.choice(k, target)
        sched = self.schedule(k, target, quantile, gap_scale)
        sched[omega_rule.S_THETA], sched[omega_rule.S_TAU] = theta, tau
        cal = self.calibration
        ring = kernel.RING
        cargs = (
            self.forest.packed, cal.cal_x, cal.cal_y, cal.cal_off, self.cum, self.edges,
            self.grid, sched, np.zeros(kernel.NUM_BASE_FEATURES), np.zeros(ring + 1),
            np.zeros(ring + 1),
        )  # fmt: skip
        return StopRule(omega_rule.omega_check, cargs, omega_rule.NUM_PST, k)

    def save(self, path: str | Path) -> None:
        cal = asdict(self.calibration)
        _atomic_savez(
            Path(path),
            **self.forest.to_npz("forest_"),
            **{f"cal_{name}": np.asarray(v) for name, v in cal.items()},
            cum=self.cum,
            edges=self.edges,
            grid=self.grid,
            found_at=self.found_at,
            config=np.array(json.dumps(asdict(self.config))),
        )

    @classmethod
    def load(cls, path: str | Path) -> OmegaModel:
        from wildserve.vsearch.index import IndexFileError

        try:
            with np.load(path, allow_pickle=False) as z:
                return cls.from_npz(z)
        except (KeyError, ValueError, OSError, TypeError) as exc:
            raise IndexFileError(f"{path}: not a wildserve OMEGA model ({exc})") from None

    @classmethod
    def from_npz(cls, z) -> OmegaModel:
        raw = json.loads(str(z["config"]))
        cfg = OmegaConfig(**{n: tuple(v) if isinstance(v, list) else v for n, v in raw.items()})
        names = Calibration.__dataclass_fields__
        return cls(
            forest=FlatForest.from_npz(z, "forest_"),
            calibration=Calibration(**{n: z[f"cal_{n}"] for n in names}),
            cum=z["cum"],
            edges=z["edges"],
            grid=z["grid"],
            found_at=z["found_at"],
            config=cfg,
        )


def fit_omega(
    train: TrajectoryLog,
    train_config: TrainConfig,
    config: OmegaConfig,
    targets: tuple[float, ...] = (),
) -> OmegaModel:
    """Train the K=1 model, calibrate it per rank bucket and replay it for the stop levels."""
    draft, rs = fit_draft(train, train_config, config)
    asked = set(config.calibration_targets) | {float(t) for t in targets}
    cal_targets = tuple(sorted(asked or DEFAULT_TARGETS))
    levels = calibrate_levels(
        rs, draft.schedule, draft.cum, draft.edges, draft.grid, cal_targets,
        config.confirm_thresholds, candidate_schedules(config), draft.k_max,
        config.calibration_z, config.check_cost, config.call_cost,
    )  # fmt: skip
    cal = draft.calibration
    calibration = Calibration(cal.cal_x, cal.cal_y, cal.cal_off, **levels)
    return replace(draft, calibration=calibration)


def candidate_schedules(config: OmegaConfig) -> tuple[tuple[float, float], ...]:
    """(first-check quantile, gap scale) pairs the replay picks from; the first is the base."""
    return tuple(itertools.product(config.first_check_quantiles, config.gap_scales))


def fit_draft(
    train: TrajectoryLog, train_config: TrainConfig, config: OmegaConfig
) -> tuple[OmegaModel, ReplaySet]:
    """The forest, the offline statistics and the isotonic maps (a model without stop levels), and
    the held-out trajectories prepared for replaying it."""
    if train.windows is None:
        raise ConfigError("omega needs a training log collected with keep_windows=True")
    nq, k_max = train.found_at.shape
    order = np.random.default_rng(train_config.seed).permutation(nq)
    n_hold = min(max(1, round(nq * config.holdout_fraction)), nq - 1)
    held = np.sort(order[:n_hold])
    is_fit = np.ones(nq, bool)
    is_fit[held] = False
    label = train.found_by_row(0).astype(np.float64)
    fit_rows = np.flatnonzero(is_fit[train.row_query])
    fit_rows = fit_rows[subsample_rows(fit_rows.size, train_config.max_rows, train_config.seed)]
    y = label[fit_rows]
    n_pos, n_neg = y.sum(), y.size - y.sum()
    weight = np.where(y > 0, n_neg / max(n_pos, 1.0), 1.0)
    booster = train_lightgbm(
        train.feats[fit_rows], y, objective="binary", config=train_config, weight=weight
    )
    forest = from_booster(booster)
    hi = float(max(train.final_ndis.max(), 2.0))
    edges = np.unique(np.round(np.geomspace(1.0, hi, config.num_time_bins)))
    cond = conditional_found(train.found_at, edges, config.prior_strength, 0.0)
    cond = np.maximum.accumulate(cond, axis=1)  # more computations never lose a found neighbour
    cum = np.concatenate([np.zeros(cond.shape[:2] + (1,)), np.cumsum(cond, axis=2)], axis=2)
    rs, (cal_x, cal_y, cal_off) = build_replay_set(train, held, forest, k_max, train_config.seed)
    log.info("omega: %d fit rows, %d held-out queries", y.size, held.size)
    no_levels = (np.zeros(0),) * (len(fields(Calibration)) - 3)
    draft = OmegaModel(
        forest, Calibration(cal_x, cal_y, cal_off, *no_levels), cum, edges, train.grid,
        train.found_at.astype(np.float32), config,
    )  # fmt: skip
    return draft, rs


@METHODS.register("omega")
class Omega(Method):
    """OMEGA as a method of the comparison: fitted on the training log only (no tuning on validation)."""

    uses_val_log = False
    uses_val_queries = False
    calls_slot = P_CALLS

    def _fit(self, ctx: FitContext) -> None:
        self.model = fit_omega(ctx.train, ctx.train_config, ctx.omega, ctx.targets)

    def rule(self, k: int, target: float) -> StopRule:
        return self.model.rule(k, target)

    def model_count(self) -> int:
        return 1

    def save(self, path: str | Path) -> None:
        self.model.save(path)

    def load_state(self, meta: dict, arrays) -> None:
        self.model = OmegaModel.from_npz(arrays)
