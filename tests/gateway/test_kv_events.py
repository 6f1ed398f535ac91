"""KV events: vLLM's wire format over a real ZMQ PUB socket into the router's KV-event index."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq

from tests.gateway.conftest import free_port
from wildserve.blocks import token_block_hashes
from wildserve.gateway.kv_events import KVEventPublisher, KVEventSubscriber, encode_batch
from wildserve.routing.kv_index import KVEventIndex


# vLLM's structs as vllm/distributed/kv_events.py declares them (after vllm-project/vllm#42892:
# the batch stays array-like, events are tagged maps). Declared here independently of our module.
class VBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


class VEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):
    pass


class VBlockStored(VEvent, tag="BlockStored"):
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


class VBlockRemoved(VEvent, tag="BlockRemoved"):
    block_hashes: list[int | bytes]
    medium: str | None
    group_idx: int | None = None


class VAllBlocksCleared(VEvent, tag="AllBlocksCleared"):
    pass


class VKVEventBatch(VBatch):
    events: list[VBlockStored | VBlockRemoved | VAllBlocksCleared]


# The layout before #42892: events were tagged arrays too.
class LEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
    pass


class LBlockStored(LEvent, tag="BlockStored"):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None


class LBlockRemoved(LEvent, tag="BlockRemoved"):
    block_hashes: list[int]
    medium: str | None


def _stored(cls, hashes, parent, tokens, bs=16, **kw):
    return cls(block_hashes=hashes, parent_block_hash=parent, token_ids=tokens, block_size=bs,
               lora_id=None, medium="GPU", **kw)  # fmt: skip


def _toks(n, seed):
    return np.random.default_rng(seed).integers(0, 50_000, size=n).tolist()


def test_wire_layout_is_vllms():
    """Our encoder's bytes decode as vLLM's current structs, with the array batch and tagged maps."""
    tokens = _toks(32, 0)
    from wildserve.gateway.kv_events import BlockRemoved, BlockStored

    payload = encode_batch(
        [
            BlockStored(
                block_hashes=[11, 12],
                parent_block_hash=None,
                token_ids=tokens,
                block_size=16,
                lora_id=None,
                medium="GPU",
                lora_name=None,
            ),
            BlockRemoved(block_hashes=[11], medium="GPU"),
        ],
        ts=1.5,
    )
    raw = msgspec.msgpack.decode(payload)
    assert isinstance(raw, list) and raw[0] == 1.5 and raw[2] == 0
    assert raw[1][0]["type"] == "BlockStored" and raw[1][0]["block_size"] == 16
    assert "extra_keys" not in raw[1][0]  # defaults are omitted, as msgspec does for vLLM
    typed = msgspec.msgpack.decode(payload, type=VKVEventBatch)
    assert typed.events[0].token_ids == tokens and typed.events[1].block_hashes == [11]


async def _until(cond, timeout: float = 10.0) -> bool:
    """Poll ``cond`` on the running loop until it holds or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _pub_sub(batches: list[tuple[int, bytes]], topic: bytes = b"kv@pod-0@m", sub_topic=""):
    """Send (seq, payload) batches from a raw PUB socket to our subscriber; returns the index."""
    port = free_port()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)  # a PUB that also hands us the subscriptions it receives
    pub.bind(f"tcp://127.0.0.1:{port}")
    index = KVEventIndex(2, 16)
    sub = KVEventSubscriber(index, 1, f"tcp://127.0.0.1:{port}", sub_topic)
    sub.start()
    # the slow-joiner: publish once the SUB's subscription has arrived (was a 0.3 s sleep)
    assert await _until(lambda: pub.poll(0) != 0)
    for seq, payload in batches:
        pub.send_multipart([topic, seq.to_bytes(8, "big"), payload])
    deadline = time.monotonic() + 5
    while sub.num_batches < len(batches) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await sub.close()
    pub.close(linger=0)
    ctx.term()
    return index, sub


def _payload(events, legacy=False):
    if legacy:
        return msgspec.msgpack.encode(VBatch(ts=time.time(), events=events))
    return msgspec.msgpack.encode(
        VKVEventBatch(ts=time.time(), events=events, data_parallel_rank=0)
    )


@pytest.mark.parametrize("legacy", [False, True])
def test_real_zmq_publisher_feeds_the_index(legacy):
    stored, removed = (LBlockStored, LBlockRemoved) if legacy else (VBlockStored, VBlockRemoved)
    extra = {} if legacy else {"lora_name": None}
    t = _toks(64, 1)
    u64 = 2**64 - 5  # vLLM's int hashes are uint64
    batches = [
        (0, _payload([_stored(stored, [u64, 7], None, t[:32], **extra)], legacy)),
        (1, _payload([_stored(stored, [8, 9], 7, t[32:], **extra)], legacy)),
        (2, _payload([removed(block_hashes=[9], medium="GPU")], legacy)),
        (3, _payload([_stored(stored, [99], 12345, _toks(16, 2), **extra)], legacy)),  # orphan
    ]
    index, sub = asyncio.run(_pub_sub(batches))
    ours = token_block_hashes(t, 16)
    assert sub.num_batches == 4 and sub.num_errors == 0 and sub.num_gaps == 0
    assert index.match(1, ours) == 3  # blocks 0-2 stored, block 3 removed
    assert index.match(0, ours) == 0
    assert index.num_orphans == 1


def test_bytes_hashes_cleared_and_publisher_restart():
    t = _toks(32, 3)
    h1, h2 = b"\x01" * 32, b"\x02" * 32  # VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0
    batches = [
        (0, _payload([_stored(VBlockStored, [h1, h2], None, t, lora_name=None)])),
        (1, _payload([VAllBlocksCleared()])),
        (2, _payload([_stored(VBlockStored, [h1], None, t[:16], lora_name=None)])),
        (0, _payload([])),  # sequence went back: the publisher restarted, its cache is empty
    ]
    index, _sub = asyncio.run(_pub_sub(batches))
    assert index.match(1, token_block_hashes(t, 16)) == 0
    assert index.num_blocks(1) == 0


def test_topic_filter_drops_other_topics():
    t = _toks(16, 4)
    batches = [(0, _payload([_stored(VBlockStored, [5], None, t, lora_name=None)]))]
    index, sub = asyncio.run(_pub_sub(batches, topic=b"other", sub_topic="kv@"))
    assert sub.num_batches == 0 and index.num_blocks(1) == 0


def test_our_publisher_and_the_emulated_engine_chain_to_the_prompts_hashes():
    """The emulated engine publishes each cached block with its tokens and parent; the index
    re-chains them into exactly the router's hashes of the prompt."""
    from tests.gateway.conftest import engine_cfg
    from wildserve.gateway.engine_server import EmulatedEngine

    async def main():
        port = free_port()
        emu = EmulatedEngine(engine_cfg(speed=1e6, kv_port=port))
        await emu.start()
        index = KVEventIndex(1, 16)
        sub = KVEventSubscriber(index, 0, f"tcp://127.0.0.1:{port}")
        sub.start()
        await asyncio.sleep(0.3)
        prompt = b"the quick brown fox jumps over the lazy dog " * 20
        stream = emu.submit(prompt, 2)
        while not stream.done:
            stream.event.clear()
            await stream.event.wait()
        emu.finish(stream)
        hashes = token_block_hashes(prompt, 16)
        await _until(lambda: index.match(0, hashes) == len(hashes))  # the events have arrived
        before = index.match(0, hashes)
        emu.reset_prefix_cache()
        await _until(lambda: index.num_blocks(0) == 0)
        after_reset = index.num_blocks(0)
        await sub.close()
        await emu.stop()
        return prompt, before, after_reset, sub

    prompt, before, after_reset, sub = asyncio.run(main())
    assert before == len(prompt) // 16 == 55
    assert sub.num_batches >= 2 and sub.num_errors == 0
    assert after_reset == 0  # reset_prefix_cache published AllBlocksCleared


def test_our_publisher_to_a_plain_subscriber():
    port = free_port()
    pub = KVEventPublisher(f"tcp://127.0.0.1:{port}", topic="kv")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.3)
    from wildserve.gateway.kv_events import AllBlocksCleared

    pub.publish([AllBlocksCleared()])
    pub.publish([AllBlocksCleared()])
    assert sub.poll(5000)
    frames = [sub.recv_multipart() for _ in range(2)]
    sub.close(linger=0)
    ctx.term()
    pub.close()
    assert [f[0] for f in frames] == [b"kv", b"kv"]
    assert [int.from_bytes(f[1], "big") for f in frames] == [0, 1]
    assert msgspec.msgpack.decode(frames[0][2], type=VKVEventBatch).events == [VAllBlocksCleared()]


def test_engine_events_become_vllms_grouped_wire_events():
    """Chained stored blocks share one BlockStored (across requests too, as vLLM's step batches
    do), a block stored after a gap names its parent, removals merge, a reset ends with
    AllBlocksCleared; hashes are masked to uint64."""
    from wildserve.engine import kv_events as ev
    from wildserve.gateway.kv_events import (
        AllBlocksCleared,
        BlockRemoved,
        BlockStored,
        to_vllm_events,
    )

    toks = list(range(8))
    events = [
        ev.BlockStored([1, 2], None, toks[:4]),
        ev.BlockStored([3], 2, toks[4:6]),  # continues the chain: joins the first event
        ev.BlockStored([9], 5, toks[6:8]),  # another parent: a new event
        ev.BlockRemoved([1]),
        ev.BlockRemoved([-1]),
        ev.BlockStored([4], 3, toks[:2]),  # after a removal: never joins an older event
        ev.AllCleared(),
    ]
    wire = to_vllm_events(events, block_size=2)
    kw = {"block_size": 2, "lora_id": None, "medium": "GPU", "lora_name": None}
    assert wire == [
        BlockStored(block_hashes=[1, 2, 3], parent_block_hash=None, token_ids=toks[:6], **kw),
        BlockStored(block_hashes=[9], parent_block_hash=5, token_ids=toks[6:8], **kw),
        BlockRemoved(block_hashes=[1, (1 << 64) - 1], medium="GPU"),
        BlockStored(block_hashes=[4], parent_block_hash=3, token_ids=toks[:2], **kw),
        AllBlocksCleared(),
    ]
