"""Step costs measured on a real GPU (``benchmarks/rollout_gpu_calibration.py``), for the simulator.

The file holds, per role, the seconds of one target forward V(batch, width) (``batch`` sequences each
adding ``width`` tokens after ``ctx_tokens`` of KV) and of one draft step D(batch). The simulator asks
``step_time`` / ``decode_run_times``; they interpolate bilinearly in (log batch, width), and
extrapolate linearly in width past the table. Context growth is not modelled (the table was taken at
one context length, stated in the file); that is the calibration's known simplification.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from wildserve.errors import ConfigError
from wildserve.perf.batch import BatchShape

FORMAT = "wildserve-rollout-calibration/1"


@dataclass(frozen=True, slots=True)
class CalibratedCost:
    """A StepCostModel read off a measured table (see the module doc)."""

    batches: np.ndarray  # ascending batch sizes
    widths: np.ndarray  # ascending tokens per sequence
    seconds: np.ndarray  # [len(batches), len(widths)]

    def forward_time(self, batch: float, width: float) -> float:
        lb = np.log(np.clip(batch, self.batches[0], self.batches[-1]))
        per_width = np.array(
            [
                np.interp(lb, np.log(self.batches), self.seconds[:, j])
                for j in range(len(self.widths))
            ]
        )
        if len(self.widths) == 1 or width <= self.widths[-1]:
            return float(np.interp(width, self.widths, per_width))
        slope = (per_width[-1] - per_width[-2]) / (self.widths[-1] - self.widths[-2])
        return float(per_width[-1] + slope * (width - self.widths[-1]))

    def step_time(self, shape: BatchShape) -> float:
        rows = shape.num_prefill_seqs + shape.num_decode_tokens
        if rows == 0:
            return 0.0
        return self.forward_time(rows, shape.num_tokens / rows)

    def decode_run_times(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> np.ndarray:
        return np.full(num_steps, self.forward_time(num_seqs, 1.0))


def _table(path: Path, role: str, body: object) -> CalibratedCost:
    where = f"{path}: models.{role}"
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: expected an object")
    try:
        batches = np.asarray(body["batches"], dtype=float)
        widths = np.asarray(body.get("widths", [1]), dtype=float)
        seconds = np.asarray(body["seconds"], dtype=float).reshape(len(batches), len(widths))
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"{where}: needs batches, widths and a batches x widths seconds table ({exc})"
        ) from exc
    if len(batches) < 1 or np.any(np.diff(batches) <= 0) or np.any(np.diff(widths) <= 0):
        raise ConfigError(f"{where}: batches and widths must be strictly ascending")
    if not np.all(np.isfinite(seconds)) or np.any(seconds <= 0):
        raise ConfigError(f"{where}.seconds: every entry must be a positive number")
    return CalibratedCost(batches, widths, seconds)


def load_calibration(path: Path) -> Callable[[str, int], CalibratedCost]:
    """A CostFactory over the file's roles ("target", "draft-model"); unknown roles are an error."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read calibration ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{path}: field 'format' must be {FORMAT!r}")
    models = data.get("models")
    if not isinstance(models, dict) or "target" not in models:
        raise ConfigError(f"{path}: field 'models' must hold at least 'target'")
    tables = {role: _table(Path(path), role, body) for role, body in models.items()}

    def costs(role: str, gpus: int) -> CalibratedCost:
        if role not in tables:
            raise ConfigError(f"{path}: no calibration for role '{role}' (has {sorted(tables)})")
        return tables[role]

    return costs
