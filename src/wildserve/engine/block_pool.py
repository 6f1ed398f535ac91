"""Paged KV blocks with prefix caching: reference counts, a hash map of cached blocks, eviction.

Modeled on vLLM v1's ``BlockPool``. A block is in exactly one of three states: in use (reference
count > 0), cached and evictable (count 0, holds a prefix hash, owned by the eviction policy), or empty
(count 0, no hash). New blocks come from the empty list first, and only then from evicting the
policy's victim, so an eviction never happens while a block that holds nothing is available.

Per-block state sits in numpy arrays and the hash index in an int64 open-addressing table
(``engine/hash_index.py``), so that the per-request work (a Mooncake prompt is ~750 blocks) is a few
vectorized or compiled bulk operations rather than a Python loop per block. Every bulk path gives
exactly what the block-by-block loop gives (same blocks, same order, same events); inputs it cannot
prove that for (a hash repeated within what is cached, a hash another block already holds, hashes
with copies) take the block-by-block path (``tests/engine/test_block_pool_reference.py`` checks both
against the loop-per-block pool).
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from wildserve.engine.hash_index import BlockHashIndex, as_hashes
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
        self.ref_cnt = np.zeros(num_blocks, np.int64)
        self.block_hash = np.zeros(num_blocks, np.int64)  # meaningful where has_hash
        self.has_hash = np.zeros(num_blocks, np.bool_)
        self.index = BlockHashIndex(num_blocks)  # hash -> the block lookups find it in
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
        return len(self.index)

    @property
    def hash_to_block(self) -> dict[int, int]:
        """A snapshot of the index as a dict (for inspection and tests; not kept current)."""
        return self.index.to_dict()

    def usage(self) -> float:
        """Fraction of blocks in use by requests (vLLM's ``kv_cache_usage_perc``)."""
        return 1.0 - self.num_free / self.num_blocks

    def match_prefix(self, block_hashes: Sequence[int]) -> list[int]:
        """Block ids of the longest cached prefix of ``block_hashes`` (stops at the first miss)."""
        if not len(block_hashes):
            return []
        return self.index.match_prefix(as_hashes(block_hashes)).tolist()

    def num_matched(self, block_hashes: Sequence[int]) -> int:
        """Length in blocks of the longest cached prefix of ``block_hashes``.

        When the eviction policy keeps the cache prefix-closed (a cached block's parent is always
        cached), presence along one chain is monotone, so a galloping then binary search finds the first
        miss with O(log n) lookups instead of walking the whole match.
        """
        if not len(block_hashes):
            return 0
        return self.index.num_matched(as_hashes(block_hashes), self.policy.prefix_closed)

    def num_evictable_in(self, block_ids: Sequence[int]) -> int:
        """How many of these cached blocks sit in the free pool (taking them shrinks it)."""
        if not len(block_ids):
            return 0
        return int(np.count_nonzero(self.ref_cnt[block_ids] == 0))

    # ---- transitions -------------------------------------------------------------------------
    def acquire(self, block_ids: Sequence[int], now: float, category: int, depth0: int = 0) -> None:
        """Take cached blocks (a prefix hit) into use by one more request."""
        if not len(block_ids):
            return
        ref = self.ref_cnt
        ids = np.asarray(block_ids, np.int64)
        evictable = ids[ref[ids] == 0]
        if len(evictable):
            self.policy.remove_many(evictable)
        ref[ids] += 1  # a request's blocks are distinct blocks
        if self.policy.tracks_access and block_ids:
            hints = self._history_hints(block_ids, now, category)
            self.policy.on_access_many(block_ids, now, depth0, category, -1, hints)

    def allocate(self, num: int, now: float) -> list[int]:
        """Take ``num`` free blocks into use, evicting cached ones only when no empty block is left."""
        return self.allocate_ids(num, now).tolist()

    def allocate_ids(self, num: int, now: float) -> np.ndarray:
        """``allocate`` as an int64 array (what a request's ``block_ids`` take without converting)."""
        if num > self.num_free:
            raise RuntimeError(f"allocate({num}) with only {self.num_free} free blocks")
        if num <= 0:
            return np.empty(0, np.int64)
        empty = self._empty
        if num <= len(empty):
            out = empty[-num:]
            del empty[-num:]
            out.reverse()
            ids = np.array(out, np.int64)
        else:
            out = empty[::-1]
            empty.clear()
            victims = self.policy.pop_many(num - len(out), now)
            self.num_evictions += len(victims)
            evicted = np.array(victims, np.int64)
            self._uncache_many(victims, evicted)
            ids = np.concatenate((np.array(out, np.int64), evicted)) if out else evicted
        self.ref_cnt[ids] = 1
        return ids

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
        num = len(block_ids)
        if num != len(block_hashes):
            raise ValueError(f"cache: {num} blocks but {len(block_hashes)} hashes")
        if num == 0:
            return
        index = self.index
        if isinstance(block_ids, array):  # a request's own: read in place
            ids = np.frombuffer(block_ids, np.int64)
        else:
            if not isinstance(block_ids, list):
                block_ids = list(block_ids)
            ids = np.asarray(block_ids, np.int64)
        has_hash = self.has_hash
        if not has_hash[ids].any():  # every block is new: the loop below in one pass of the index
            # setdefault registers a hash not held yet and returns the holder of one held already
            # (earlier in this request too), exactly as the loop decides between holder and copy
            hashes = as_hashes(block_hashes)
            holders, num_held = index.setdefault_many(hashes, ids)
            has_hash[ids] = True
            self.block_hash[ids] = hashes
            if num_held:
                for i in np.flatnonzero(holders != ids).tolist():
                    self._copies.setdefault(int(hashes[i]), []).append(block_ids[i])
            if self._listeners:
                stored = np.flatnonzero(holders == ids).tolist()
                if stored:
                    self._emit_stored(stored, block_ids, hashes.tolist(), parent, token_ids)
            if self.policy.tracks_access:
                hints = self._history_hints(block_ids, now, category)
                self.policy.on_access_many(block_ids, now, depth0, category, parent, hints)
            return
        block_hash = self.block_hash
        if isinstance(block_hashes, np.ndarray):  # ints for the copies' keys and the events
            block_hashes = block_hashes.tolist()
        stored: list[int] | None = [] if self._listeners else None  # positions newly cached
        filled: list[int] = []
        for i, (b, h) in enumerate(zip(block_ids, block_hashes, strict=True)):
            if has_hash[b]:
                continue
            block_hash[b] = h
            has_hash[b] = True
            if h in index:
                self._copies.setdefault(h, []).append(b)
            else:
                index[h] = b
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
                up = int(self.block_hash[parent]) if parent >= 0 else None
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
            h = int(self.block_hash[b])
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
        if not len(block_ids):
            return
        ref = self.ref_cnt
        if isinstance(block_ids, array):  # a request's own: read in place
            ids = np.frombuffer(block_ids, np.int64)[::-1]
        else:
            ids = np.array(block_ids[::-1], np.int64)
        ref[ids] -= 1
        freed = ids[ref[ids] == 0]
        if len(freed):
            hashed = self.has_hash[freed]
            if not hashed.all():
                self._empty.extend(freed[~hashed].tolist())
                freed = freed[hashed]
            if len(freed):
                self.policy.push_many(freed, now)

    def grow(self, num_new_blocks: int) -> None:
        """Add empty blocks (memory handed over to the KV region at run time), reusing retired ids."""
        if num_new_blocks < 0:
            raise ValueError(f"grow by {num_new_blocks} blocks")
        self.num_blocks += num_new_blocks
        reuse = min(num_new_blocks, len(self._retired))
        fresh = num_new_blocks - reuse
        new_ids = [self._retired.pop() for _ in range(reuse)]
        start = len(self.ref_cnt)
        self.ref_cnt = np.concatenate([self.ref_cnt, np.zeros(fresh, np.int64)])
        self.block_hash = np.concatenate([self.block_hash, np.zeros(fresh, np.int64)])
        self.has_hash = np.concatenate([self.has_hash, np.zeros(fresh, np.bool_)])
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
        self.ref_cnt[ids] = 0
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

    def _uncache_many(self, block_ids: list[int], ids: np.ndarray) -> None:
        """``_uncache`` each block in order; in bulk when nobody listens, for the hashes without copies.

        A hash with no copies has exactly one block, so those blocks leave the index in one pass;
        the others go one by one, in order. Which block ends up holding each hash is the same as in
        the block-by-block loop (only the table's internal slot order can differ, never a lookup).
        ``ids`` is ``block_ids`` as an int64 array.
        """
        if self._listeners or self.offload is not None:
            for b in block_ids:
                self._uncache(b)
            return
        hashes = self.block_hash[ids]
        copies = self._copies
        if copies:
            shared = [i for i, h in enumerate(hashes.tolist()) if h in copies]
            if shared:
                for i in shared:
                    self._uncache(block_ids[i])
                alone = np.ones(len(ids), np.bool_)
                alone[shared] = False
                ids = ids[alone]
                hashes = hashes[alone]
        self.has_hash[ids] = False
        self.index.delete_many(hashes)

    def _uncache(self, block_id: int) -> None:
        """Forget an evicted block's hash; the hash leaves the cache with its last copy."""
        h = int(self.block_hash[block_id])
        self.has_hash[block_id] = False
        copies = self._copies.get(h)
        if self.index[h] == block_id:
            if copies:
                self.index[h] = copies.pop()
                if not copies:
                    del self._copies[h]
                return
            del self.index[h]
            if self._listeners:
                self._emit(BlockRemoved([h]))
            if self.offload is not None:
                self.offload(h)
        else:
            copies.remove(block_id)  # type: ignore[union-attr]
            if not copies:
                del self._copies[h]
