"""How many KV-cache tokens fit on a GPU once weights and an activation reserve are placed."""

from __future__ import annotations

from dataclasses import dataclass

from wildserve.errors import ConfigError
from wildserve.perf.gpus import GPUSpec
from wildserve.perf.models import ModelConfig

_GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """How vLLM splits device memory; the reserve stands in for its profiling forward pass.

    vLLM runs a dummy forward of ``max_num_batched_tokens`` tokens and keeps its peak activation
    memory, plus CUDA graphs, NCCL buffers and allocator slack, out of the KV cache. We reserve
    ``fixed_reserve_bytes`` plus, per batched token, the live activations of one layer (hidden states
    in and out, residual, QKV, MLP up output and activation output), plus fp32 logits for
    ``max_num_seqs`` sampled rows.
    """

    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    fixed_reserve_bytes: int = 1 * _GIB

    def __post_init__(self) -> None:
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.max_num_batched_tokens < 1 or self.max_num_seqs < 1:
            raise ConfigError("max_num_batched_tokens and max_num_seqs must be >= 1")


@dataclass(frozen=True, slots=True)
class KVCapacity:
    """Per-GPU memory split: what is left for KV after weights and the reserve, in bytes and tokens."""

    usable_bytes: int  # memory * utilization
    param_bytes: int
    reserve_bytes: int
    kv_bytes: int
    kv_bytes_per_token: int
    num_tokens: int


def activation_reserve_bytes(model: ModelConfig, tp: int, mem: MemoryConfig) -> int:
    """Peak activation bytes of one forward pass of ``mem.max_num_batched_tokens`` (see MemoryConfig)."""
    dt = model.dtype_bytes
    width = -(-model.mlp_width // tp)
    if model.is_moe:
        width *= model.num_experts_per_tok
    qkv = (model.num_heads // tp + 2 * model.kv_heads_per_gpu(tp)) * model.head_dim
    per_token = dt * (3 * model.hidden_size + qkv + (model.mlp_up_factor + 1) * width)
    logits = mem.max_num_seqs * model.vocab_size * 4
    return mem.fixed_reserve_bytes + mem.max_num_batched_tokens * per_token + logits


def kv_capacity(
    model: ModelConfig,
    gpu: GPUSpec,
    tp: int = 1,
    mem: MemoryConfig | None = None,
    num_layers: int | None = None,
) -> KVCapacity:
    """KV bytes and tokens per GPU; ``num_layers`` sizes one pipeline stage holding that many layers."""
    mem = mem if mem is not None else MemoryConfig()
    layers = model.num_layers if num_layers is None else num_layers
    if not 1 <= layers <= model.num_layers:
        raise ConfigError(f"num_layers must be in 1..{model.num_layers}, got {num_layers}")
    usable = int(gpu.memory_bytes * mem.gpu_memory_utilization)
    params = model.param_bytes_per_gpu(tp, num_layers)
    reserve = activation_reserve_bytes(model, tp, mem)
    kv = usable - params - reserve
    if kv <= 0:
        raise ConfigError(
            f"model '{model.name}' ({layers} layers, tp={tp}) does not fit on {gpu.name}: "
            f"{params / _GIB:.1f} GiB weights + {reserve / _GIB:.1f} GiB reserve > "
            f"{usable / _GIB:.1f} GiB usable"
        )
    per_token = model.kv_bytes_per_token(tp) * layers // model.num_layers
    return KVCapacity(usable, params, reserve, kv, per_token, kv // per_token)
