"""Finished simulation runs kept on disk, keyed by a fingerprint of everything that shapes the result.

An interrupted experiment resumes where it stopped. The fingerprint covers the run's parameters and the
source of every package that can change a simulated number (engine, perf, routing, sim, workload,
kvcache), so results from different code are never mixed.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from wildserve.io import atomic_write, atomic_write_bytes
from wildserve.metrics import RequestMetrics

_RESULT_PACKAGES = (
    "engine",
    "perf",
    "routing",
    "sim",
    "workload",
    "kvcache",
    "overload",
    "blocks.py",
    "metrics.py",
)


@cache
def source_digest() -> str:
    """Hash of the source files that can change a simulated result."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for name in _RESULT_PACKAGES:
        path = root / name
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for f in files:
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def fingerprint(params: dict[str, Any]) -> str:
    blob = orjson.dumps(
        params, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY, default=str
    )
    return hashlib.sha256(blob + source_digest().encode()).hexdigest()[:24]


def cache_dir_option(value: Path | str | None) -> Path | None:
    """``--cache-dir``: a folder, or ``none`` / ``off`` / empty for no cache (not a folder so named)."""
    if value is None or str(value).strip().lower() in ("", "none", "off"):
        return None
    return Path(value)


class RunCache:
    """One JSON summary and one compressed metrics file per finished run."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def _paths(self, fp: str) -> tuple[Path, Path]:
        return self.dir / f"{fp}.json", self.dir / f"{fp}.npz"

    def get(self, fp: str) -> tuple[dict, RequestMetrics | None] | None:
        """The run's summary and its metrics (``None`` for a run that kept none); ``None``: a miss.

        The summary is written last, so its presence means the run finished and was stored whole.
        """
        summary_path, metrics_path = self._paths(fp)
        if not summary_path.exists():
            return None
        metrics = None
        if metrics_path.exists():
            with np.load(metrics_path) as data:
                arrays = {k: data[k] for k in data.files if k != "num_aborted"}
                metrics = RequestMetrics(**arrays, num_aborted=int(data["num_aborted"]))
        return orjson.loads(summary_path.read_bytes()), metrics

    def __len__(self) -> int:
        # "[!.]": not the hidden temporary file of a write that a kill interrupted (atomic_write)
        return sum(1 for _ in self.dir.glob("[!.]*.json")) if self.dir.is_dir() else 0

    def put(self, fp: str, summary: Any, metrics: RequestMetrics | None = None) -> None:
        summary_path, metrics_path = self._paths(fp)
        if metrics is None:
            metrics_path.unlink(missing_ok=True)
            atomic_write_bytes(summary_path, _dumps(summary))
            return
        fields = {
            k: getattr(metrics, k)
            for k in RequestMetrics.__dataclass_fields__
            if k != "num_aborted"
        }

        def write(tmp: Path) -> None:
            with tmp.open("wb") as fh:
                np.savez_compressed(fh, num_aborted=np.array(metrics.num_aborted), **fields)

        atomic_write(metrics_path, write)
        atomic_write_bytes(summary_path, _dumps(summary))


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


MISSING = {"missing": True, "cpu_s": 0.0}  # what a read-only cache returns for a run not yet done


class ReadOnlyRunCache(RunCache):
    """A run cache that never computes: a miss reads as a ``MISSING`` summary (render what is done).

    The sweep runner runs nothing for such a miss; the run's value is the ``MISSING`` summary.
    """

    def get(self, fp: str) -> tuple[dict, RequestMetrics | None]:  # type: ignore[override]
        hit = super().get(fp)
        return hit if hit is not None else (dict(MISSING), None)

    def put(self, fp: str, summary: Any, metrics: RequestMetrics | None = None) -> None:
        raise AssertionError("a read-only run cache is never written")
