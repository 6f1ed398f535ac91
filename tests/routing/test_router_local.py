from __future__ import annotations

from tests.routing.conftest import req
from tests.sim.test_simulator import synthetic
from wildserve.engine import Engine, EngineConfig
from wildserve.perf.linear import LinearCostModel
from wildserve.routing import make_policy
from wildserve.routing.local import PrefixIndex, RouterLocalViews
from wildserve.sim.simulator import Simulator


def test_prefix_index_is_lru_bounded_and_evicts_deep_blocks_first():
    idx = PrefixIndex(capacity_blocks=4)
    idx.insert([1, 2, 3])
    idx.insert([1, 2, 7, 8])  # 5 distinct blocks > 4: the oldest (block 3) goes
    assert len(idx) == 4
    assert idx.match([1, 2, 3]) == 2 and idx.match([1, 2, 7, 8]) == 4
    idx.insert([9, 10])  # evicts 8 then 7 (deepest of the older request first)
    assert idx.match([1, 2, 7, 8]) == 2 and idx.match([9, 10]) == 2


def test_router_local_counts_follow_dispatch_first_token_and_finish():
    rl = RouterLocalViews(num_instances=2, block_size=16, capacity_blocks=100)
    a, b = req(prompt=160, blocks=10, rid=1), req(prompt=160, blocks=10, rid=2)
    rl.on_dispatch(0, a)
    rl.on_dispatch(0, b)  # b matches a's 10 blocks in the router's own index: 0 new tokens
    v = rl.views(a)[0]
    assert (v.num_requests, v.queued_prefill_tokens, v.cached_tokens(a.block_hashes)) == (
        2,
        160,
        160,
    )
    rl.on_first_token(1)
    rl.on_first_token(1)  # idempotent
    assert rl.views(a)[0].queued_prefill_tokens == 0
    rl.on_finish(1)
    rl.on_finish(2)
    rl.on_finish(2)  # unknown ids are ignored
    assert rl.in_flight == [0, 0] and rl.queued_prefill_tokens == [0, 0] and rl.num_tracked == 0


def test_simulator_with_router_local_views_releases_every_request():
    reqs = synthetic(300, 5)
    cost = LinearCostModel(base_s=0.004, per_token_s=4e-5)
    engines = [Engine(EngineConfig(), cost, num_blocks=3000, instance_id=i) for i in range(4)]
    views = RouterLocalViews(4, 16, capacity_blocks=3000)
    res = Simulator(engines, make_policy("lmetric"), views=views).run(reqs)
    assert res.metrics().num_finished == len(reqs)
    assert (
        views.num_tracked == 0
        and views.in_flight == [0] * 4
        and views.queued_prefill_tokens == [0] * 4
    )


class _BlockLRU:
    """The definition the radix index must reproduce: a per-block LRU, each insert touching its
    blocks deepest first (so a request's deepest blocks are the oldest)."""

    def __init__(self, capacity: int) -> None:
        from collections import OrderedDict

        self.capacity = capacity
        self.blocks: OrderedDict[int, None] = OrderedDict()

    def insert(self, hashes: list[int]) -> int:
        before = self.match(hashes)
        for h in reversed(hashes):
            self.blocks[h] = None
            self.blocks.move_to_end(h)
        while len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)
        return before

    def match(self, hashes: list[int]) -> int:
        n = 0
        while n < len(hashes) and hashes[n] in self.blocks:
            n += 1
        return n


def test_radix_index_matches_a_per_block_lru_on_random_chained_prompts():
    import numpy as np

    from wildserve.blocks import token_block_hashes

    rng = np.random.default_rng(3)
    for capacity in (1, 7, 40, 300):
        idx, ref = PrefixIndex(capacity), _BlockLRU(capacity)
        stems = [rng.integers(0, 50, size=int(rng.integers(16, 400))).tolist() for _ in range(6)]
        for _ in range(400):
            stem = stems[int(rng.integers(len(stems)))]
            cut = int(rng.integers(0, len(stem) + 1))
            tail = rng.integers(0, 50, size=int(rng.integers(0, 120))).tolist()
            hashes = token_block_hashes(stem[:cut] + tail, 4)
            probe = token_block_hashes(stem[: int(rng.integers(0, len(stem) + 1))], 4)
            assert idx.match(probe) == ref.match(probe)
            assert idx.insert(hashes) == ref.insert(hashes)
            assert len(idx) == len(ref.blocks) <= capacity


def test_prefix_index_adds_no_objects_for_the_garbage_collector_to_walk():
    """A full index must not make every full collection longer (a gateway's event loop stalls
    for as long as one takes): its nodes are columns of ints and bytes, none of them tracked."""
    import gc

    idx = PrefixIndex(capacity_blocks=3000)
    gc.collect()
    before = len(gc.get_objects())
    stem = list(range(1, 41))
    for i in range(2000):  # one fork per prompt, and evictions once 3000 blocks are indexed
        idx.insert([*stem[: i % 40], 10_000 + i, 20_000 + i])
    gc.collect()
    assert len(idx) == 3000
    assert len(gc.get_objects()) - before < 20
