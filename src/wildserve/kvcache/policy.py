"""The eviction-policy interface over evictable cached blocks, and vLLM v1's LRU.

A policy only ever sees blocks that hold a reusable prefix and have no running request using them
(reference count 0). The block pool tells it when a block becomes evictable (``push``), when a cache
hit takes it back (``remove``) and asks it for a victim (``pop``); ``on_access`` reports every hit or
fill so frequency- or workload-aware policies can learn. Time is passed in, never read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import ClassVar

from wildserve.registry import Registry


class EvictionPolicy(ABC):
    """Chooses which evictable cached block to drop when the pool needs a free block."""

    name: ClassVar[str]
    tracks_access: ClassVar[bool] = True  # False: the pool may skip on_access calls (a hot path)
    # True when a cached block can never outlive every copy of its parent (prefix lookups may then
    # binary-search instead of walking)
    prefix_closed: ClassVar[bool] = False

    def on_access(self, block_id: int, now: float, depth: int, category: int) -> None:  # noqa: B027
        """A cached block was hit or filled at ``now``; ``depth`` is its index in the prefix."""

    @abstractmethod
    def push(self, block_id: int, now: float) -> None:
        """The block's last user released it: it is now a candidate for eviction."""

    @abstractmethod
    def remove(self, block_id: int) -> None:
        """A cache hit took the block back into use: it is no longer a candidate."""

    @abstractmethod
    def pop(self, now: float) -> int:
        """Remove and return the block to evict; only called when ``len(self) > 0``."""

    @abstractmethod
    def __len__(self) -> int: ...

    def push_many(self, block_ids: list[int], now: float) -> None:
        """``push`` each block in order; policies override this with a bulk operation."""
        for b in block_ids:
            self.push(b, now)

    def pop_many(self, num: int, now: float) -> list[int]:
        """``pop`` ``num`` victims in eviction order."""
        return [self.pop(now) for _ in range(num)]


EVICTION_POLICIES: Registry[type[EvictionPolicy]] = Registry("eviction policy")


@EVICTION_POLICIES.register("lru")
class LRUPolicy(EvictionPolicy):
    """vLLM v1's free-block queue: evict the block released longest ago.

    The pool pushes a finished request's blocks tail first, so among blocks released together the
    deepest (least shareable) go first, as vLLM's reversed free order does.
    """

    name = "lru"
    tracks_access = False
    # Each request releases its blocks tail first, so a parent copy always sits behind its child in
    # the queue (or is in use): children go first.
    prefix_closed = True

    def __init__(self) -> None:
        self._queue: OrderedDict[int, None] = OrderedDict()

    def push(self, block_id: int, now: float) -> None:
        self._queue[block_id] = None

    def remove(self, block_id: int) -> None:
        del self._queue[block_id]

    def pop(self, now: float) -> int:
        return self._queue.popitem(last=False)[0]

    def push_many(self, block_ids: list[int], now: float) -> None:
        self._queue.update(dict.fromkeys(block_ids))

    def pop_many(self, num: int, now: float) -> list[int]:
        popitem = self._queue.popitem
        return [popitem(False)[0] for _ in range(num)]

    def __len__(self) -> int:
        return len(self._queue)


def make_eviction_policy(name: str, **kwargs: object) -> EvictionPolicy:
    """Build a policy by its registry name."""
    return EVICTION_POLICIES.get(name)(**kwargs)
