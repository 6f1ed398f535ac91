"""Fit the per-family efficiencies of ``calibration.py`` on measured Vidur profiles.

Few, physical parameters (achieved fractions of peak, a kernel fixed cost, the compute/memory overlap
exponent), fitted by a deterministic Nelder-Mead on a training subset of models; the held-out models
only check the result. ``wildserve perf fit`` prints the constants to paste into ``calibration.py``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from wildserve.perf.analytic import LAYER_OPS, AnalyticCostModel
from wildserve.perf.calibration import Efficiency
from wildserve.perf.gpus import GPUSpec, get_gpu
from wildserve.perf.models import ModelConfig
from wildserve.perf.profiles import Profile, read_collective

log = logging.getLogger(__name__)

# Vidur's GPU directory -> (our GPU spec, calibration family it defines).
PROFILE_GPUS = {"h100": ("h100", "hopper"), "a100": ("a100", "ampere")}
# Kept out of the fit; they only check it. One GQA 70B and one MHA 20B shape per family.
HOLDOUT = ("meta-llama/Llama-2-70b-hf", "internlm/internlm-20b")
COMPUTE_PARAMS = (
    "gemm_compute",
    "gemm_memory",
    "overlap_p",
    "kernel_s",
    "norm_bw",
    "act_bw",
    "rope_bw",
    "add_bw",
    "emb_bw",
)
FIT_OPS = (*LAYER_OPS, "emb")


@dataclass(frozen=True)
class OpSample:
    """Measured op times (s) of one layer of one model at one token count and TP degree."""

    hf_id: str
    model: ModelConfig
    gpu: GPUSpec
    tp: int
    num_tokens: int
    measured: dict[str, float]


def profile_gpu(profile: Profile) -> GPUSpec:
    return get_gpu(PROFILE_GPUS[profile.gpu][0])


def collect(profiles: Sequence[Profile], stride: int = 1) -> list[OpSample]:
    """One sample per (profile, tp, token count) with every op measured there; ``stride`` thins."""
    out = []
    for prof in profiles:
        cfg, gpu = prof.model_config(), profile_gpu(prof)
        for tp, by_op in prof.curves.items():
            tokens = sorted(set.intersection(*(set(c.num_tokens.tolist()) for c in by_op.values())))
            index = {
                op: dict(zip(c.num_tokens.tolist(), c.seconds.tolist(), strict=True))
                for op, c in by_op.items()
            }
            for m in tokens[::stride]:
                measured = {op: index[op][m] for op in by_op if op in FIT_OPS}
                out.append(OpSample(prof.hf_id, cfg, gpu, tp, m, measured))
    return out


def predict_ops(samples: Sequence[OpSample], eff: Efficiency) -> list[dict[str, float]]:
    """Analytic op times for every sample (one cost model per model, GPU and TP)."""
    models: dict[tuple[str, str, int], AnalyticCostModel] = {}
    out = []
    for s in samples:
        key = (s.hf_id, s.gpu.name, s.tp)
        cm = models.get(key)
        if cm is None:
            cm = models[key] = AnalyticCostModel(s.model, s.gpu, s.tp, eff)
        ops = cm.layer_op_times(s.num_tokens)
        ops["emb"] = cm.embed_time(s.num_tokens)
        out.append(ops)
    return out


def octave_weights(samples: Sequence[OpSample]) -> np.ndarray:
    """Equal total weight per (model, TP, octave of token count): decode-sized batches count as much
    as the densely profiled large ones."""
    keys = [(s.hf_id, s.gpu.name, s.tp, int(math.log2(s.num_tokens))) for s in samples]
    counts: dict[tuple, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    w = np.array([1.0 / counts[k] for k in keys])
    return w / w.sum()


def op_weighted_error(
    samples: Sequence[OpSample], eff: Efficiency, weights: np.ndarray | None = None
) -> float:
    """Weighted mean over samples of sum_op |pred - meas| / sum_op meas (op-attributed L1 error)."""
    errors = np.array(
        [
            sum(abs(pred[op] - t) for op, t in s.measured.items()) / sum(s.measured.values())
            for s, pred in zip(samples, predict_ops(samples, eff), strict=True)
        ]
    )
    if weights is None:
        return float(errors.mean()) if len(errors) else 0.0
    return float(errors @ weights)


# ---- parameter transforms: unconstrained z <-> efficiency field ------------------------------------
def _to_z(name: str, value: float) -> float:
    if name == "kernel_s":
        return math.log(value * 1e6)
    if name == "overlap_p":
        return math.log(value - 1.0)
    return math.log(value / (1.0 - value))  # fractions of peak stay in (0, 1)


def _from_z(name: str, z: float) -> float:
    if name == "kernel_s":
        return math.exp(z) * 1e-6
    if name == "overlap_p":
        return 1.0 + math.exp(z)
    return 1.0 / (1.0 + math.exp(-z))


def nelder_mead(
    f: Callable[[np.ndarray], float],
    x0: np.ndarray,
    step: float = 0.3,
    max_evals: int = 3000,
    tol: float = 1e-7,
) -> tuple[np.ndarray, float]:
    """Plain Nelder-Mead (standard coefficients); deterministic for a given start."""
    n = len(x0)
    simplex = [np.array(x0, dtype=np.float64)]
    for i in range(n):
        x = simplex[0].copy()
        x[i] += step
        simplex.append(x)
    values = [f(x) for x in simplex]
    evals = n + 1
    while evals < max_evals:
        order = np.argsort(values)
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if values[-1] - values[0] < tol:
            break
        centroid = np.mean(simplex[:-1], axis=0)
        reflected = centroid + (centroid - simplex[-1])
        fr = f(reflected)
        evals += 1
        if fr < values[0]:
            expanded = centroid + 2.0 * (centroid - simplex[-1])
            fe = f(expanded)
            evals += 1
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = centroid + 0.5 * (simplex[-1] - centroid)
            fc = f(contracted)
            evals += 1
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:  # shrink towards the best point
                for i in range(1, n + 1):
                    simplex[i] = simplex[0] + 0.5 * (simplex[i] - simplex[0])
                    values[i] = f(simplex[i])
                evals += n
    best = int(np.argmin(values))
    return simplex[best], values[best]


def fit_compute(
    samples: Sequence[OpSample],
    start: Efficiency,
    names: Sequence[str] = COMPUTE_PARAMS,
    rounds: int = 3,
) -> tuple[Efficiency, float]:
    """Minimise :func:`op_weighted_error` over ``names``; restarts refine the simplex."""

    def make(z: np.ndarray) -> Efficiency:
        return replace(start, **{n: _from_z(n, float(v)) for n, v in zip(names, z, strict=True)})

    z = np.array([_to_z(n, getattr(start, n)) for n in names])
    weights = octave_weights(samples)
    err = op_weighted_error(samples, start, weights)
    for r in range(rounds):
        z, err = nelder_mead(
            lambda v: op_weighted_error(samples, make(v), weights), z, step=0.5 / (r + 1)
        )
        log.info("fit round %d: op-weighted error %.4f", r + 1, err)
    return make(z), err


def fit_collective(kind: str, nvlink_bw: float) -> tuple[float, float, float]:
    """(latency s, fraction of NVLink bandwidth, median relative error) of one intra-node collective.

    All-reduce: rows with all workers on one node, ring traffic 2(n-1)/n times the message. Send/recv:
    the two-GPU intra-node rows, traffic 1x.
    """
    s = read_collective(kind)
    if kind == "all_reduce":
        keep = s.devices_per_node == s.num_workers
        factor = 2.0 * (s.num_workers - 1) / s.num_workers
    else:
        keep = s.devices_per_node == 2
        factor = np.ones_like(s.size_bytes)
    traffic, secs = (factor * s.size_bytes)[keep], s.seconds[keep]

    def rel_err(z: np.ndarray) -> float:
        lat, frac = math.exp(z[0]) * 1e-6, 1.0 / (1.0 + math.exp(-z[1]))
        pred = lat + traffic / (nvlink_bw * frac)
        return float(np.mean(np.abs(pred - secs) / secs))

    z, _ = nelder_mead(rel_err, np.array([math.log(20.0), 0.5]), step=0.5)
    lat, frac = math.exp(z[0]) * 1e-6, 1.0 / (1.0 + math.exp(-z[1]))
    pred = lat + traffic / (nvlink_bw * frac)
    return lat, frac, float(np.median(np.abs(pred - secs) / secs))


def efficiency_source(family: str, eff: Efficiency) -> str:
    """The ``Efficiency(...)`` literal to paste into ``calibration.py``."""
    default = Efficiency()
    parts = []
    for f in fields(Efficiency):
        value = getattr(eff, f.name)
        if value != getattr(default, f.name):
            parts.append(f"{f.name}={value:.4g}")
    return f'CALIBRATIONS.add("{family}", Efficiency({", ".join(parts)}))'
