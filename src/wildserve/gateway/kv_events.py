"""vLLM's KV-event wire format: the msgspec structs, a ZMQ publisher and an asyncio subscriber.

Matches ``vllm/distributed/kv_events.py`` after vllm-project/vllm#42892: each ZMQ message is three
frames ``(topic, seq as 8 bytes big-endian, msgpack payload)``; the payload is a ``KVEventBatch``
encoded as an array ``[ts, events, data_parallel_rank]``; each event is a map tagged by
``"type": "BlockStored" | "BlockRemoved" | "AllBlocksCleared"`` (fields equal to their default are
omitted). Block hashes are uint64 ints (``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1``, the default) or
bytes. The subscriber also decodes the older layout (vLLM <= 0.23) where each event is a tagged array.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from wildserve.gateway.serve import cancel_and_wait
from wildserve.routing.kv_index import KVEventIndex

log = logging.getLogger(__name__)

UINT64 = (1 << 64) - 1


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


class KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):
    """Base class of the events; ``tag=True`` puts the class name under ``"type"``."""


class BlockStored(KVCacheEvent):
    block_hashes: list[int | bytes]
    parent_block_hash: int | bytes | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[Any] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[int | bytes]
    medium: str | None
    group_idx: int | None = None


class AllBlocksCleared(KVCacheEvent):
    pass


class KVEventBatch(EventBatch):
    events: list[BlockStored | BlockRemoved | AllBlocksCleared]


MEDIUM_GPU = "GPU"
_ENCODER = msgspec.msgpack.Encoder()


def encode_batch(
    events: Sequence[KVCacheEvent], ts: float | None = None, dp_rank: int = 0
) -> bytes:
    return _ENCODER.encode(
        KVEventBatch(
            ts=time.time() if ts is None else ts, events=list(events), data_parallel_rank=dp_rank
        )
    )


def apply_payload(index: KVEventIndex, instance: int, payload: bytes) -> int:
    """Decode one batch (current or legacy layout) and apply it; returns the events applied."""
    batch = msgspec.msgpack.decode(payload)
    if isinstance(batch, dict):
        events = batch.get("events", [])
    elif isinstance(batch, list) and len(batch) >= 2:
        events = batch[1]
    else:
        raise ValueError("KV event batch is neither [ts, events, ...] nor a map")
    n = 0
    for ev in events:
        if isinstance(ev, dict):
            kind = ev.get("type")
            get = ev.get
        elif isinstance(ev, list) and ev:
            kind = ev[0]
            get = _legacy_getter(kind, ev)
        else:
            continue
        if kind == "BlockStored":
            index.stored(
                instance,
                get("block_hashes") or [],
                get("parent_block_hash"),
                get("token_ids") or [],
                int(get("block_size") or 0),
            )
        elif kind == "BlockRemoved":
            index.removed(instance, get("block_hashes") or [])
        elif kind == "AllBlocksCleared":
            index.cleared(instance)
        else:
            continue
        n += 1
    return n


_LEGACY_FIELDS = {
    "BlockStored": ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id"),
    "BlockRemoved": ("block_hashes",),
    "AllBlocksCleared": (),
}


def _legacy_getter(kind: str, ev: list) -> Callable[[str], Any]:
    names = _LEGACY_FIELDS.get(kind, ())
    values = dict(zip(names, ev[1:], strict=False))
    return values.get


class KVEventPublisher:
    """A ZMQ PUB socket sending vLLM-format batches, one per engine step with events."""

    def __init__(self, endpoint: str = "tcp://*:5557", topic: str = "", hwm: int = 100_000) -> None:
        import zmq

        self._zmq = zmq
        self._ctx = zmq.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.set_hwm(hwm)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.bind(endpoint)
        self._topic = topic.encode()
        self._seq = 0
        self.endpoint = self._pub.getsockopt(zmq.LAST_ENDPOINT).decode()

    def publish(self, events: Sequence[KVCacheEvent]) -> None:
        if not events:
            return
        payload = encode_batch(events)
        frames = (self._topic, self._seq.to_bytes(8, "big"), payload)
        try:
            self._pub.send_multipart(frames, flags=self._zmq.NOBLOCK)
        except self._zmq.Again:  # no subscriber keeps up: PUB semantics, drop
            log.debug("KV event batch %d dropped", self._seq)
        self._seq += 1

    def close(self) -> None:
        self._pub.close(linger=0)
        self._ctx.term()


class KVEventSubscriber:
    """One SUB socket per backend feeding a shared ``KVEventIndex``; reconnects on its own (ZMQ).

    A sequence number that goes backwards means the publisher restarted: the instance is cleared.
    Gaps are counted (PUB drops when a subscriber is slow), not repaired.
    """

    def __init__(self, index: KVEventIndex, instance: int, endpoint: str, topic: str = "") -> None:
        self.index = index
        self.instance = instance
        self.endpoint = endpoint
        self.topic = topic.encode()
        self.last_seq = -1
        self.num_batches = 0
        self.num_gaps = 0
        self.num_errors = 0
        self._task: asyncio.Task | None = None
        self._sock = None
        self._ctx = None

    def start(self) -> None:
        import zmq
        import zmq.asyncio

        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, self.topic)
        self._sock.connect(self.endpoint)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            frames = await sock.recv_multipart()
            if len(frames) != 3:
                self.num_errors += 1
                continue
            _, seq_bytes, payload = frames
            self.handle(int.from_bytes(seq_bytes, "big", signed=True), payload)

    def handle(self, seq: int, payload: bytes) -> None:
        if seq <= self.last_seq:
            log.info(
                "KV events of instance %d restarted at seq %d: index cleared", self.instance, seq
            )
            self.index.cleared(self.instance)
        elif self.last_seq >= 0 and seq > self.last_seq + 1:
            self.num_gaps += 1
        self.last_seq = seq
        try:
            apply_payload(self.index, self.instance, payload)
        except (msgspec.DecodeError, ValueError, TypeError) as exc:
            self.num_errors += 1
            log.warning("instance %d: bad KV event batch %d: %s", self.instance, seq, exc)
        self.num_batches += 1

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        if self._sock is not None:
            self._sock.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
