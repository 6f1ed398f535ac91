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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import msgspec

from wildserve.engine import kv_events as engine_events
from wildserve.gateway.kv_replay import ReplayBuffer, fetch_replay
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


def to_vllm_events(events: Sequence[engine_events.KVEvent], block_size: int) -> list[KVCacheEvent]:
    """An engine's typed KV events (one step's, in order) as vLLM's wire events.

    Like vLLM, a stored block continuing the chain of the previous stored block goes into the same
    ``BlockStored``, and consecutive removals into one ``BlockRemoved``.
    """
    out: list[KVCacheEvent] = []
    stored: BlockStored | None = None  # the event the next chained block may join
    last: int | None = None  # the last block stored
    for ev in events:
        if type(ev) is engine_events.BlockStored:
            tokens = ev.token_ids
            parent = ev.parent_block_hash
            for i, h in enumerate(ev.block_hashes):
                block_tokens = tokens[i * block_size : (i + 1) * block_size]
                if stored is not None and parent is not None and parent == last:
                    stored.block_hashes.append(h & UINT64)
                    stored.token_ids.extend(block_tokens)
                else:
                    stored = BlockStored(
                        block_hashes=[h & UINT64],
                        parent_block_hash=None if parent is None else parent & UINT64,
                        token_ids=list(block_tokens),
                        block_size=block_size,
                        lora_id=None,
                        medium=MEDIUM_GPU,
                        lora_name=None,
                    )
                    out.append(stored)
                last = parent = h
        elif type(ev) is engine_events.BlockRemoved:
            stored = None
            for h in ev.block_hashes:
                prev = out[-1] if out else None
                if isinstance(prev, BlockRemoved):
                    prev.block_hashes.append(h & UINT64)
                else:
                    out.append(BlockRemoved(block_hashes=[h & UINT64], medium=MEDIUM_GPU))
        else:
            stored = None
            out.append(AllBlocksCleared())
    return out


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
    """A ZMQ PUB socket sending vLLM-format batches, one per engine step with events.

    With ``buffer_steps`` > 0 it keeps the last batches for vLLM's replay protocol; ``serve_replay``
    (from a running event loop) binds the ROUTER that answers replay requests.
    """

    def __init__(
        self,
        endpoint: str = "tcp://*:5557",
        topic: str = "",
        hwm: int = 100_000,
        buffer_steps: int = 10_000,
    ) -> None:
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
        self.buffer = ReplayBuffer(buffer_steps) if buffer_steps > 0 else None
        self.replay_endpoint: str | None = None
        self._replay_task: asyncio.Task | None = None

    def serve_replay(self, endpoint: str) -> str:
        """Answer replay requests on ``endpoint`` (a ROUTER); returns the bound endpoint."""
        from wildserve.gateway.kv_replay import run_replay_server

        if self.buffer is None:
            raise ValueError("replay needs buffer_steps > 0")
        self._replay_task, self.replay_endpoint = run_replay_server(
            self.buffer, endpoint, self._topic
        )
        return self.replay_endpoint

    def publish(self, events: Sequence[KVCacheEvent]) -> None:
        if not events:
            return
        payload = encode_batch(events)
        frames = (self._topic, self._seq.to_bytes(8, "big"), payload)
        try:
            self._pub.send_multipart(frames, flags=self._zmq.NOBLOCK)
        except self._zmq.Again:  # no subscriber keeps up: PUB semantics, drop
            log.debug("KV event batch %d dropped", self._seq)
        if self.buffer is not None:
            self.buffer.add(self._seq, payload)
        self._seq += 1

    async def close_replay(self) -> None:
        await cancel_and_wait(self._replay_task)
        self._replay_task = None

    def close(self) -> None:
        self._pub.close(linger=0)
        self._ctx.term()


class KVEventSubscriber:
    """One SUB socket per backend feeding a shared ``KVEventIndex``; reconnects on its own (ZMQ).

    Where the engine offers vLLM's replay endpoint (``find_replay`` finds it, see ``kv_replay``), the
    index is loaded from it at start (replay from seq 0), a sequence gap is repaired by replaying the
    missed batches before the batch after the gap is applied, and a publisher restart (seq going
    backwards) clears the instance and replays the new process's batches. Without one the index
    starts cold, gaps are only counted, and a restart clears the instance.
    """

    def __init__(
        self,
        index: KVEventIndex,
        instance: int,
        endpoint: str,
        topic: str = "",
        find_replay: Callable[[], Awaitable[str | None]] | None = None,
        replay_timeout_s: float = 2.0,
        retry_s: float = 1.0,
    ) -> None:
        self.index = index
        self.instance = instance
        self.endpoint = endpoint
        self.topic = topic.encode()
        self.find_replay = find_replay
        self.replay_timeout_s = replay_timeout_s
        self.retry_s = retry_s
        self.replay_endpoint: str | None = None
        self.last_seq = -1
        self.num_batches = 0
        self.num_gaps = 0
        self.num_errors = 0
        self.num_replayed = 0  # batches applied from replays
        self.num_replays = 0
        self.num_duplicates = 0  # live batches already applied from a replay
        self.synced = asyncio.Event()  # the start-up replay is done (or there is none)
        # live batches queued during a replay repeat its last ones: a consecutive run of seqs up to
        # _catch_up_until (after _last_duplicate, when a live batch triggered the replay)
        self._catch_up_until = -1
        self._last_duplicate: int | None = None
        self._resync: int | None = None  # a pending replay from seq 0: clear first if 1
        self._tasks: list[asyncio.Task] = []
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
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._run()))
        if self.find_replay is None:
            self._cold("no replay endpoint configured")
        else:
            self._tasks.append(loop.create_task(self._discover()))

    def _cold(self, why: str) -> None:
        log.warning(
            "instance %d: %s; its KV-event index starts cold (only blocks stored from now on)",
            self.instance,
            why,
        )
        self.synced.set()

    async def _discover(self) -> None:
        """Ask the engine where its replay endpoint is, retrying while it is unreachable."""
        assert self.find_replay is not None
        while True:
            try:
                endpoint = await self.find_replay()
                break
            except (OSError, TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(self.retry_s)
        if endpoint is None:
            self._cold("the engine offers no KV-event replay endpoint")
            return
        self.replay_endpoint = endpoint
        self.request_resync(clear=False)

    def request_resync(self, clear: bool = True) -> None:
        """Reload this instance from a replay from seq 0 at the next turn of the loop."""
        if self.replay_endpoint is not None:
            self._resync = max(self._resync or 0, int(clear))

    async def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            if self._resync is not None:
                clear, self._resync = bool(self._resync), None
                await self._replay(0, clear)
                self.synced.set()
            if not await sock.poll(200):
                continue
            frames = await sock.recv_multipart()
            if len(frames) != 3:
                self.num_errors += 1
                continue
            _, seq_bytes, payload = frames
            seq = int.from_bytes(seq_bytes, "big", signed=True)
            if self.replay_endpoint is not None and await self._repair(seq):
                continue
            self.handle(seq, payload)

    async def _repair(self, seq: int) -> bool:
        """With a replay endpoint: True if this live batch was (or now is) applied from a replay."""
        prev = self._last_duplicate
        if seq <= self._catch_up_until and (prev is None or seq == prev + 1):
            self.num_duplicates += 1
            self._last_duplicate = seq
            return True
        self._catch_up_until, self._last_duplicate = -1, None
        if seq <= self.last_seq:  # the publisher restarted: its new batches from 0
            log.info("KV events of instance %d restarted at seq %d: reloading", self.instance, seq)
            return await self._replayed(seq, 0, clear=True)
        if self.last_seq >= 0 and seq > self.last_seq + 1:
            self.num_gaps += 1
            return await self._replayed(seq, self.last_seq + 1, clear=False)
        return False

    async def _replayed(self, seq: int, start: int, clear: bool) -> bool:
        """Replay from ``start`` because live batch ``seq`` arrived; True if the replay covered it."""
        if not await self._replay(start, clear) or seq > self.last_seq:
            return False
        self._last_duplicate = seq
        return True

    async def _replay(self, start: int, clear: bool) -> bool:
        """Fetch and apply the engine's buffered batches from ``start``; False if it did not answer."""
        assert self.replay_endpoint is not None and self._ctx is not None
        batches = await fetch_replay(self._ctx, self.replay_endpoint, start, self.replay_timeout_s)
        if batches is None:
            log.warning(
                "instance %d: replay endpoint %s did not answer; KV-event index not reloaded",
                self.instance,
                self.replay_endpoint,
            )
            return False
        self.num_replays += 1
        if batches and batches[0][0] > start:
            log.warning(
                "instance %d: replay buffer starts at seq %d, not %d: blocks stored before it are "
                "missing from the KV-event index",
                self.instance,
                batches[0][0],
                start,
            )
        if clear:
            self.index.cleared(self.instance)
            self.last_seq = -1
        for seq, payload in batches:
            if seq > self.last_seq:
                self._apply(seq, payload)
                self.last_seq = seq
                self.num_replayed += 1
        self._catch_up_until, self._last_duplicate = self.last_seq, None
        log.info(
            "instance %d: %d KV-event batches replayed from seq %d (%d blocks indexed)",
            self.instance,
            len(batches),
            start,
            self.index.num_blocks(self.instance),
        )
        return True

    def handle(self, seq: int, payload: bytes) -> None:
        if seq <= self.last_seq:
            log.info(
                "KV events of instance %d restarted at seq %d: index cleared", self.instance, seq
            )
            self.index.cleared(self.instance)
        elif self.last_seq >= 0 and seq > self.last_seq + 1:
            self.num_gaps += 1
        self.last_seq = seq
        self._apply(seq, payload)
        self.num_batches += 1

    def _apply(self, seq: int, payload: bytes) -> None:
        try:
            apply_payload(self.index, self.instance, payload)
        except (msgspec.DecodeError, ValueError, TypeError) as exc:
            self.num_errors += 1
            log.warning("instance %d: bad KV event batch %d: %s", self.instance, seq, exc)

    async def close(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        if self._sock is not None:
            self._sock.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
