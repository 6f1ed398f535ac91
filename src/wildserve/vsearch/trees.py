"""LightGBM models flattened to arrays so the numba search can evaluate them without leaving nopython.

Each tree's internal nodes hold (feature, threshold, left, right); a negative child `c` is leaf `~c`.
Only numerical `<=` splits occur (our features are never missing or categorical); `from_booster` refuses
anything else rather than evaluate it wrongly.

Inside a search the forest is evaluated from `FlatForest.packed`: one row of four float64 per internal
node, (threshold, feature | leaf flags, left, right), with a leaf child's value stored in the child's
slot. A model is asked only every few hundred distance computations, so its arrays are usually out of
cache by then; one row per step touches about half the cache lines of the five separate arrays (a
cold call cost ~3 us against 0.36 us warm, `benchmarks/omega_cost.py`). The sums are the same, in the
same order, so the scores are identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numba import njit

from wildserve.errors import WildserveError


@dataclass(frozen=True)
class FlatForest:
    """A boosted forest as flat arrays; `raw = init + sum of leaf values`."""

    feature: np.ndarray  # (nodes,) int32
    threshold: np.ndarray  # (nodes,) float64
    left: np.ndarray  # (nodes,) int32; < 0 means leaf ~left
    right: np.ndarray  # (nodes,) int32
    leaf_value: np.ndarray  # (leaves,) float64
    root: np.ndarray  # (trees,) int32; < 0 means the tree is a single leaf ~root

    def arrays(self) -> tuple:
        return (self.feature, self.threshold, self.left, self.right, self.leaf_value, self.root)

    def to_npz(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{name}": arr for name, arr in zip(_FIELDS, self.arrays(), strict=True)}

    @classmethod
    def from_npz(cls, z, prefix: str) -> FlatForest:
        return cls(*(z[f"{prefix}{name}"] for name in _FIELDS))

    @cached_property
    def packed(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, roots): what `forest_raw` evaluates (see the module docstring)."""
        n = self.feature.size
        single = np.flatnonzero(self.root < 0)
        rows = np.empty((n + single.size, 4), np.float64)
        left_leaf, right_leaf = self.left < 0, self.right < 0
        if n and int(self.feature.max()) >= _LEAF_LEFT:
            raise WildserveError(f"a forest over {self.feature.max() + 1} features is too wide")
        rows[:n, 0] = self.threshold
        rows[:n, 1] = self.feature + _LEAF_LEFT * left_leaf + _LEAF_RIGHT * right_leaf
        rows[:n, 2] = np.where(left_leaf, self.leaf_value[~np.minimum(self.left, -1)], self.left)
        rows[:n, 3] = np.where(right_leaf, self.leaf_value[~np.minimum(self.right, -1)], self.right)
        roots = self.root.astype(np.int64)
        for j, t in enumerate(single):  # a one-leaf tree: a split every value goes left of
            value = self.leaf_value[~self.root[t]]
            rows[n + j] = (np.inf, _LEAF_LEFT + _LEAF_RIGHT, value, value)
            roots[t] = n + j
        return rows, roots

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Raw scores of rows of x (same as `booster.predict(x, raw_score=True)`)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        return _predict_rows(self.packed, x)


_FIELDS = ("feature", "threshold", "left", "right", "leaf_value", "root")
#: flags added to a packed row's feature index: that child is a leaf (its slot holds the value)
_LEAF_LEFT = 1 << 20
_LEAF_RIGHT = 1 << 21
_FEATURE_MASK = _LEAF_LEFT - 1


def from_booster(booster) -> FlatForest:
    """Flatten a trained `lightgbm.Booster` (its `dump_model()` JSON)."""
    dump = booster.dump_model()
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    leaf_value: list[float] = []
    roots: list[int] = []

    def walk(node: dict) -> int:
        if "leaf_value" in node:
            leaf_value.append(float(node["leaf_value"]))
            return ~(len(leaf_value) - 1)
        if node.get("decision_type") != "<=":
            raise WildserveError(f"unsupported LightGBM split {node.get('decision_type')!r}")
        if node.get("missing_type") not in ("None", "NaN"):
            raise WildserveError(f"unsupported LightGBM missing type {node.get('missing_type')!r}")
        idx = len(feature)
        feature.append(int(node["split_feature"]))
        threshold.append(float(node["threshold"]))
        left.append(0)
        right.append(0)
        left[idx] = walk(node["left_child"])
        right[idx] = walk(node["right_child"])
        return idx

    for tree in dump["tree_info"]:
        roots.append(walk(tree["tree_structure"]))
    return FlatForest(
        feature=np.array(feature, np.int32),
        threshold=np.array(threshold, np.float64),
        left=np.array(left, np.int32),
        right=np.array(right, np.int32),
        leaf_value=np.array(leaf_value, np.float64),
        root=np.array(roots, np.int32),
    )


@njit(cache=True)
def forest_raw(forest, x):
    """Raw score of one feature vector; `forest` is `FlatForest.packed`."""
    rows, roots = forest
    total = 0.0
    for t in range(roots.shape[0]):
        node = roots[t]
        while True:
            code = int(rows[node, 1])
            if x[code & _FEATURE_MASK] <= rows[node, 0]:
                if code & _LEAF_LEFT:
                    total += rows[node, 2]
                    break
                node = int(rows[node, 2])
            else:
                if code & _LEAF_RIGHT:
                    total += rows[node, 3]
                    break
                node = int(rows[node, 3])
    return total


@njit(cache=True)
def _predict_rows(forest, x):
    out = np.empty(x.shape[0], np.float64)
    for r in range(x.shape[0]):
        out[r] = forest_raw(forest, x[r])
    return out


@dataclass(frozen=True)
class Isotonic:
    """A fitted isotonic map from raw score to probability, as its interpolation knots."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.x, self.y)


def fit_isotonic(raw: np.ndarray, label: np.ndarray) -> Isotonic:
    """sklearn's IsotonicRegression, kept only as its knots (evaluated with np.interp in numba)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(raw, label)
    return Isotonic(
        np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_, np.float64)
    )


def train_lightgbm(x, y, *, objective: str, config, weight=None):
    """One LightGBM model with the shared settings (deterministic, single-threaded)."""
    import lightgbm as lgb

    params = {
        "objective": objective,
        "num_leaves": config.num_leaves,
        "learning_rate": config.learning_rate,
        "min_data_in_leaf": config.min_data_in_leaf,
        "seed": config.seed,
        "deterministic": True,
        "num_threads": 1,  # one thread: spin-waiting OpenMP threads on a shared machine distort time
        "verbose": -1,
    }
    data = lgb.Dataset(np.asarray(x, np.float64), label=np.asarray(y, np.float64), weight=weight)
    return lgb.train(params, data, num_boost_round=config.num_trees)
