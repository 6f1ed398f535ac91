"""Exact cache state from engines' KV events: which instances hold which prefix blocks.

Engines name blocks by their own hashes (vLLM: sha256 of a pickled or CBOR tuple, seeded per process
unless ``PYTHONHASHSEED`` is set). Like llm-d's KV-cache indexer, this index does not try to reproduce
them: each ``BlockStored`` event carries the blocks' token ids and the parent block's engine hash, so
the router re-chains its own hashes (``wildserve.blocks.token_block_hashes``, the one definition) from
the parent's router hash, and keeps engine hash -> router hashes per instance to apply removals.
Router and engine must use the same tokenizer; the router's block size must divide the engine's.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from wildserve.blocks import ROOT_HASH, token_block_hashes
from wildserve.routing.local import RouterLocalViews
from wildserve.routing.prefix_match import LazyPrefixMatch, match_lengths
from wildserve.routing.view import InstanceView, RouteRequest

log = logging.getLogger(__name__)

# vLLM sends uint64 ints, or bytes with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0
EngineKey = int | bytes


class KVEventIndex:
    """Router block hash -> bit mask of the instances whose KV cache holds that block."""

    def __init__(self, num_instances: int, block_size: int) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self.num_instances = num_instances
        self._holders: dict[int, int] = {}
        self._engine_keys: list[dict[EngineKey, list[int]]] = [{} for _ in range(num_instances)]
        self._counts: list[Counter[int]] = [Counter() for _ in range(num_instances)]
        self.num_orphans = 0  # stored events whose parent block was never seen (joined late)
        self.num_bad_block_size = 0

    # ---- events ----------------------------------------------------------------------------
    def stored(
        self,
        instance: int,
        engine_hashes: Sequence[EngineKey],
        parent: EngineKey | None,
        token_ids: Sequence[int],
        block_size: int,
    ) -> int:
        """Apply one ``BlockStored``; returns the router blocks added (0 if it could not be placed)."""
        bs = self.block_size
        if block_size % bs or len(token_ids) != len(engine_hashes) * block_size:
            self.num_bad_block_size += 1
            log.warning(
                "instance %d: BlockStored with block_size=%d, %d hashes and %d tokens does not fit "
                "router block size %d; ignored",
                instance,
                block_size,
                len(engine_hashes),
                len(token_ids),
                bs,
            )
            return 0
        keys = self._engine_keys[instance]
        if parent is None:
            local_parent = ROOT_HASH
        else:
            chain = keys.get(parent)
            if not chain:
                self.num_orphans += 1
                return 0
            local_parent = chain[-1]
        local = token_block_hashes(token_ids, bs, parent=local_parent)
        per = block_size // bs
        bit = 1 << instance
        holders = self._holders
        counts = self._counts[instance]
        for i, key in enumerate(engine_hashes):
            mine = local[i * per : (i + 1) * per]
            old = keys.get(key)
            if old is not None:  # re-stored without a removal: count it once
                continue
            keys[key] = mine
            for h in mine:
                counts[h] += 1
                holders[h] = holders.get(h, 0) | bit
        return len(local)

    def removed(self, instance: int, engine_hashes: Sequence[EngineKey]) -> None:
        """Apply one ``BlockRemoved``; unknown engine hashes are ignored."""
        keys = self._engine_keys[instance]
        for key in engine_hashes:
            mine = keys.pop(key, None)
            if mine is not None:
                self._drop(instance, mine)

    def cleared(self, instance: int) -> None:
        """``AllBlocksCleared`` (or the engine restarted): the instance holds nothing."""
        counts = self._counts[instance]
        self._drop(instance, list(counts.elements()))
        self._engine_keys[instance].clear()

    def _drop(self, instance: int, hashes: Sequence[int]) -> None:
        counts = self._counts[instance]
        holders = self._holders
        clear = ~(1 << instance)
        for h in hashes:
            c = counts[h] - 1
            if c > 0:
                counts[h] = c
                continue
            del counts[h]
            m = holders.get(h, 0) & clear
            if m:
                holders[h] = m
            else:
                holders.pop(h, None)

    # ---- queries ---------------------------------------------------------------------------
    def match(self, instance: int, block_hashes: Sequence[int]) -> int:
        """Length in blocks of the longest prefix of ``block_hashes`` cached on ``instance``."""
        bit = 1 << instance
        holders = self._holders
        n = 0
        for h in block_hashes:
            if not holders.get(h, 0) & bit:
                break
            n += 1
        return n

    def match_all(self, block_hashes: Sequence[int]) -> list[int]:
        """``match`` for every instance at once (galloping search: engines' LRU caches are
        prefix-closed, evicting a request's deepest blocks first)."""
        return match_lengths(self._holders, block_hashes, self.num_instances)

    def num_blocks(self, instance: int) -> int:
        return len(self._counts[instance])


@dataclass(slots=True)
class PolledLoad:
    """What an engine's ``/metrics`` last said (vLLM gauges)."""

    num_running: int = 0
    num_waiting: int = 0
    kv_usage: float = 0.0


class KVEventViews:
    """Views from KV events (prefix matches) plus polled engine load and the router's own in-flight.

    ``bs`` is the larger of the polled running + waiting and the router's own in-flight count (the
    poll lags; other clients may also load the engine). Queued prefill is the router's estimate, made
    exact at dispatch from the index, and released at the first streamed token.
    """

    def __init__(self, index: KVEventIndex, local: RouterLocalViews) -> None:
        self.index = index
        self.local = local
        self.loads = [PolledLoad() for _ in range(index.num_instances)]
        self._last = LazyPrefixMatch(index.match_all, ())  # the latest decision's matches

    def views(self, request: RouteRequest) -> list[InstanceView]:
        shared = LazyPrefixMatch(self.index.match_all, request.block_hashes)
        self._last = shared
        index_match = self.index.match
        in_flights, queued = self.local.load()
        out = []
        for i, load in enumerate(self.loads):
            in_flight = in_flights[i]
            waiting = max(load.num_waiting, in_flight - load.num_running, 0)
            out.append(
                InstanceView(
                    instance_id=i,
                    num_running=load.num_running,
                    num_waiting=waiting,
                    queued_prefill_tokens=queued[i],
                    kv_usage=load.kv_usage,
                    block_size=self.index.block_size,
                    match_blocks=shared.for_instance(i, functools.partial(index_match, i)),
                )
            )
        return out

    def on_dispatch(self, instance_id: int, request: RouteRequest) -> None:
        instance = instance_id
        last = self._last
        matched = last.known(instance) if last.hashes is request.block_hashes else None
        if matched is None:  # the policy did not match prefixes (or this is another request)
            matched = self.index.match(instance, request.block_hashes)
        cached = matched * self.index.block_size
        self.local.add_in_flight(instance, request, request.prompt_tokens - cached)

    def on_first_token(self, request_id: object) -> None:
        self.local.on_first_token(request_id)

    def on_finish(self, request_id: object) -> None:
        self.local.on_finish(request_id)
