"""Typed KV-cache events of one engine's block pool, as vLLM's ``BlockStored``/``BlockRemoved``/
``AllBlocksCleared`` (``vllm/distributed/kv_events.py``), before any wire format.

The pool queues an event when a prefix hash enters the cache (its first copy is registered), when it
leaves (its last copy is evicted) and when the cache is reset. Any number of listeners subscribe
(``Engine.kv_events()``): each gets its own queue and drains it whenever it needs the cache state
current (a router's view source before a decision, the emulated server after each step), in the
order the pool changed. A pool nobody listens to builds no event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BlockStored:
    """Consecutive blocks of one request's prefix chain entered the cache."""

    block_hashes: Sequence[int]
    parent_block_hash: int | None  # the block before the first one (None: the chain's root)
    token_ids: Sequence[int]  # their tokens, block by block; empty when the request carries none


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    """Blocks whose last copy was evicted (or dropped by a reset)."""

    block_hashes: Sequence[int]


@dataclass(frozen=True, slots=True)
class AllCleared:
    """The prefix cache was reset. The ``BlockRemoved`` of every block the reset dropped came first;
    blocks held by running requests stay cached (vLLM refuses a reset while any are)."""


KVEvent = BlockStored | BlockRemoved | AllCleared


class KVEventQueue:
    """One listener's queue of events; ``drain`` takes what arrived since the last call."""

    __slots__ = ("_events", "_listeners")

    def __init__(self, listeners: list[KVEventQueue]) -> None:
        self._events: list[KVEvent] = []
        self._listeners = listeners
        listeners.append(self)

    def put(self, event: KVEvent) -> None:
        self._events.append(event)

    def drain(self) -> list[KVEvent]:
        out, self._events = self._events, []
        return out

    def close(self) -> None:
        """Stop listening (the pool stops queueing for this listener)."""
        if self in self._listeners:
            self._listeners.remove(self)
        self._events = []
