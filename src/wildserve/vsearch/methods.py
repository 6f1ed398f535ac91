"""Early-termination methods behind one interface, picked by name from a registry.

A method is fitted once (`fit`, which records its own preprocessing time) and then answers, for a K and
a recall target, which beam width to search with and which stopping rule to apply. Baselines that need
tuning tune on validation queries; every number is reported on separate held-out queries.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from wildserve.errors import ConfigError
from wildserve.registry import Registry
from wildserve.vsearch.config import BaselineConfig, OmegaConfig, TrainConfig
from wildserve.vsearch.search import NEVER, Searcher, StopRule, recall_at_k
from wildserve.vsearch.trajectory import TrajectoryLog

log = logging.getLogger(__name__)


@dataclass
class FitContext:
    """Everything a method may learn from: logs of full searches and the searcher for tuning runs."""

    searcher: Searcher
    train: TrajectoryLog  # full searches of the training queries
    val: TrajectoryLog  # full searches of the validation queries (for tuning baselines)
    val_truth: np.ndarray  # (n_val, >= k_max) exact ids of the validation queries
    train_config: TrainConfig
    ks: tuple[int, ...]
    targets: tuple[float, ...]
    omega: OmegaConfig = field(default_factory=OmegaConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def head(self, fraction: float, min_train: int = 20, min_val: int = 10) -> FitContext:
        """The same context with only the first `fraction` of the training and validation queries:
        a baseline fitted at a smaller preprocessing budget."""
        if fraction >= 1.0:
            return self
        n_t = max(min_train, round(self.train.found_at.shape[0] * fraction))
        n_v = max(min_val, round(self.val.found_at.shape[0] * fraction))
        return replace(
            self, train=self.train.head(n_t), val=self.val.head(n_v), val_truth=self.val_truth[:n_v]
        )


class Method:
    """Base class: a method searches with the training beam width unless it overrides `ef_for`."""

    name: ClassVar[str]
    #: Which shared artefacts its preprocessing depends on (their time is charged to it).
    uses_train_log: ClassVar[bool] = True
    uses_val_log: ClassVar[bool] = True  # full-length searches of the validation queries
    uses_val_queries: ClassVar[bool] = True  # validation queries and their ground truth
    #: Scratch slot where its stopping rule counts model calls (-1: it makes none).
    calls_slot: ClassVar[int] = -1

    def __init__(self, fraction: float = 1.0) -> None:
        self.fit_seconds = 0.0
        self._ef = 0
        #: share of the training/validation queries it learns from (< 1: a smaller budget)
        self.fraction = fraction
        self.used_train = 0
        self.used_val = 0

    def fit(self, ctx: FitContext) -> None:
        ctx = ctx.head(self.fraction)
        self.used_train = ctx.train.found_at.shape[0]
        self.used_val = ctx.val.found_at.shape[0]
        start = time.process_time()
        self._ef = ctx.train_config.ef
        self._fit(ctx)
        self.fit_seconds = time.process_time() - start

    def _fit(self, ctx: FitContext) -> None:
        raise NotImplementedError

    def ef_for(self, k: int, target: float) -> int:
        return self._ef

    def rule(self, k: int, target: float) -> StopRule:
        raise NotImplementedError

    def model_count(self) -> int:
        """Learned models it keeps (OMEGA: one; DARTH: one per K)."""
        return 0

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """What `vsearch search` needs to run it again: JSON metadata and named arrays."""
        raise NotImplementedError

    def load_state(self, meta: dict, arrays) -> None:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        """One .npz holding the method's name, metadata and arrays, written atomically."""
        from wildserve.vsearch.index import _atomic_savez

        meta, arrays = self.state()
        meta = meta | {"method": self.name, "ef": self._ef}
        _atomic_savez(Path(path), meta=np.array(json.dumps(meta)), **arrays)


def load_method(path: str | Path) -> Method:
    """A method saved by `Method.save` (OMEGA's own model files load too)."""
    from wildserve.vsearch.index import IndexFileError

    try:
        with np.load(path, allow_pickle=False) as z:
            if "meta" not in z:  # an OMEGA model file
                method = METHODS.get("omega")()
                method.load_state({}, z)
                return method
            meta = json.loads(str(z["meta"]))
            method = METHODS.get(meta["method"])()
            method._ef = int(meta["ef"])
            method.load_state(meta, z)
            return method
    except (KeyError, ValueError, OSError, TypeError) as exc:
        raise IndexFileError(f"{path}: not a saved wildserve search method ({exc})") from None


def keyed(table: dict[tuple[int, float], float]) -> list:
    """A (K, target)-keyed table as JSON."""
    return [[k, t, v] for (k, t), v in table.items()]


def unkeyed(rows: list) -> dict[tuple[int, float], float]:
    return {tuning_key(k, t): v for k, t, v in rows}


METHODS: Registry[type[Method]] = Registry("early-termination method")


def lower_bound(recalls: np.ndarray, z: float) -> float:
    """One-sided confidence bound on mean recall, so a knob tuned on validation holds on new queries."""
    if recalls.size < 2:
        return float(recalls.mean())
    return float(recalls.mean() - z * recalls.std(ddof=1) / np.sqrt(recalls.size))


def recall_at_budget(found_at: np.ndarray, budget: np.ndarray, k: int) -> np.ndarray:
    """Per query: recall@k of a full-length search cut after `budget` distance computations."""
    return (found_at[:, :k] <= budget[:, None]).mean(axis=1)


def bisect_smallest(ok, lo: float, hi: float, steps: int) -> float:
    """The upper end of [lo, hi] after ``steps`` halvings toward the smallest x with ok(x) (ok is
    monotone and holds at ``hi``): every method that tunes a knob on validation queries bisects so."""
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def bisect_log_multiplier(ok, lo: float = -6.0, hi: float = 10.0, steps: int = 30) -> float:
    """Smallest 2**x in [2**lo, 2**hi] with ok(2**x) (ok is monotone); inf when even 2**hi fails."""
    if not ok(2.0**hi):
        return float("inf")
    if ok(2.0**lo):
        return 2.0**lo
    return 2.0 ** bisect_smallest(lambda x: ok(2.0**x), lo, hi, steps)


def tuning_key(k: int, target: float) -> tuple[int, float]:
    """How every method files what it tuned for (K, recall target)."""
    return (int(k), round(float(target), 6))


@METHODS.register("fixed-ef")
class FixedEf(Method):
    """The practitioner's oracle: the smallest ef whose validation recall meets the target, per K."""

    uses_train_log = False

    def _fit(self, ctx: FitContext) -> None:
        val_q, truth = ctx.val.queries, ctx.val_truth
        z = ctx.baseline.tune_z
        cache: dict[int, np.ndarray] = {}

        def recalls(ef: int, k: int) -> np.ndarray:
            # one search at this ef answers every K <= ef (the result is the beam's top-k)
            if ef not in cache:
                kk = min(ef, ctx.train_config.k_max)
                ids = ctx.searcher.search(val_q, kk, ef).ids
                cache[ef] = ids
            return recall_at_k(cache[ef], truth, k)

        self._efs: dict[tuple[int, float], int] = {}
        ef_cap = ctx.train_config.ef
        for k in ctx.ks:
            for target in ctx.targets:
                lo, hi = k, ef_cap
                if lower_bound(recalls(hi, k), z) < target:
                    log.warning("fixed-ef: K=%d target %.2f not met even at ef=%d", k, target, hi)
                    self._efs[tuning_key(k, target)] = hi
                    continue
                while lo < hi:
                    mid = (lo + hi) // 2
                    if lower_bound(recalls(mid, k), z) >= target:
                        hi = mid
                    else:
                        lo = mid + 1
                self._efs[tuning_key(k, target)] = hi

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {"efs": keyed(self._efs)}, {}

    def load_state(self, meta: dict, arrays) -> None:
        self._efs = {key: int(v) for key, v in unkeyed(meta["efs"]).items()}

    def ef_for(self, k: int, target: float) -> int:
        try:
            return self._efs[tuning_key(k, target)]
        except KeyError:
            raise ConfigError(f"fixed-ef was not tuned for K={k}, target={target}") from None

    def rule(self, k: int, target: float) -> StopRule:
        return NEVER
