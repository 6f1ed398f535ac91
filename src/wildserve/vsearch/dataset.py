"""The experiment's vector sets from any source: a base set, optional designated test queries with
optional ground truth, optional training queries; whatever is missing is held out of the base.

Held-out queries leave the base set (no query finds itself), so base ids change; a user's ground
truth is remapped to the new ids, and the rows whose true neighbours included a removed vector are
recomputed exactly (faiss), so every reported recall is against exact neighbours of the searched base.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from wildserve.vsearch.config import ExperimentConfig
from wildserve.vsearch.data import VectorFileError, load_vectors, read_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExperimentData:
    base: np.ndarray  # raw base vectors (queries removed)
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_truth: np.ndarray | None  # (n_test, k) ids into `base`, -1 where it must be recomputed
    description: dict


def _check_dim(name: str, path: str, x: np.ndarray, dim: int) -> None:
    if x.shape[1] != dim:
        raise VectorFileError(f"{path}: {name} have dimension {x.shape[1]}, the base vectors {dim}")


def load_experiment_data(config: ExperimentConfig, rng: np.random.Generator) -> ExperimentData:
    raw = load_vectors(config.base, rng)
    n_raw, dim = raw.shape
    test = truth = None
    if config.queries:
        test = load_vectors(config.queries, rng)
        _check_dim("queries", config.queries, test, dim)
    if config.ground_truth:
        if test is None:
            raise VectorFileError(
                f"{config.ground_truth}: ground truth needs its queries (--queries)"
            )
        truth = read_ids(config.ground_truth)
        if truth.shape[0] != test.shape[0]:
            raise VectorFileError(
                f"{config.ground_truth}: {truth.shape[0]} rows of ids for "
                f"{test.shape[0]} queries in {config.queries}"
            )
        need = max(config.ks)
        if truth.shape[1] < need:
            raise VectorFileError(
                f"{config.ground_truth}: {truth.shape[1]} ids per query, K up to {need} asked"
            )
        bad = (truth < 0) | (truth >= n_raw)
        if bad.any():
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            raise VectorFileError(
                f"{config.ground_truth}: query {row} has an id outside 0..{n_raw - 1}"
            )
    if test is not None and 0 < config.n_test < test.shape[0]:
        test = test[: config.n_test]
        truth = None if truth is None else truth[: config.n_test]
    train_all = None
    if config.train:
        train_all = load_vectors(config.train, rng)
        _check_dim("training queries", config.train, train_all, dim)
        if train_all.shape[0] < 3:
            raise VectorFileError(f"{config.train}: need at least 3 training queries")
    n_hold = (0 if train_all is not None else config.n_train + config.n_val) + (
        0 if test is not None else config.n_test
    )
    if n_hold + 1 >= n_raw:
        raise VectorFileError(
            f"{config.base}: {n_hold} queries to hold out of only {n_raw} vectors"
        )
    perm = rng.permutation(n_raw)
    held, rest = perm[:n_hold], perm[n_hold:]
    if 0 < config.n_base < rest.size:
        rest = rest[: config.n_base]
    rest = np.sort(rest)
    pos = 0
    if train_all is None:
        train, val = raw[held[: config.n_train]], raw[held[config.n_train : n_hold_tv(config)]]
        pos = n_hold_tv(config)
    else:
        order = rng.permutation(train_all.shape[0])
        n_val = min(config.n_val, train_all.shape[0] // 3)
        val = train_all[order[:n_val]]
        train = train_all[order[n_val : n_val + config.n_train]]
    if test is None:
        test = raw[held[pos : pos + config.n_test]]
    if truth is not None:
        new_id = np.full(n_raw, -1, np.int64)
        new_id[rest] = np.arange(rest.size)
        truth = new_id[truth[:, : max(config.ks)]]
        lost = int((truth < 0).any(axis=1).sum())
        if lost:
            log.info("%d test queries lost a true neighbour to the split; recomputed", lost)
    return ExperimentData(
        base=np.ascontiguousarray(raw[rest]),
        train=np.ascontiguousarray(train),
        val=np.ascontiguousarray(val),
        test=np.ascontiguousarray(test),
        test_truth=truth,
        description={
            "base": config.base,
            "queries": config.queries or "held out of the base",
            "ground_truth": config.ground_truth or "exact (faiss)",
            "train": config.train or "held out of the base",
        },
    )


def n_hold_tv(config: ExperimentConfig) -> int:
    return config.n_train + config.n_val
