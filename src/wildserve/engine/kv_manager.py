"""The scheduler's only door to KV memory: find cached prefix, allocate slots, free.

Failure to allocate is a return value (``False``); the scheduler then preempts and retries, as in
vLLM v1's ``KVCacheManager``.
"""

from __future__ import annotations

from collections.abc import Sequence

from wildserve.engine.block_pool import BlockPool
from wildserve.engine.request import EngineRequest


def cdiv(a: int, b: int) -> int:
    return -(a // -b)


class KVCacheManager:
    """Per-request block bookkeeping on top of one ``BlockPool``."""

    def __init__(
        self, pool: BlockPool, block_size: int, enable_prefix_caching: bool = True
    ) -> None:
        self.pool = pool
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching

    def max_hit_blocks(self, req: EngineRequest) -> int:
        """At least one token is always computed: the last one produces the logits."""
        return min(len(req.block_hashes), (req.num_tokens - 1) // self.block_size)

    def get_computed_blocks(self, req: EngineRequest) -> list[int]:
        """Cached blocks of the longest prefix hit, leaving the last token to be computed."""
        if not self.enable_prefix_caching:
            return []
        return self.pool.match_prefix(req.block_hashes[: self.max_hit_blocks(req)])

    def num_cached_tokens(self, block_hashes: Sequence[int]) -> int:
        """Prefix tokens a request with these block hashes would find cached (no state change)."""
        if not self.enable_prefix_caching:
            return 0
        return self.pool.num_matched(block_hashes) * self.block_size

    def allocate_slots(
        self,
        req: EngineRequest,
        num_new_tokens: int,
        now: float,
        new_computed_blocks: Sequence[int] = (),
        reserve_blocks: int = 0,
    ) -> bool:
        """Give ``req`` room for ``num_new_tokens`` more tokens after its (new) cached prefix.

        Returns False, changing nothing, when the blocks do not fit with ``reserve_blocks`` left over.
        """
        bs = self.block_size
        pool = self.pool
        num_computed = req.num_computed_tokens + len(new_computed_blocks) * bs
        num_required = cdiv(num_computed + num_new_tokens, bs)
        num_new_blocks = num_required - len(req.block_ids) - len(new_computed_blocks)
        if new_computed_blocks:
            free_after_hit = pool.num_free - pool.num_evictable_in(new_computed_blocks)
        else:
            free_after_hit = pool.num_free
        if num_new_blocks > free_after_hit - reserve_blocks:
            return False
        if new_computed_blocks:
            pool.acquire(new_computed_blocks, now, req.category_id, len(req.block_ids))
            req.block_ids.extend(new_computed_blocks)
            req.num_cached_blocks = len(req.block_ids)
        if num_new_blocks > 0:
            req.block_ids.extend(pool.allocate(num_new_blocks, now))
        if self.enable_prefix_caching:
            self._cache_full_blocks(req, num_computed + num_new_tokens, now)
        return True

    def _cache_full_blocks(self, req: EngineRequest, num_tokens: int, now: float) -> None:
        num_full = min(len(req.block_hashes), num_tokens // self.block_size)
        if num_full <= req.num_cached_blocks:
            return
        start = req.num_cached_blocks
        self.pool.cache(
            req.block_ids[start:num_full],
            req.block_hashes[start:num_full],
            now,
            start,
            req.category_id,
        )
        req.num_cached_blocks = num_full

    def free(self, req: EngineRequest, now: float) -> None:
        """Release every block of ``req``; cached ones become evictable, tail first."""
        self.pool.release(req.block_ids, now)
        req.block_ids = []
        req.num_cached_blocks = 0

    def blocks_needed_for_decode(self, req: EngineRequest, num_steps: int) -> int:
        """New blocks ``req`` needs to decode ``num_steps`` more tokens."""
        return max(
            0, cdiv(req.num_computed_tokens + num_steps, self.block_size) - len(req.block_ids)
        )
