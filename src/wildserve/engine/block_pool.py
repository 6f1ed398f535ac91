"""Paged KV blocks with prefix caching: reference counts, a hash map of cached blocks, eviction.

Modeled on vLLM v1's ``BlockPool``. A block is in exactly one of three states: in use (reference
count > 0), cached and evictable (count 0, holds a prefix hash, owned by the eviction policy), or empty
(count 0, no hash). New blocks come from the empty list first, and only then from evicting the
policy's victim, so an eviction never happens while a block that holds nothing is available.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

from wildserve.engine.kv_events import AllCleared, BlockRemoved, BlockStored, KVEventQueue
from wildserve.kvcache import AccessHints
from wildserve.kvcache.policy import EvictionPolicy, LRUPolicy


class BlockPool:
    """All KV blocks of one instance and the prefix-hash index over them."""

    def __init__(self, num_blocks: int, policy: EvictionPolicy | None = None) -> None:
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        self.num_blocks = num_blocks
        self.policy = policy if policy is not None else LRUPolicy()
        self.policy.resize(num_blocks)
        self.ref_cnt: list[int] = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        self.hash_to_block: dict[int, int] = {}
        # Other in-use or evictable blocks registered under a hash another block already holds (two
        # requests computed the same prefix concurrently). The hash stays cached while any copy lives,
        # which keeps an LRU cache prefix-closed: no cached block ever outlives all its parent's copies.
        self._copies: dict[int, list[int]] = {}
        self._empty: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() gives block 0 first
        self._retired: list[int] = []  # ids handed back by ``shrink``; ``grow`` reuses them first
        self._listeners: list[KVEventQueue] = []  # KV events go to each (engine/kv_events.py)
        # called with each hash whose last copy leaves the GPU (a host-memory tier keeps it)
        self.offload: Callable[[int], None] | None = None
        # hash -> (last access time, its category, accesses so far), in access order, for policies
        # that learn from the access history (hint_kind "history"); older than history_s: dropped
        self._history: OrderedDict[int, tuple[float, int, int]] | None = (
            OrderedDict() if self.policy.hint_kind == "history" else None
        )
        self.num_evictions = 0

    def subscribe(self) -> KVEventQueue:
        """A new listener's queue of KV events, from now on."""
        return KVEventQueue(self._listeners)

    @property
    def has_listeners(self) -> bool:
        return bool(self._listeners)

    def _emit(self, event: BlockStored | BlockRemoved | AllCleared) -> None:
        for queue in self._listeners:
            queue.put(event)

    # ---- queries (no state change) -------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks a new allocation can take: empty ones plus evictable cached ones."""
        return len(self._empty) + len(self.policy)

    @property
    def num_cached(self) -> int:
        return len(self.hash_to_block)

    def usage(self) -> float:
        """Fraction of blocks in use by requests (vLLM's ``kv_cache_usage_perc``)."""
        return 1.0 - self.num_free / self.num_blocks

    def match_prefix(self, block_hashes: Sequence[int]) -> list[int]:
        """Block ids of the longest cached prefix of ``block_hashes`` (stops at the first miss)."""
        lookup = self.hash_to_block.get
        matched: list[int] = []
        for h in block_hashes:
            block_id = lookup(h)
            if block_id is None:
                break
            matched.append(block_id)
        return matched

    def num_matched(self, block_hashes: Sequence[int]) -> int:
        """Length in blocks of the longest cached prefix of ``block_hashes``.

        When the eviction policy keeps the cache prefix-closed (a cached block's parent is always
        cached), presence along one chain is monotone, so a galloping then binary search finds the first
        miss with O(log n) lookups instead of walking the whole match.
        """
        table = self.hash_to_block
        n = len(block_hashes)
        if n < 16 or not self.policy.prefix_closed:
            k = 0
            for h in block_hashes:
                if h not in table:
                    break
                k += 1
            return k
        if block_hashes[0] not in table:
            return 0
        lo, step = 1, 1  # block_hashes[:lo] are all cached
        while True:
            probe = lo + step - 1
            if probe >= n - 1:
                if block_hashes[n - 1] in table:
                    return n
                hi = n - 1
                break
            if block_hashes[probe] not in table:
                hi = probe  # block_hashes[hi] is not cached
                break
            lo = probe + 1
            step *= 2
        while lo < hi:
            mid = (lo + hi) // 2
            if block_hashes[mid] in table:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def num_evictable_in(self, block_ids: Sequence[int]) -> int:
        """How many of these cached blocks sit in the free pool (taking them shrinks it)."""
        ref = self.ref_cnt
        return sum(1 for b in block_ids if ref[b] == 0)

    # ---- transitions -------------------------------------------------------------------------
    def acquire(self, block_ids: Sequence[int], now: float, category: int, depth0: int = 0) -> None:
        """Take cached blocks (a prefix hit) into use by one more request."""
        ref = self.ref_cnt
        evictable = [b for b in block_ids if ref[b] == 0]
        if evictable:
            self.policy.remove_many(evictable)
        for b in block_ids:
            ref[b] += 1
        if self.policy.tracks_access and block_ids:
            hints = self._history_hints(block_ids, now, category)
            self.policy.on_access_many(block_ids, now, depth0, category, -1, hints)

    def allocate(self, num: int, now: float) -> list[int]:
        """Take ``num`` free blocks into use, evicting cached ones only when no empty block is left."""
        if num > self.num_free:
            raise RuntimeError(f"allocate({num}) with only {self.num_free} free blocks")
        if num <= 0:
            return []
        empty = self._empty
        if num <= len(empty):
            out = empty[-num:]
            del empty[-num:]
            out.reverse()
        else:
            out = empty[::-1]
            empty.clear()
            victims = self.policy.pop_many(num - len(out), now)
            self.num_evictions += len(victims)
            for b in victims:
                self._uncache(b)
            out += victims
        ref = self.ref_cnt
        for b in out:
            ref[b] = 1
        return out

    def cache(
        self,
        block_ids: Sequence[int],
        block_hashes: Sequence[int],
        now: float,
        depth0: int,
        category: int,
        parent: int = -1,
        token_ids: Sequence[int] | None = None,
    ) -> None:
        """Register full, in-use blocks under their prefix hashes so later requests can hit them.

        A hash already held by another block keeps that block for lookups; this one is kept as a
        copy, so the hash stays cached until its last copy is evicted. ``parent`` is the request's
        block before the first one (-1 at the root): leaf-only policies track the prefix tree.
        ``token_ids`` (the blocks' tokens, when the request carries them) go into the KV events.
        """
        table = self.hash_to_block
        block_hash = self.block_hash
        stored: list[int] | None = [] if self._listeners else None  # positions newly cached
        filled: list[int] = []
        for i, (b, h) in enumerate(zip(block_ids, block_hashes, strict=True)):
            if block_hash[b] is not None:
                continue
            block_hash[b] = h
            if h in table:
                self._copies.setdefault(h, []).append(b)
            else:
                table[h] = b
                if stored is not None:
                    stored.append(i)
            filled.append(b)
        if stored:
            self._emit_stored(stored, block_ids, block_hashes, parent, token_ids)
        if filled and self.policy.tracks_access:
            if len(filled) == len(block_ids):
                hints = self._history_hints(filled, now, category)
                self.policy.on_access_many(filled, now, depth0, category, parent, hints)
            else:  # some blocks were cached already: report the others one by one
                new = set(filled)
                for depth, b in enumerate(block_ids, start=depth0):
                    if b in new:
                        prev = block_ids[depth - depth0 - 1] if depth > depth0 else parent
                        hints = self._history_hints([b], now, category)
                        self.policy.on_access_many([b], now, depth, category, prev, hints)

    def _emit_stored(
        self,
        positions: list[int],
        block_ids: Sequence[int],
        block_hashes: Sequence[int],
        parent: int,
        token_ids: Sequence[int] | None,
    ) -> None:
        """One ``BlockStored`` per run of consecutive newly cached positions (copies break runs)."""
        per = len(token_ids) // len(block_ids) if token_ids else 0
        start = 0
        while start < len(positions):
            end = start + 1
            while end < len(positions) and positions[end] == positions[end - 1] + 1:
                end += 1
            lo, hi = positions[start], positions[end - 1] + 1
            if lo > 0:
                up: int | None = block_hashes[lo - 1]
            else:
                up = self.block_hash[parent] if parent >= 0 else None
            tokens = token_ids[lo * per : hi * per] if per else ()
            self._emit(BlockStored(list(block_hashes[lo:hi]), up, tokens))
            start = end

    def _history_hints(
        self, block_ids: Sequence[int], now: float, category: int
    ) -> AccessHints | None:
        """Per block: seconds since its hash was last accessed, that access's category and how many
        accesses came before (inf, -1, 0 if none within ``policy.history_s``); notes this access.
        None when the policy does not learn from the history."""
        hist = self._history
        if hist is None:
            return None
        max_age = self.policy.history_s
        ages: list[float] = []
        cats: list[int] = []
        counts: list[int] = []
        for b in block_ids:
            h = self.block_hash[b]
            prev = hist.pop(h, None)
            if prev is None or now - prev[0] > max_age:
                ages.append(math.inf)
                cats.append(-1)
                counts.append(0)
                hist[h] = (now, category, 1)
            else:
                ages.append(now - prev[0])
                cats.append(prev[1])
                counts.append(prev[2])
                hist[h] = (now, category, prev[2] + 1)
        while hist and now - next(iter(hist.values()))[0] > max_age:
            hist.popitem(last=False)
        return AccessHints.make(age_s=ages, prev_category=cats, prior_accesses=counts)

    def release(self, block_ids: Sequence[int], now: float) -> None:
        """Drop one reference to each block, tail first, so deeper blocks are evicted earlier."""
        ref = self.ref_cnt
        block_hash = self.block_hash
        evictable: list[int] = []
        empty = self._empty
        for b in reversed(block_ids):
            r = ref[b] - 1
            ref[b] = r
            if r == 0:
                if block_hash[b] is None:
                    empty.append(b)
                else:
                    evictable.append(b)
        if evictable:
            self.policy.push_many(evictable, now)

    def grow(self, num_new_blocks: int) -> None:
        """Add empty blocks (memory handed over to the KV region at run time), reusing retired ids."""
        if num_new_blocks < 0:
            raise ValueError(f"grow by {num_new_blocks} blocks")
        self.num_blocks += num_new_blocks
        reuse = min(num_new_blocks, len(self._retired))
        fresh = num_new_blocks - reuse
        new_ids = [self._retired.pop() for _ in range(reuse)]
        start = len(self.ref_cnt)
        self.ref_cnt.extend([0] * fresh)
        self.block_hash.extend([None] * fresh)
        new_ids += range(start, start + fresh)
        self.policy.resize(len(self.ref_cnt))
        self._empty[:0] = reversed(new_ids)

    def shrink(self, num_blocks: int, now: float) -> None:
        """Hand ``num_blocks`` free blocks back (e.g. to reloaded weights); never touches blocks in use.

        Empty blocks go first, then cached ones in eviction order; raises if too few are free.
        """
        if num_blocks < 0 or num_blocks >= self.num_blocks:
            raise ValueError(f"shrink by {num_blocks} of {self.num_blocks} blocks")
        # empty blocks first, then evicted cached ones; raises if too few are free
        ids = self.allocate(num_blocks, now)
        ref = self.ref_cnt
        for b in ids:
            ref[b] = 0
        self._retired.extend(ids)
        self.num_blocks -= num_blocks

    @property
    def num_used(self) -> int:
        """Blocks held by requests (reference count > 0)."""
        return self.num_blocks - self.num_free

    def clear_cache(self) -> int:
        """Forget every evictable cached block (vLLM's reset_prefix_cache); returns how many."""
        n = 0
        while len(self.policy):
            b = self.policy.pop(0.0)
            self._uncache(b)
            self._empty.append(b)
            n += 1
        if self._listeners:
            self._emit(AllCleared())
        return n

    def _uncache(self, block_id: int) -> None:
        """Forget an evicted block's hash; the hash leaves the cache with its last copy."""
        h = self.block_hash[block_id]
        self.block_hash[block_id] = None
        copies = self._copies.get(h)
        if self.hash_to_block[h] == block_id:
            if copies:
                self.hash_to_block[h] = copies.pop()
                if not copies:
                    del self._copies[h]
                return
            del self.hash_to_block[h]
            if self._listeners:
                self._emit(BlockRemoved([h]))
            if self.offload is not None:
                self.offload(h)
        else:
            copies.remove(block_id)  # type: ignore[union-attr]
            if not copies:
                del self._copies[h]
