"""`vsearch build | train | search` end to end on small files, and bad input as a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from wildserve.vsearch import cli
from wildserve.vsearch.data import VectorFileError, synthetic_clusters


@pytest.mark.slow  # three numba compilations of the search: ~40 s on 2 cores
def test_build_train_search(tmp_path):
    rng = np.random.default_rng(5)
    x = synthetic_clusters(3300, 16, rng, num_clusters=12)
    np.save(tmp_path / "base.npy", x[:3000])
    np.save(tmp_path / "train.npy", x[3000:3250])
    np.save(tmp_path / "q.npy", x[3250:])
    runner = CliRunner()
    r = runner.invoke(cli.app, ["build", "--data", str(tmp_path / "base.npy"), "--metric", "l2",
                                "--m", "8", "--out", str(tmp_path / "g.npz")])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli.app, ["train", "--index", str(tmp_path / "g.npz"), "--queries",
                                str(tmp_path / "train.npy"), "--ef", "100", "--ks", "1,10",
                                "--out", str(tmp_path / "m.npz")])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli.app, ["search", "--index", str(tmp_path / "g.npz"), "--model",
                                str(tmp_path / "m.npz"), "--queries", str(tmp_path / "q.npy"),
                                "--k", "5", "--ef", "100", "--out", str(tmp_path / "ids.npy")])  # fmt: skip
    assert r.exit_code == 0, r.output
    ids = np.load(tmp_path / "ids.npy")
    assert ids.shape == (50, 5) and ids.min() >= 0
    # every method saves and searches the same way
    for method in ("laet", "darth", "fixed-ef"):
        r = runner.invoke(cli.app, ["train", "--index", str(tmp_path / "g.npz"), "--queries",
                                    str(tmp_path / "train.npy"), "--ef", "100", "--ks", "5",
                                    "--targets", "0.9", "--method", method,
                                    "--out", str(tmp_path / f"{method}.npz")])  # fmt: skip
        assert r.exit_code == 0, r.output
        r = runner.invoke(cli.app, ["search", "--index", str(tmp_path / "g.npz"), "--model",
                                    str(tmp_path / f"{method}.npz"), "--queries",
                                    str(tmp_path / "q.npy"), "--k", "5", "--target", "0.9",
                                    "--out", str(tmp_path / "ids.npy")])  # fmt: skip
        assert r.exit_code == 0, r.output
        assert np.load(tmp_path / "ids.npy").shape == (50, 5)


def test_bad_vector_file_raises_wildserve_error(tmp_path):
    (tmp_path / "v.npy").write_bytes(b"not numpy")
    r = CliRunner().invoke(
        cli.app, ["build", "--data", str(tmp_path / "v.npy"), "--out", str(tmp_path / "g.npz")]
    )
    assert isinstance(r.exception, VectorFileError)
    assert "v.npy" in str(r.exception) and "\n" not in str(r.exception)
