"""`wildserve experiment omega` on small user files of each format and metric, and bad input as a
one-line error (exit 2, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from wildserve.vsearch.data import synthetic_clusters
from wildserve.vsearch.index import METRICS, ground_truth


def _fvecs(path, x):
    x = np.asarray(x)
    dim = np.full((x.shape[0], 1), x.shape[1], np.int32)
    body = x.astype(np.int32) if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)
    np.hstack([dim, body.view(np.int32)]).tofile(path)


def _files(tmp_path, metric: str, fmt: str, n: int = 1500, nq: int = 40):
    x = synthetic_clusters(n + nq, 8, np.random.default_rng(3), num_clusters=10)
    base, queries = x[:n], x[n:]
    m = METRICS.get(metric)
    truth = ground_truth(m.prepare(base), m.prepare(queries), metric, 10)
    paths = {}
    for name, arr, ext in (("base", base, fmt), ("queries", queries, fmt),
                           ("truth", truth, "ivecs" if fmt == "fvecs" else "npy")):  # fmt: skip
        p = tmp_path / f"{name}.{ext}"
        _fvecs(p, arr) if ext in ("fvecs", "ivecs") else np.save(p, arr)
        paths[name] = p
    return paths


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wildserve.cli", "experiment", "omega", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=900,
    )


SMALL = ("--n-train", "80", "--n-val", "30", "--ks", "1,5", "--targets", "0.9", "--ef", "40",
         "--m", "6", "--repeats", "1", "--no-equal-budget")  # fmt: skip


@pytest.mark.parametrize(
    ("metric", "fmt", "methods"),
    [
        ("l2", "fvecs", "fixed-ef,laet,darth,omega"),
        ("ip", "npy", "omega"),
        ("angular", "npy", "laet,omega"),
    ],
)
def test_experiment_runs_on_user_files(tmp_path, metric, fmt, methods):
    f = _files(tmp_path, metric, fmt)
    out = tmp_path / "run"
    res = _run("--base", f["base"], "--queries", f["queries"], "--ground-truth", f["truth"],
               "--metric", metric, "--methods", methods, "--out", out, *SMALL)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads((out / "results.json").read_text())
    assert data["dataset"]["metric"] == metric and data["dataset"]["n_test"] == 40
    assert data["dataset"]["n_base"] == 1500 - 110  # training queries were held out of the base
    cells = {(c["method"], c["k"]) for c in data["cells"]}
    assert cells == {(m, k) for m in methods.split(",") for k in (1, 5)}
    assert "| omega | 5 | 0.90 |" in (out / "report.md").read_text()


def test_held_out_queries_and_computed_truth(tmp_path):
    """No --queries: test queries come out of the base, ground truth is computed."""
    f = _files(tmp_path, "l2", "npy")
    out = tmp_path / "run"
    res = _run("--base", f["base"], "--n-test", "50", "--metric", "l2", "--methods", "omega",
               "--out", out, *SMALL)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads((out / "results.json").read_text())
    assert data["dataset"]["n_test"] == 50 and data["dataset"]["n_base"] == 1500 - 160


def _bad(tmp_path, f):
    wrong_dim = tmp_path / "q3.npy"
    np.save(wrong_dim, np.ones((40, 3), np.float32))
    short_truth = tmp_path / "t_short.npy"
    np.save(short_truth, np.load(f["truth"])[:10])
    big_id = tmp_path / "t_big.npy"
    t = np.load(f["truth"])
    t[7, 2] = 10**6
    np.save(big_id, t)
    trunc = tmp_path / "trunc.fvecs"
    _fvecs(trunc, np.ones((5, 8), np.float32))
    trunc.write_bytes(trunc.read_bytes()[:-4])
    floats = tmp_path / "t_float.npy"
    np.save(floats, t.astype(np.float32))
    return [
        (["--base", trunc], "trunc.fvecs"),
        (["--base", f["base"], "--queries", wrong_dim], "dimension 3"),
        (["--base", f["base"], "--queries", f["queries"], "--ground-truth", short_truth],
         "10 rows of ids for 40 queries"),
        (["--base", f["base"], "--queries", f["queries"], "--ground-truth", big_id], "query 7"),
        (["--base", f["base"], "--queries", f["queries"], "--ground-truth", floats], "integers"),
        (["--base", f["base"], "--ground-truth", f["truth"]], "needs its queries"),
        (["--base", tmp_path / "missing.npy"], "no such file"),
        (["--base", f["base"], "--ks", "1,x"], "--ks"),
        (["--base", f["base"], "--targets", "0.9,1.5"], "--targets"),
        (["--base", f["base"], "--metric", "cosine"], "metric"),
    ]  # fmt: skip


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    f = _files(tmp_path, "l2", "npy")
    for args, needle in _bad(tmp_path, f):
        out = tmp_path / "never"
        ks = [] if "--ks" in args else ["--ks", "1,5"]
        res = _run(*args, *ks, "--out", out)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.count("\n") == 1 and needle in res.stderr, (args, res.stderr)
        assert not out.exists()
