"""Datasheet numbers of the GPUs the cost model knows; efficiencies live in ``calibration.py``."""

from __future__ import annotations

from dataclasses import dataclass

from wildserve.registry import Registry

_MIB = 1024 * 1024
_TERA = 1e12
_GIGA = 1e9


@dataclass(frozen=True, slots=True)
class GPUSpec:
    """Peak numbers of one GPU. Bandwidths are per direction; FLOP/s are dense (no 2:4 sparsity).

    ``family`` names the calibration (fitted on Vidur's H100 or A100 profiles) that the GPU uses.
    """

    name: str
    peak_flops: float  # dense BF16 tensor-core FLOP/s
    hbm_bw: float  # bytes/s
    memory_bytes: int  # total device memory as nvidia-smi reports it
    nvlink_bw: float  # bytes/s per direction per GPU (half the marketed bidirectional figure)
    pcie_bw: float  # bytes/s per direction, x16 link
    family: str  # "hopper" or "ampere"
    source: str = ""


GPUS: Registry[GPUSpec] = Registry("gpu")


def get_gpu(name: str) -> GPUSpec:
    return GPUS.get(name)


def _add(gpu: GPUSpec) -> None:
    GPUS.add(gpu.name, gpu)


_add(
    GPUSpec(
        "h100", 989.4 * _TERA, 3.35e12, 81559 * _MIB, 450 * _GIGA, 64 * _GIGA, "hopper",
        source="NVIDIA H100 Tensor Core GPU datasheet, SXM5 column: BF16 1,979 TFLOPS with sparsity, "
        "3.35 TB/s HBM3, NVLink 900 GB/s, PCIe Gen5 128 GB/s (both bidirectional); 81559 MiB from "
        "nvidia-smi on 'H100 80GB HBM3'.",
    )
)  # fmt: skip
_add(
    GPUSpec(
        "h200", 989.4 * _TERA, 4.8e12, 143771 * _MIB, 450 * _GIGA, 64 * _GIGA, "hopper",
        source="NVIDIA H200 Tensor Core GPU datasheet, SXM column: BF16 1,979 TFLOPS with sparsity, "
        "141 GB HBM3e at 4.8 TB/s, NVLink 900 GB/s, PCIe Gen5 128 GB/s; 143771 MiB from nvidia-smi.",
    )
)  # fmt: skip
_add(
    GPUSpec(
        "h20", 148 * _TERA, 4.0e12, 97871 * _MIB, 450 * _GIGA, 64 * _GIGA, "hopper",
        source="NVIDIA HGX H20 product brief (China-market Hopper): BF16 148 TFLOPS dense, 96 GB HBM3 "
        "at 4.0 TB/s, NVLink 900 GB/s, PCIe Gen5 128 GB/s; 97871 MiB from nvidia-smi.",
    )
)  # fmt: skip
_add(
    GPUSpec(
        "a100", 312 * _TERA, 2.039e12, 81920 * _MIB, 300 * _GIGA, 32 * _GIGA, "ampere",
        source="NVIDIA A100 Tensor Core GPU datasheet, 80GB SXM column: BF16 312 TFLOPS dense, "
        "2,039 GB/s HBM2e, NVLink 600 GB/s, PCIe Gen4 64 GB/s (both bidirectional).",
    )
)  # fmt: skip
_add(
    GPUSpec(
        "a800", 312 * _TERA, 2.039e12, 81920 * _MIB, 200 * _GIGA, 32 * _GIGA, "ampere",
        source="NVIDIA A800 80GB SXM datasheet: as A100 80GB SXM but NVLink 400 GB/s bidirectional "
        "(export-control variant).",
    )
)  # fmt: skip
