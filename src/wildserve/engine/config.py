"""Engine settings, defined once with their defaults, bounds and help text (vLLM's names)."""

from __future__ import annotations

from dataclasses import dataclass

from wildserve.config import check_bounds, option
from wildserve.errors import ConfigError


@dataclass
class EngineConfig:
    """One serving instance's scheduler and KV-cache settings (vLLM v1 defaults)."""

    block_size: int = option(16, "tokens per KV block", ge=1)
    max_num_batched_tokens: int = option(
        8192, "token budget of one step (prefill chunks + decodes)", ge=1
    )
    max_num_seqs: int = option(256, "most requests running at once", ge=1)
    enable_prefix_caching: bool = option(True, "reuse KV blocks of identical prompt prefixes")
    enable_chunked_prefill: bool = option(True, "split long prompts across steps to fit the budget")
    long_prefill_token_threshold: int = option(
        0, "cap on one request's prefill chunk (0: no cap)", ge=0
    )
    gpu_memory_utilization: float = option(
        0.9, "fraction of GPU memory the engine may use", gt=0, le=1
    )
    num_gpu_blocks: int | None = option(None, "KV blocks; None derives it from GPU memory", ge=1)
    eviction_policy: str = option(
        "lru", "which evictable cached block goes first: NAME or NAME:leaf (see wildserve.kvcache)"
    )
    host_memory_gb: float = option(
        0.0, "host DRAM per instance keeping KV blocks evicted from the GPU (0: no host tier)", ge=0
    )
    watermark: float = option(
        0.0, "fraction of blocks kept free when admitting new requests", ge=0, lt=1
    )
    scheduler_reserve_full_isl: bool = option(
        True,
        "admit a waiting request only if KV blocks for its whole prompt are free, not just for its "
        "first chunk (vLLM's default since it chunks prefills; checked against vLLM 0.32)",
    )
    record_token_times: bool = option(
        True, "keep every token's time in the step log (metrics need it; a long-running server not)"
    )
    max_fast_forward_steps: int = option(
        1024, "most identical decode steps advanced in one call (0: always one step)", ge=0
    )

    def __post_init__(self) -> None:
        check_bounds(self, "engine config")
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.block_size:
            raise ConfigError(
                f"engine config: max_num_batched_tokens={self.max_num_batched_tokens} must be at least "
                f"block_size={self.block_size}"
            )
