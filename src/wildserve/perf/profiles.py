"""Measured per-operator times (Vidur ``mlp.csv`` profiles): loading, and packing the shipped copies.

A profile holds, for one model on one GPU, the median time in ms of each non-attention operator of
one layer (plus the embedding) at many token counts and TP degrees. Compact gzipped copies of the
H100/A100 profiles ship in ``perf/data/vidur/compute/<gpu>/<org>/<model>.csv.gz`` (MIT, Microsoft; see the
LICENSE next to them), so nothing outside the package is read at run time.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from wildserve.errors import ConfigError, TraceFormatError
from wildserve.perf.models import MODELS, ModelConfig

SHAPE_COLUMNS = (
    "n_head",
    "n_kv_head",
    "n_embd",
    "n_expanded_embd",
    "vocab_size",
    "use_gated_mlp",
    "num_tokens",
    "num_tensor_parallel_workers",
)
_MEDIAN = "time_stats.{}.median"


@dataclass(frozen=True)
class OpCurve:
    """Median time (s) of one op at sorted, distinct token counts; duplicates averaged."""

    num_tokens: np.ndarray  # int64, strictly increasing
    seconds: np.ndarray  # float64


@dataclass(frozen=True)
class Profile:
    """One ``mlp.csv``: which GPU and model, the shape columns, and op curves per TP degree."""

    gpu: str  # directory name in Vidur: "h100" or "a100"
    hf_id: str  # "<org>/<model>" as in Vidur's directory layout
    shape: dict[str, int | bool]
    curves: dict[int, dict[str, OpCurve]]  # tp -> op -> curve
    path: str

    @property
    def ops(self) -> list[str]:
        return sorted({op for by_op in self.curves.values() for op in by_op})

    def model_config(self) -> ModelConfig:
        """The registered model with this ``hf_id``, else one built from the shape columns."""
        for name in MODELS:
            cfg = MODELS.get(name)
            if cfg.hf_id == self.hf_id:
                return cfg
        s = self.shape
        return ModelConfig(
            name=self.hf_id,
            num_layers=1,
            hidden_size=int(s["n_embd"]),
            num_heads=int(s["n_head"]),
            num_kv_heads=int(s["n_kv_head"]),
            head_dim=int(s["n_embd"]) // int(s["n_head"]),
            intermediate_size=int(s["n_expanded_embd"]),
            vocab_size=int(s["vocab_size"]),
            gated_mlp=bool(s["use_gated_mlp"]),
            hf_id=self.hf_id,
        )


def _parse_bool(text: str) -> bool:
    if text in ("True", "true", "1"):
        return True
    if text in ("False", "false", "0"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def read_profile(path: Path | str, gpu: str, hf_id: str) -> Profile:
    """Parse an ``mlp.csv`` (plain or ``.gz``); malformed rows raise naming file, line and field."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in SHAPE_COLUMNS if c not in header]
        if missing:
            raise TraceFormatError(str(path), 1, missing[0], "column missing from header")
        ops = [
            c.split(".")[1] for c in header if c.startswith("time_stats.") and c.endswith(".median")
        ]
        samples: dict[int, dict[str, dict[int, list[float]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        shape: dict[str, int | bool] = {}
        for line, row in enumerate(reader, start=2):
            field = ""
            try:
                field = "num_tensor_parallel_workers"
                tp = int(row[field])
                field = "num_tokens"
                tokens = int(row[field])
                if tp < 1 or tokens < 1:
                    raise ValueError("must be >= 1")
                for col in SHAPE_COLUMNS[:6]:
                    field = col
                    value = _parse_bool(row[col]) if col == "use_gated_mlp" else int(row[col])
                    if shape.setdefault(col, value) != value:
                        raise ValueError(f"differs from earlier rows ({shape[col]})")
                for op in ops:
                    field = _MEDIAN.format(op)
                    text = row[field]
                    if text == "":
                        continue
                    ms = float(text)
                    if not ms >= 0.0:
                        raise ValueError("must be a non-negative number")
                    samples[tp][op][tokens].append(ms * 1e-3)
            except (TypeError, ValueError) as exc:
                raise TraceFormatError(str(path), line, field, str(exc)) from None
    if not samples:
        raise TraceFormatError(str(path), None, None, "no data rows")
    curves: dict[int, dict[str, OpCurve]] = {}
    for tp, by_op in sorted(samples.items()):
        curves[tp] = {}
        for op, by_tokens in by_op.items():
            xs = np.array(sorted(by_tokens), dtype=np.int64)
            ys = np.array([float(np.mean(by_tokens[x])) for x in xs], dtype=np.float64)
            curves[tp][op] = OpCurve(xs, ys)
    return Profile(gpu=gpu, hf_id=hf_id, shape=shape, curves=curves, path=str(path))


def _builtin_root() -> Path:
    return Path(str(resources.files("wildserve.perf") / "data" / "vidur" / "compute"))


def find_profiles(root: Path | str | None = None) -> list[Profile]:
    """All profiles under ``root`` laid out as ``<gpu>/<org>/<model>/mlp.csv`` or the shipped layout."""
    base = Path(root) if root is not None else _builtin_root()
    if not base.is_dir():
        raise ConfigError(f"profile directory not found: {base}")
    found: list[Profile] = []
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base).parts
        if path.name == "mlp.csv" and len(rel) >= 4:
            gpu, org, model = rel[-4], rel[-3], rel[-2]
        elif path.name.endswith(".csv.gz") and len(rel) >= 3:
            gpu, org, model = rel[-3], rel[-2], path.name[: -len(".csv.gz")]
        else:
            continue
        found.append(read_profile(path, gpu, f"{org}/{model}"))
    if not found:
        raise ConfigError(f"no Vidur profiles (mlp.csv or .csv.gz) under {base}")
    return found


def builtin_profile(gpu: str, hf_id: str) -> Profile:
    """The shipped profile of ``hf_id`` measured on ``gpu`` (Vidur's names: "h100", "a100")."""
    path = _builtin_root() / gpu / f"{hf_id}.csv.gz"
    if not path.is_file():
        have = ", ".join(f"{p.gpu}:{p.hf_id}" for p in find_profiles())
        raise ConfigError(f"no shipped profile for {hf_id} on {gpu}; shipped: {have}")
    return read_profile(path, gpu, hf_id)


def pack_profiles(src: Path | str, dst: Path | str | None = None) -> list[Path]:
    """Copy ``src/<gpu>/<org>/<model>/mlp.csv`` to gzipped files keeping median and shape columns."""
    src, dst = Path(src), Path(dst) if dst is not None else _builtin_root()
    written = []
    for path in sorted(src.rglob("mlp.csv")):
        gpu, org, model = path.relative_to(src).parts[-4:-1]
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            keep = [c for c in reader.fieldnames or [] if c.endswith(".median")]
            keep += [c for c in SHAPE_COLUMNS if c in (reader.fieldnames or [])]
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(keep)
            for row in reader:
                writer.writerow(
                    [_compact(row[c]) if c.endswith(".median") else row[c] for c in keep]
                )
        out = dst / gpu / org / f"{model}.csv.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, gzip.compress(buf.getvalue().encode(), compresslevel=9, mtime=0))
        written.append(out)
    return written


def _compact(text: str) -> str:
    """Medians are multiples of 0.5 us; 6 decimals of ms keep them exactly."""
    return "" if text == "" else repr(round(float(text), 6))


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- network profiles (collectives), used only to fit the all-reduce and send/recv constants -------
_NETWORK_COLUMNS = ("num_workers", "devices_per_node", "size")


@dataclass(frozen=True)
class CollectiveSamples:
    """Median seconds of one collective against message size (bytes), workers and workers per node."""

    num_workers: np.ndarray
    devices_per_node: np.ndarray
    size_bytes: np.ndarray
    seconds: np.ndarray


def _network_root() -> Path:
    return Path(str(resources.files("wildserve.perf") / "data" / "vidur" / "network"))


def read_collective(
    kind: str, network: str = "h100_dgx", root: Path | str | None = None
) -> CollectiveSamples:
    """Samples of ``kind`` ("all_reduce" or "send_recv") from a Vidur network profile."""
    base = Path(root) if root is not None else _network_root()
    path = base / network / f"{kind}.csv.gz"
    if not path.is_file():
        path = base / network / f"{kind}.csv"
    if not path.is_file():
        raise ConfigError(f"network profile not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    cols: dict[str, list[float]] = defaultdict(list)
    median = _MEDIAN.format(kind)
    with opener(path, "rt", newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            for col in (*_NETWORK_COLUMNS, median):
                try:
                    cols[col].append(float(row[col]))
                except (KeyError, TypeError, ValueError):
                    raise TraceFormatError(
                        str(path), line, col, "missing or not a number"
                    ) from None
    return CollectiveSamples(
        num_workers=np.array(cols["num_workers"], dtype=np.int64),
        devices_per_node=np.array(cols["devices_per_node"], dtype=np.int64),
        size_bytes=np.array(cols["size"], dtype=np.float64),
        seconds=np.array(cols[median], dtype=np.float64) * 1e-3,
    )


def pack_network(src: Path | str, dst: Path | str | None = None) -> list[Path]:
    """Copy ``src/<network>/{all_reduce,send_recv}.csv`` keeping medians and size columns, gzipped."""
    src, dst = Path(src), Path(dst) if dst is not None else _network_root()
    written = []
    for path in sorted(src.glob("*/*.csv")):
        kind = path.stem
        median = _MEDIAN.format(kind)
        with open(path, newline="") as fh:
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow([median, *_NETWORK_COLUMNS])
            for row in csv.DictReader(fh):
                writer.writerow([_compact(row[median]), *(row[c] for c in _NETWORK_COLUMNS)])
        out = dst / path.parent.name / f"{kind}.csv.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, gzip.compress(buf.getvalue().encode(), compresslevel=9, mtime=0))
        written.append(out)
    return written
