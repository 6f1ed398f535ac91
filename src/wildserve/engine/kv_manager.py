"""The scheduler's only door to KV memory: find cached prefix, allocate slots, free.

Failure to allocate is a return value (``False``); the scheduler then preempts and retries, as in
vLLM v1's ``KVCacheManager``. With a host-memory tier, a prefix lookup that runs past the GPU hits
continues in host memory; those blocks count as computed, get fresh GPU blocks when the request is
admitted, and their copy time is charged to the step (``take_load_time``).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

from wildserve.engine.block_pool import BlockPool
from wildserve.engine.request import EngineRequest
from wildserve.kvcache.host import HostKVCache

HOST_HIT = -1  # a block of get_computed_blocks' result that sits in host memory, not on the GPU


def cdiv(a: int, b: int) -> int:
    return -(a // -b)


class KVCacheManager:
    """Per-request block bookkeeping on top of one ``BlockPool``."""

    def __init__(
        self,
        pool: BlockPool,
        block_size: int,
        enable_prefix_caching: bool = True,
        host: HostKVCache | None = None,
    ) -> None:
        self.pool = pool
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.host = host
        self._load_s = 0.0  # host-to-GPU copy time not yet charged to a step
        if host is not None:
            pool.offload = host.store

    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation can take now (empty plus evictable cached ones)."""
        return self.pool.num_free

    def max_hit_blocks(self, req: EngineRequest) -> int:
        """At least one token is always computed: the last one produces the logits."""
        return min(len(req.block_hashes), (req.num_tokens - 1) // self.block_size)

    def get_computed_blocks(self, req: EngineRequest) -> list[int]:
        """Cached blocks of the longest prefix hit, leaving the last token to be computed.

        GPU block ids first, then one ``HOST_HIT`` per further block found in host memory.
        """
        if not self.enable_prefix_caching:
            return []
        hashes = req.block_hashes[: self.max_hit_blocks(req)]
        matched = self.pool.match_prefix(hashes)
        if self.host is not None and len(matched) < len(hashes):
            num_host = self.host.match(hashes[len(matched) :].tolist())
            if num_host:
                matched.extend([HOST_HIT] * num_host)
        return matched

    def take_load_time(self) -> float:
        """Seconds of host-to-GPU copies since the last call (the engine adds them to a step)."""
        t, self._load_s = self._load_s, 0.0
        return t

    def num_cached_tokens(self, block_hashes: Sequence[int] | np.ndarray) -> int:
        """Prefix tokens a request with these block hashes would find cached (no state change)."""
        if not self.enable_prefix_caching:
            return 0
        return self.pool.num_matched(block_hashes) * self.block_size

    def prefix_hit_tokens(self, req: EngineRequest) -> int:
        """Prompt tokens ``req`` would find cached if admitted now: what it need not prefill."""
        return self.num_cached_tokens(req.block_hashes[: self.max_hit_blocks(req)])

    def allocate_slots(
        self,
        req: EngineRequest,
        num_new_tokens: int,
        now: float,
        new_computed_blocks: Sequence[int] = (),
        reserve_blocks: int = 0,
        must_fit_tokens: int = 0,
    ) -> bool:
        """Give ``req`` room for ``num_new_tokens`` more tokens after its (new) cached prefix.

        Returns False, changing nothing, when the blocks do not fit with ``reserve_blocks`` left over,
        or when blocks for ``must_fit_tokens`` tokens in all would not (vLLM's admission check of a
        whole prompt whose prefill is chunked).
        """
        bs = self.block_size
        pool = self.pool
        num_computed = req.num_computed_tokens + len(new_computed_blocks) * bs
        num_required = cdiv(num_computed + num_new_tokens, bs)
        num_new_blocks = num_required - len(req.block_ids) - len(new_computed_blocks)
        if (
            num_new_blocks <= 0
            and not new_computed_blocks
            and reserve_blocks <= 0
            and (not must_fit_tokens or cdiv(must_fit_tokens, bs) <= len(req.block_ids))
        ):
            # most decode steps: the tokens fit the request's last block, so nothing can fail
            # (a pool never has fewer than zero free blocks) and reading the pool is skipped
            if self.enable_prefix_caching:
                self._cache_full_blocks(req, num_computed + num_new_tokens, now)
            return True
        gpu_hits = new_computed_blocks
        num_host = 0
        if new_computed_blocks and new_computed_blocks[-1] == HOST_HIT:
            num_host = new_computed_blocks.count(HOST_HIT)
            gpu_hits = new_computed_blocks[: len(new_computed_blocks) - num_host]
        if gpu_hits:
            free_after_hit = pool.num_free - pool.num_evictable_in(gpu_hits)
        else:
            free_after_hit = pool.num_free
        if num_new_blocks + num_host > free_after_hit - reserve_blocks:
            return False
        if must_fit_tokens:
            num_full = cdiv(must_fit_tokens, bs) - len(req.block_ids) - len(new_computed_blocks)
            if num_full + num_host > free_after_hit - reserve_blocks:
                return False
        if gpu_hits:
            pool.acquire(gpu_hits, now, req.category_id, len(req.block_ids))
            req.block_ids.extend(gpu_hits)
            req.num_cached_blocks = len(req.block_ids)
        if num_host:
            start = len(req.block_ids)
            # copy first: the GPU blocks they land in may evict others into host memory
            self._load_s += self.host.take(req.block_hashes[start : start + num_host].tolist())  # type: ignore[union-attr]
            req.block_ids.frombytes(pool.allocate_ids(num_host, now).tobytes())
        if num_new_blocks > 0:
            req.block_ids.frombytes(pool.allocate_ids(num_new_blocks, now).tobytes())
        if self.enable_prefix_caching:
            self._cache_full_blocks(req, num_computed + num_new_tokens, now)
        return True

    def _cache_full_blocks(self, req: EngineRequest, num_tokens: int, now: float) -> None:
        num_full = min(len(req.block_hashes), num_tokens // self.block_size)
        if num_full <= req.num_cached_blocks:
            return
        start = req.num_cached_blocks
        tokens = req.token_ids
        if tokens is not None and self.pool.has_listeners:  # the KV events carry the tokens
            bs = self.block_size
            tokens = tokens[start * bs : num_full * bs]
        else:
            tokens = None
        self.pool.cache(
            req.block_ids[start:num_full],
            req.block_hashes[start:num_full],
            now,
            start,
            req.category_id,
            req.block_ids[start - 1] if start else -1,
            tokens,
        )
        req.num_cached_blocks = num_full

    def free(self, req: EngineRequest, now: float) -> None:
        """Release every block of ``req``; cached ones become evictable, tail first."""
        self.pool.release(req.block_ids, now)
        req.block_ids = array("q")
        req.num_cached_blocks = 0

    def blocks_needed_for_decode(self, req: EngineRequest, num_steps: int) -> int:
        """New blocks ``req`` needs to decode ``num_steps`` more tokens."""
        return max(
            0, cdiv(req.num_computed_tokens + num_steps, self.block_size) - len(req.block_ids)
        )
