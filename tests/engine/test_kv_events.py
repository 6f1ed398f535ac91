"""The engine's typed KV events: what entered and left the prefix cache, with parents and tokens,
queued for every listener separately."""

from __future__ import annotations

from wildserve.blocks import token_block_hashes
from wildserve.engine import Engine, EngineConfig, EngineRequest
from wildserve.engine.kv_events import AllCleared, BlockRemoved, BlockStored
from wildserve.perf.linear import LinearCostModel

BS = 16


def _engine(num_blocks: int = 64, **cfg) -> Engine:
    return Engine(EngineConfig(block_size=BS, **cfg), LinearCostModel(), num_blocks=num_blocks)


def _request(rid: str, tokens: list[int], out: int = 1) -> EngineRequest:
    hashes = token_block_hashes(tokens, BS)
    return EngineRequest(rid, 0.0, len(tokens), out, hashes, token_ids=tokens)


def _run(eng: Engine, now: float = 0.0) -> float:
    while eng.has_work:
        now = eng.step(now).end_s
    return now


def test_stored_events_chain_their_parents_and_carry_the_blocks_tokens():
    eng = _engine(max_num_batched_tokens=40, long_prefill_token_threshold=40)
    queue = eng.kv_events()
    tokens = list(range(100, 165))  # 4 full blocks + 1 token, prefilled 40 tokens per step
    req = _request("a", tokens)
    eng.add_request(req, 0.0)
    eng.step(0.0)
    first = queue.drain()
    assert first == [BlockStored(list(req.block_hashes[:2]), None, tokens[: 2 * BS])]
    _run(eng)
    rest = queue.drain()
    assert rest == [BlockStored(list(req.block_hashes[2:4]), req.block_hashes[1], tokens[32:64])]


def test_a_prefix_cached_already_is_not_stored_again_and_its_tail_names_the_parent():
    eng = _engine()
    queue = eng.kv_events()
    shared = list(range(32))
    a = _request("a", [*shared, 7])
    eng.add_request(a, 0.0)
    _run(eng)
    b = _request("b", [*shared, *range(500, 516), 9])  # hits a's 2 blocks, adds a third
    eng.add_request(b, 1.0)
    _run(eng, 1.0)
    events = queue.drain()
    assert events == [
        BlockStored(list(a.block_hashes), None, shared),
        BlockStored([b.block_hashes[2]], b.block_hashes[1], list(range(500, 516))),
    ]


def test_every_listener_gets_every_event_and_a_closed_one_none():
    eng = _engine(num_blocks=8)
    one, two = eng.kv_events(), eng.kv_events()
    a = _request("a", list(range(65)))  # 4 full blocks + 1 token: 5 blocks
    eng.add_request(a, 0.0)
    _run(eng)
    two_events = two.drain()
    assert one.drain() == two_events and len(two_events) == 1
    two.close()
    b = _request("b", list(range(1000, 1065)))  # needs 5 of 8 blocks: evicts 2 of a's
    eng.add_request(b, 1.0)
    _run(eng, 1.0)
    events = one.drain()
    removed = [h for e in events if isinstance(e, BlockRemoved) for h in e.block_hashes]
    assert removed and set(removed) <= set(a.block_hashes)
    assert two.drain() == []
    assert {h for h in eng.cached_block_hashes()} == (set(a.block_hashes) - set(removed)) | set(
        b.block_hashes
    )


def test_a_reset_removes_every_evictable_block_then_says_all_cleared():
    eng = _engine()
    queue = eng.kv_events()
    a = _request("a", list(range(33)))
    eng.add_request(a, 0.0)
    _run(eng)
    queue.drain()
    assert eng.clear_prefix_cache() == 2
    events = queue.drain()
    assert events[-1] == AllCleared()
    assert sorted(h for e in events[:-1] for h in e.block_hashes) == sorted(a.block_hashes)
    assert eng.cached_block_hashes() == []


def test_requests_without_tokens_store_blocks_with_no_tokens():
    eng = _engine()
    queue = eng.kv_events()
    req = EngineRequest("a", 0.0, 33, 1, [11, 12])
    eng.add_request(req, 0.0)
    _run(eng)
    assert queue.drain() == [BlockStored([11, 12], None, ())]
