"""Where the rollout simulator's acceptance comes from: measured per-request traces, or Betas.

A trace is one measured response: for a lookup drafter the exact accepted depth at every position
and draft budget (``acceptance.replay_depths``), for a model drafter the per-position overlap beta
(``acceptance.overlap``). Each simulated request draws, per drafter, one measured trace and a random
starting offset, and walks it cyclically: position t of a (longer) simulated response reads the
trace at (offset + t) mod length, which keeps each request's own level and its runs of easy and
hard stretches. The Beta mode (a constant rate per request drawn from a Beta) is kept only as a
sensitivity sweep.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from wildserve.errors import ConfigError

DEPTH, BETA = "depth", "beta"
# measured drafter name in a rollout-train run -> (simulator name, kind, runs on a GPU)
MEASURED = {
    "history": ("history", DEPTH, False),
    "ngram": ("ngram", DEPTH, False),
    "quant3": ("draft-model", BETA, True),
}


@dataclass(frozen=True, slots=True)
class DrafterSpec:
    name: str
    kind: str  # DEPTH (exact accepted depth per position and budget) or BETA (accept rate)
    uses_gpu: bool  # a model drafter (its time comes from the cost factory) or a free lookup


@dataclass(slots=True)
class _Pool:
    """One drafter's traces, concatenated: values [positions] (beta) or [positions, budget]."""

    values: np.ndarray
    starts: np.ndarray
    lens: np.ndarray


@dataclass(slots=True)
class AcceptanceTable:
    """Per-drafter trace pools; ``assign`` binds traces to the simulated requests of one step."""

    drafters: tuple[DrafterSpec, ...]
    pools: list[_Pool]
    label: str = ""
    choice: list[np.ndarray] = field(default_factory=list)  # per drafter: trace of each request
    offset: list[np.ndarray] = field(default_factory=list)  # per drafter: start offset per request

    @classmethod
    def from_traces(
        cls,
        drafters: Sequence[DrafterSpec],
        traces: Sequence[Sequence[np.ndarray]],
        label: str = "",
    ) -> AcceptanceTable:
        """``traces[j]`` is drafter j's list of per-request arrays."""
        pools = []
        for d, arrays in zip(drafters, traces, strict=True):
            arrays = [
                np.asarray(a, dtype=np.float32 if d.kind == BETA else np.int16) for a in arrays
            ]
            arrays = [a for a in arrays if len(a)]
            if not arrays:
                raise ConfigError(f"drafter '{d.name}': no non-empty acceptance trace")
            lens = np.array([len(a) for a in arrays], dtype=np.int64)
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
            pools.append(_Pool(np.concatenate(arrays), starts, lens))
        return cls(tuple(drafters), pools, label)

    @classmethod
    def beta(
        cls,
        means: dict[str, tuple[float, float, bool]],
        num_traces: int,
        rng: np.random.Generator,
    ) -> AcceptanceTable:
        """Sensitivity mode: per request a constant rate ~ Beta(mean, concentration) per drafter;
        ``means[name] = (mean, concentration, uses_gpu)``."""
        specs, traces = [], []
        for name, (mean, conc, gpu) in means.items():
            if not 0 < mean < 1:
                raise ConfigError(f"Beta mean of '{name}' must be in (0, 1), got {mean}")
            specs.append(DrafterSpec(name, BETA, gpu))
            draws = np.clip(rng.beta(mean * conc, (1 - mean) * conc, num_traces), 0.0, 0.99)
            traces.append([np.array([a]) for a in draws])
        return cls.from_traces(
            specs, traces, label="beta:" + ",".join(f"{k}={v[0]}" for k, v in means.items())
        )

    def index(self, name: str) -> int:
        for j, d in enumerate(self.drafters):
            if d.name == name:
                return j
        raise ConfigError(f"no drafter '{name}' in acceptance table {self.label!r}")

    @property
    def max_budget(self) -> int:
        return min(
            (
                p.values.shape[1]
                for d, p in zip(self.drafters, self.pools, strict=True)
                if d.kind == DEPTH
            ),
            default=1 << 30,
        )

    def assign(self, num_requests: int, rng: np.random.Generator) -> AcceptanceTable:
        """A copy whose requests each hold one random trace (and offset) per drafter."""
        choice, offset = [], []
        for pool in self.pools:
            c = rng.integers(0, len(pool.lens), num_requests)
            choice.append(c)
            offset.append(rng.integers(0, 1 << 30, num_requests) % pool.lens[c])
        return AcceptanceTable(self.drafters, self.pools, self.label, choice, offset)

    def _positions(self, j: int, rows: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
        """Flat indices [len(rows), width] of positions pos .. pos + width - 1 of each request."""
        pool = self.pools[j]
        c = self.choice[j][rows]
        steps = pos[:, None] + self.offset[j][rows, None] + np.arange(width)
        return pool.starts[c, None] + steps % pool.lens[c, None]

    def accepted(
        self,
        which: np.ndarray,
        rows: np.ndarray,
        pos: np.ndarray,
        n: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Accepted drafts when request ``rows[i]`` at response position ``pos[i]`` verifies
        ``n[i]`` tokens from drafter ``which[i]``."""
        out = np.zeros(len(rows), dtype=np.int64)
        for j, d in enumerate(self.drafters):
            m = (which == j) & (n > 0)
            if not m.any():
                continue
            if d.kind == DEPTH:
                flat = self._positions(j, rows[m], pos[m], 1)[:, 0]
                out[m] = np.minimum(self.pools[j].values[flat, n[m] - 1], n[m])
            else:
                width = int(n[m].max())
                beta = self.pools[j].values[self._positions(j, rows[m], pos[m], width)]
                ok = (rng.random(beta.shape) < beta) & (np.arange(width) < n[m, None])
                out[m] = np.cumprod(ok, axis=1).sum(1)
        return out

    def mean_rate(self, j: int, budget: int) -> float:
        """Pooled per-token rate of drafter j at ``budget`` (for reports and planner priors)."""
        pool = self.pools[j]
        if self.drafters[j].kind == BETA:
            return float(pool.values.mean())
        return float(np.minimum(pool.values[:, budget - 1], budget).mean() / budget)


def load_measured(
    run: Path,
    temperature: str = "T1",
    steps: Sequence[int] | None = None,
    min_len: int = 16,
) -> AcceptanceTable:
    """Traces of a ``wildserve rollout-train`` run folder (``steps``: 1-based step numbers)."""
    bodies = load_steps(run)
    chosen = [b for b in bodies if steps is None or b["record"]["step"] in set(steps)]
    if not chosen:
        raise ConfigError(f"{run}: none of steps {list(steps or [])} were saved")
    specs, traces = [], []
    for measured, (name, kind, gpu) in MEASURED.items():
        arrays = [
            np.asarray(tr[measured])
            for b in chosen
            for tr in b["traces"].get(temperature, [])
            if measured in tr and tr["len"] >= min_len
        ]
        if arrays:
            specs.append(DrafterSpec(name, kind, gpu))
            traces.append(arrays)
    if not specs:
        raise ConfigError(f"{run}: no traces at temperature {temperature}")
    label = f"{run.name}:{temperature}:steps {chosen[0]['record']['step']}-{chosen[-1]['record']['step']}"
    return AcceptanceTable.from_traces(specs, traces, label)


def load_steps(out: Path) -> list[dict[str, Any]]:
    """Every saved step of a run folder (records, responses and traces), in order."""
    files = sorted((out / "steps").glob("step_*.json.gz"))
    if not files:
        raise ConfigError(f"{out}: no steps/step_*.json.gz (not a rollout-train run folder)")
    return [orjson.loads(gzip.decompress(f.read_bytes())) for f in files]
