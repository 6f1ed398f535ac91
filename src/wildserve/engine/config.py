"""Engine settings, defined once with their defaults, bounds and help text (vLLM's names)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from wildserve.errors import ConfigError


def _opt(default: object, help: str, **bounds: float) -> object:
    return field(default=default, metadata={"help": help, **bounds})


@dataclass
class EngineConfig:
    """One serving instance's scheduler and KV-cache settings (vLLM v1 defaults)."""

    block_size: int = _opt(16, "tokens per KV block", ge=1)
    max_num_batched_tokens: int = _opt(
        8192, "token budget of one step (prefill chunks + decodes)", ge=1
    )
    max_num_seqs: int = _opt(256, "most requests running at once", ge=1)
    enable_prefix_caching: bool = _opt(True, "reuse KV blocks of identical prompt prefixes")
    enable_chunked_prefill: bool = _opt(True, "split long prompts across steps to fit the budget")
    long_prefill_token_threshold: int = _opt(
        0, "cap on one request's prefill chunk (0: no cap)", ge=0
    )
    gpu_memory_utilization: float = _opt(
        0.9, "fraction of GPU memory the engine may use", gt=0, le=1
    )
    num_gpu_blocks: int | None = _opt(None, "KV blocks; None derives it from GPU memory", ge=1)
    eviction_policy: str = _opt(
        "lru", "which evictable cached block goes first: NAME or NAME:leaf (see wildserve.kvcache)"
    )
    host_memory_gb: float = _opt(
        0.0, "host DRAM per instance keeping KV blocks evicted from the GPU (0: no host tier)", ge=0
    )
    watermark: float = _opt(
        0.0, "fraction of blocks kept free when admitting new requests", ge=0, lt=1
    )
    record_token_times: bool = _opt(
        True, "keep every token's time in the step log (metrics need it; a long-running server not)"
    )
    max_fast_forward_steps: int = _opt(
        1024, "most identical decode steps advanced in one call (0: always one step)", ge=0
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or isinstance(value, (bool, str)):
                continue
            m = f.metadata
            if ("ge" in m and value < m["ge"]) or ("gt" in m and value <= m["gt"]):
                raise ConfigError(f"engine config: {f.name}={value} is too small ({m['help']})")
            if ("le" in m and value > m["le"]) or ("lt" in m and value >= m["lt"]):
                raise ConfigError(f"engine config: {f.name}={value} is too large ({m['help']})")
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.block_size:
            raise ConfigError(
                f"engine config: max_num_batched_tokens={self.max_num_batched_tokens} must be at least "
                f"block_size={self.block_size}"
            )
