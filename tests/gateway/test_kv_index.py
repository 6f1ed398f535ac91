"""The KV-event index on its own: re-chaining, removals, clears, and match_all against match."""

from __future__ import annotations

import numpy as np

from wildserve.blocks import token_block_hashes
from wildserve.routing.kv_index import KVEventIndex, KVEventViews
from wildserve.routing.local import RouterLocalViews
from wildserve.routing.view import RouteRequest


def _toks(n, seed):
    return np.random.default_rng(seed).integers(0, 1000, size=n).tolist()


def test_engine_blocks_larger_than_router_blocks_split_and_remove_together():
    idx = KVEventIndex(1, 16)
    t = _toks(96, 0)
    assert idx.stored(0, ["e0", "e1", "e2"], None, t, 32) == 6
    ours = token_block_hashes(t, 16)
    assert idx.match(0, ours) == 6
    idx.removed(0, ["e1"])  # engine block 1 = router blocks 2 and 3
    assert idx.match(0, ours) == 2
    assert idx.stored(0, ["x"], None, t[:24], 24) == 0 and idx.num_bad_block_size == 1


def test_two_instances_share_a_block_until_one_removes_it():
    idx = KVEventIndex(3, 16)
    t = _toks(48, 1)
    ours = token_block_hashes(t, 16)
    idx.stored(0, [1, 2, 3], None, t, 16)
    idx.stored(2, [10, 20], None, t[:32], 16)  # another engine names the same blocks its own way
    assert idx.match_all(ours) == [3, 0, 2]
    idx.removed(0, [2, 3])
    assert idx.match_all(ours) == [1, 0, 2]
    idx.cleared(2)
    assert idx.match_all(ours) == [1, 0, 0]
    idx.removed(0, [1, 77])  # unknown engine hashes are ignored
    assert idx.match_all(ours) == [0, 0, 0] and idx.num_blocks(0) == 0


def test_match_all_equals_match_per_instance_on_random_states():
    rng = np.random.default_rng(7)
    n = 5
    idx = KVEventIndex(n, 4)
    prefixes = [_toks(4 * 12, s) for s in range(4)]
    engine_id = 0
    for inst in range(n):
        for p in prefixes:
            k = int(rng.integers(0, 13))  # each instance holds a random-length prefix of each
            if k:
                keys = list(range(engine_id, engine_id + k))
                engine_id += k
                idx.stored(inst, keys, None, p[: 4 * k], 4)
    for p in prefixes:
        hashes = token_block_hashes(p, 4)
        assert idx.match_all(hashes) == [idx.match(i, hashes) for i in range(n)]


def test_views_combine_events_polled_load_and_router_in_flight():
    idx = KVEventIndex(2, 16)
    t = _toks(64, 3)
    idx.stored(1, [1, 2, 3, 4], None, t, 16)
    views = KVEventViews(idx, RouterLocalViews(2, 16))
    req = RouteRequest(7, 64, token_block_hashes(t, 16), 16)
    views.loads[0].num_running, views.loads[0].num_waiting = 3, 2
    views.on_dispatch(1, req)  # fully cached on 1: no queued prefill there
    v = views.views(RouteRequest(8, 64, req.block_hashes, 16))
    assert (v[0].num_requests, v[1].num_requests) == (5, 1)
    assert v[1].cached_blocks(req.block_hashes) == 4 and v[0].cached_blocks(req.block_hashes) == 0
    assert v[1].queued_prefill_tokens == 0
    views.on_first_token(7)
    views.on_finish(7)
    assert views.local.num_tracked == 0
