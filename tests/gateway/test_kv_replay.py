"""vLLM's KV-event replay: a late gateway loads the engines' blocks, gaps and restarts are repaired."""

from __future__ import annotations

import asyncio
import logging
import urllib.request

import openai

from tests.gateway.conftest import engine_cfg, eventually, free_port, start_gateway
from wildserve.blocks import token_block_hashes
from wildserve.gateway.engine_server import make_engine_app
from wildserve.gateway.kv_events import (
    MEDIUM_GPU,
    BlockStored,
    KVEventPublisher,
    KVEventSubscriber,
)
from wildserve.gateway.kv_replay import reachable_endpoint, replay_endpoint_of
from wildserve.routing.kv_index import KVEventIndex

MODEL = "qwen2.5-7b"
PROMPT = "a long shared system prompt about routing and caches, " * 12


def _engine(lt, replay: bool) -> tuple[str, str]:
    kv_port = free_port()
    cfg = engine_cfg(speed=1e6, kv_port=kv_port)
    if replay:
        cfg.kv_events_replay_endpoint = f"tcp://127.0.0.1:{free_port()}"
    port = lt.serve(make_engine_app(cfg))
    return f"http://127.0.0.1:{port}", f"tcp://127.0.0.1:{kv_port}"


def _complete(url: str, prompt: str):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=30)
    return client.with_raw_response.completions.create(model=MODEL, prompt=prompt, max_tokens=2)


def test_endpoints_from_kv_event_sources():
    sources = {"0": {"endpoint": "tcp://*:5557", "replay_endpoint": "tcp://*:5558"}}
    assert replay_endpoint_of(sources, "http://10.1.2.3:8000") == "tcp://10.1.2.3:5558"
    assert replay_endpoint_of({"0": {"replay_endpoint": None}}, "http://h:1") is None
    assert replay_endpoint_of({}, "http://h:1") is None
    assert reachable_endpoint("tcp://127.0.0.2:9", "http://h:1") == "tcp://127.0.0.2:9"
    assert reachable_endpoint("tcp://0.0.0.0:9", "http://[::1]:1") == "tcp://[::1]:9"


def test_a_gateway_started_late_loads_the_blocks_cached_before_it(loop_thread, caplog):
    (url0, ev0), (url1, ev1) = _engine(loop_thread, replay=True), _engine(loop_thread, replay=False)
    urls, events = [url0, url1], [ev0, ev1]
    for url in urls:  # both engines cache PROMPT before any gateway exists
        _complete(url, PROMPT)
    with caplog.at_level(logging.WARNING, logger="wildserve.gateway.kv_events"):
        gw_url, gw = start_gateway(loop_thread, urls, kv_events=events, block_size=16)
        assert eventually(lambda: all(s.synced.is_set() for s in gw.subscribers), timeout=10)
    hashes = token_block_hashes(PROMPT.encode(), 16)
    assert gw.kv_index.match(0, hashes) == len(hashes)  # replayed
    assert gw.kv_index.match(1, hashes) == 0  # no replay endpoint: cold
    assert gw.subscribers[0].num_replays == 1 and gw.subscribers[0].num_replayed >= 1
    assert any("instance 1" in r.message and "starts cold" in r.message for r in caplog.records)
    assert not any("instance 0" in r.message and "cold" in r.message for r in caplog.records)
    for _ in range(3):  # the prefix is known on engine 0 only, and LMetric goes there
        assert _complete(gw_url, PROMPT + "and one question").headers["x-wildserve-backend"] == "0"


def _stored(h: int, parent: int | None, tokens: list[int]) -> BlockStored:
    return BlockStored(
        block_hashes=[h], parent_block_hash=parent, token_ids=tokens, block_size=16,
        lora_id=None, medium=MEDIUM_GPU, lora_name=None,
    )  # fmt: skip


async def _wait(cond, timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


def test_a_gap_is_replayed_before_the_batch_after_it_and_a_restart_reloads():
    toks = [list(range(16 * i, 16 * i + 16)) for i in range(4)]
    ours = token_block_hashes([t for b in toks for t in b], 16)

    async def main():
        ev, rp = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        pub = KVEventPublisher(ev)
        pub.serve_replay(rp)
        index = KVEventIndex(1, 16)

        async def find():
            return rp

        sub = KVEventSubscriber(index, 0, ev, find_replay=find, replay_timeout_s=5)
        sub.start()
        assert await _wait(sub.synced.is_set)
        await asyncio.sleep(0.3)  # the SUB is connected
        pub.publish([_stored(1, None, toks[0])])
        assert await _wait(lambda: index.match(0, ours) == 1)
        send = pub._pub.send_multipart
        pub._pub.send_multipart = lambda *a, **k: None  # batch 1 is lost on the wire
        pub.publish([_stored(2, 1, toks[1])])
        pub._pub.send_multipart = send
        pub.publish([_stored(3, 2, toks[2])])  # its parent is known only from the replay
        assert await _wait(lambda: index.match(0, ours) == 3)
        gaps = (sub.num_gaps, sub.num_replays, index.num_orphans)
        await pub.close_replay()
        pub.close()
        # the engine restarts on the same endpoints with a new cache: seq starts at 0 again
        pub2 = KVEventPublisher(ev)
        pub2.serve_replay(rp)
        pub2.publish([_stored(7, None, toks[3])])
        await asyncio.sleep(0.5)  # batch 0 went out before the SUB reconnected: lost live
        pub2.publish([_stored(8, 7, toks[0])])
        assert await _wait(lambda: index.num_blocks(0) == 2)
        restarted = (index.match(0, ours), index.match(0, token_block_hashes(toks[3], 16)))
        await sub.close()
        await pub2.close_replay()
        pub2.close()
        return gaps, restarted

    (num_gaps, num_replays, orphans), (old, new) = asyncio.run(main())
    assert num_gaps == 1 and num_replays == 2 and orphans == 0  # start-up + the gap
    assert old == 0 and new == 1  # the old blocks are gone, the new process's batch 0 replayed


def test_an_ejected_engine_is_cleared_and_reloaded_when_readmitted(loop_thread):
    url, ev = _engine(loop_thread, replay=True)
    _complete(url, PROMPT)
    _, gw = start_gateway(loop_thread, [url], kv_events=[ev], block_size=16, health_interval_s=0.05)
    assert eventually(lambda: gw.subscribers[0].synced.is_set(), timeout=10)
    n = gw.kv_index.num_blocks(0)
    assert n == len(token_block_hashes(PROMPT.encode(), 16))
    gw.health.eject(gw.backends[0], "test")
    assert gw.kv_index.num_blocks(0) == 0
    assert eventually(lambda: gw.backends[0].healthy, timeout=10)  # it answers: re-admitted
    assert eventually(lambda: gw.kv_index.num_blocks(0) == n, timeout=10)  # reloaded by replay
    with urllib.request.urlopen(f"{url}/kv_event_sources", timeout=5) as resp:
        assert b"replay_endpoint" in resp.read()
