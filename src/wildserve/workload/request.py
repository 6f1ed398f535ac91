"""The one request type every trace reader produces and every consumer reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wildserve.blocks import trace_block_hash_array


@dataclass(slots=True)
class Request:
    """A request as a trace describes it: when it arrives, how long it is, which prefix blocks it has."""

    request_id: int  # unique within one workload, in arrival order after loading
    arrival_s: float  # seconds from the start of the workload
    prompt_tokens: int
    output_tokens: int
    hash_ids: tuple[
        int, ...
    ] = ()  # one id per trace block of the prompt; equal prefix -> equal ids
    block_size: int = (
        0  # tokens per trace block (512 Mooncake, 16 Qwen-Bailian, 64 WEKA); 0: no ids
    )
    session_id: int | None = None  # conversation / agent session, when the trace has one
    category: str | None = None  # request type (Qwen-Bailian 'type', WEKA input type), when known
    turn: int | None = None  # 1-based turn within the session, when known
    parent_id: int | None = None  # request this one continues (Qwen-Bailian parent_chat_id)
    extra: dict = field(default_factory=dict)  # reader-specific fields kept for analysis

    def engine_block_hashes(self, block_size: int) -> list[int]:
        """Chained hashes of this prompt's full ``block_size``-token blocks (empty without ids)."""
        return self.engine_block_hash_array(block_size).tolist()

    def engine_block_hash_array(self, block_size: int) -> np.ndarray:
        """``engine_block_hashes`` as an int64 array (what the engine's block pool takes)."""
        if not self.hash_ids or self.block_size <= 0:
            return np.empty(0, np.int64)
        return trace_block_hash_array(
            self.hash_ids, self.block_size, self.prompt_tokens, block_size
        )
