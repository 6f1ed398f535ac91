"""Achieved fractions of datasheet peaks, one set per GPU family (fitted where data exists).

Hopper numbers (fitted on Vidur's H100 profiles) carry over to H200 and H20, Ampere numbers (fitted on
A100) to A800: same tensor cores, memory system and kernels, different peaks. Only the peaks in
``gpus.py`` differ between GPUs of one family.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from wildserve.errors import ConfigError
from wildserve.registry import Registry


@dataclass(frozen=True, slots=True)
class Efficiency:
    """Fractions of peak FLOP/s or bandwidth that each kind of kernel reaches, plus fixed costs."""

    gemm_compute: float = 0.72  # large GEMMs: fraction of dense BF16 peak
    gemm_memory: float = 0.85  # weight-streaming (small-batch) GEMMs: fraction of HBM bandwidth
    overlap_p: float = 2.0  # GEMM time = (compute^p + memory^p)^(1/p); p -> inf is the roofline max
    kernel_s: float = 4e-6  # fixed GPU time of one kernel (launch tail, prologue/epilogue)
    norm_bw: float = 0.35  # RMSNorm: fraction of HBM bandwidth (Vidur's unfused fp32-upcast norm)
    act_bw: float = 0.5  # SiLU-and-multiply
    rope_bw: float = 0.45  # rotary embedding on q and k
    add_bw: float = 0.8  # residual add
    emb_bw: float = 0.15  # embedding row gather
    # Attention kernels are not in the Vidur profiles: these are literature defaults, not fits.
    attn_compute: float = 0.5  # FlashAttention prefill: fraction of dense peak (FA2/FA3 papers)
    attn_memory: float = 0.7  # paged decode attention: fraction of HBM bandwidth reading KV
    # TP all-reduce, fitted on Vidur's H100 DGX network profile: latency + ring traffic / bus bandwidth.
    allreduce_latency_s: float = 30e-6
    allreduce_bw: float = 0.7  # fraction of per-direction NVLink bandwidth reached as bus bandwidth
    # Pipeline-stage send/recv within a node, fitted on the same profile's two-GPU send_recv rows.
    p2p_latency_s: float = 10e-6
    p2p_bw: float = 0.8
    # Host-side cost per step (scheduling, input preparation, sampling, output processing) in vLLM v1.
    # Not measured here: an assumed 1 ms per step plus 5 us per scheduled sequence.
    step_overhead_s: float = 1e-3
    seq_overhead_s: float = 5e-6

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 0 or (f.name not in _MAY_BE_ZERO and value == 0):
                raise ConfigError(f"efficiency field '{f.name}' must be positive, got {value}")
            if f.name.endswith(("_bw", "_compute", "_memory")) and value > 1.0:
                raise ConfigError(
                    f"efficiency field '{f.name}' is a fraction of peak, got {value} > 1"
                )

        if self.overlap_p < 1.0:
            raise ConfigError(f"efficiency field 'overlap_p' must be >= 1, got {self.overlap_p}")


_MAY_BE_ZERO = {
    "kernel_s",
    "allreduce_latency_s",
    "p2p_latency_s",
    "step_overhead_s",
    "seq_overhead_s",
}

CALIBRATIONS: Registry[Efficiency] = Registry("calibration")

# Fitted by `wildserve perf fit` (default: shipped profiles, stride 1, start = the class defaults),
# on every profiled model except fit.HOLDOUT. Collectives were profiled on H100 only, so both families
# use the same fraction of their own NVLink bandwidth. add_bw sits at the 1.0 bound: mid-size
# residual adds are partly served from L2. Fields not listed (attention, host overhead) are defaults.
CALIBRATIONS.add(
    "hopper",  # fitted on H100 profiles; used for h100, h200, h20
    Efficiency(
        gemm_compute=0.7462, gemm_memory=0.8738, overlap_p=1.461, kernel_s=3.193e-06,
        norm_bw=0.4012, act_bw=0.613, rope_bw=0.5688, add_bw=0.9999, emb_bw=0.1966,
        allreduce_latency_s=2.763e-05, allreduce_bw=0.7783, p2p_latency_s=7.589e-06, p2p_bw=0.8028,
    ),
)  # fmt: skip
CALIBRATIONS.add(
    "ampere",  # fitted on A100 profiles; used for a100, a800
    Efficiency(
        gemm_compute=0.7425, gemm_memory=0.7841, overlap_p=1.564, kernel_s=3.826e-06,
        norm_bw=0.3697, act_bw=0.5075, rope_bw=0.4997, add_bw=0.9955, emb_bw=0.1624,
        allreduce_latency_s=2.763e-05, allreduce_bw=0.7783, p2p_latency_s=7.589e-06, p2p_bw=0.8028,
    ),
)  # fmt: skip


def get_calibration(family: str) -> Efficiency:
    return CALIBRATIONS.get(family)
