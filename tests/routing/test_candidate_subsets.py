"""Stateful policies keep their state by instance id: a subset of the views (an ejected backend, a
retry, a controller narrowing the targets) must neither mix up instances nor record a dispatch on the
wrong one. Each test fails on the old, by-position behaviour.

The gateway's retry path is checked end to end in ``tests/gateway/test_reliability.py``.
"""

from __future__ import annotations

import numpy as np

from tests.routing.conftest import req, view
from wildserve.engine import Engine, EngineConfig
from wildserve.perf.linear import LinearCostModel
from wildserve.routing import make_policy
from wildserve.sim.simulator import ClusterController, Simulator
from wildserve.workload.request import Request


def test_sglang_cache_aware_with_a_backend_ejected_neither_follows_nor_records_its_tree():
    """The reproduced bug: a prefix learned on instance 0 made it pick instance 1 once 0 was ejected,
    and that dispatch went into instance 0's tree."""
    p = make_policy("sglang-cache-aware")
    a = req(blocks=10, rid=1)
    full = [view(0), view(1, run=3), view(2, run=1)]
    assert p.choose_among(a, full, None) == 0  # nothing learned: least loaded
    p.on_dispatch(0, a)
    assert p.choose_among(a, full, None) == 0  # follows its tree on 0
    # 0 is ejected: neither 1 nor 2 was sent this prefix, so the least loaded of them wins
    chosen = p.choose_among(a, full, [1, 2])
    assert chosen == 2
    p.on_dispatch(chosen, a)
    assert p.trees[2].match(a.block_hashes) == 10
    assert p.trees[0].match(a.block_hashes) == 10 and p.trees[1].match(a.block_hashes) == 0
    # with 0 still out, the prefix now follows instance 2 although 1 is less loaded
    assert p.choose_among(a, [view(0), view(1), view(2, run=4)], [1, 2]) == 2


def test_sglang_cache_aware_records_a_dispatch_only_when_told():
    p = make_policy("sglang-cache-aware")
    a = req(blocks=10, rid=1)
    p.choose(a, [view(0), view(1)])  # a decision not acted on (e.g. /tokenize forwarding)
    assert all(t.match(a.block_hashes) == 0 for t in p.trees.values())
    p.on_dispatch(1, a)
    assert p.choose(a, [view(0), view(1, run=2)]) == 1


def test_round_robin_keeps_its_turn_by_instance_id_when_one_is_ejected():
    p = make_policy("round-robin")
    full = [view(i) for i in range(4)]
    for expect in (0, 1, 2):
        chosen = p.choose_among(req(), full, None)
        assert chosen == expect
        p.on_dispatch(chosen, req())
    # 2 was last; with it ejected the turn goes on to 3 (by position it would restart at 0)
    turn = []
    for _ in range(4):
        chosen = p.choose_among(req(), full, [0, 1, 3])
        p.on_dispatch(chosen, req())
        turn.append(chosen)
    assert turn == [3, 0, 1, 3]


class _Narrowing(ClusterController):
    """All instances may take requests until ``switch_s``; then only ``later``."""

    def __init__(self, switch_s: float, later: list[int]) -> None:
        self.switch_s = switch_s
        self.later = later
        self.now = 0.0

    def after_dispatch(self, sim, instance, now):
        self.now = now
        return ()

    def targets(self):
        return self.later if self.now >= self.switch_s else None


def _sessions(n: int, seed: int = 0) -> list[Request]:
    rng = np.random.default_rng(seed)
    t, out = 0.0, []
    for i in range(n):
        t += rng.exponential(0.05)
        s = int(rng.integers(0, 3))  # three sessions, each one long shared prefix
        ids = tuple(1000 * (s + 1) + j for j in range(12))
        out.append(Request(i, t, 12 * 64 + 10, 20, ids, 64, session_id=s))
    return out


def test_sglang_trees_hold_what_was_sent_to_each_instance_under_narrowed_targets():
    reqs = _sessions(120)
    cost = LinearCostModel(base_s=0.004, per_token_s=4e-5, per_decode_ctx_s=5e-8)
    engines = [Engine(EngineConfig(), cost, num_blocks=4000, instance_id=i) for i in range(3)]
    policy = make_policy("sglang-cache-aware")
    ctl = _Narrowing(reqs[len(reqs) // 2].arrival_s, [1, 2])
    res = Simulator(engines, policy, controller=ctl).run(reqs)
    block_size = engines[0].config.block_size
    late = [r for r in reqs if r.arrival_s >= ctl.switch_s]
    assert {res.instances[r.request_id] for r in late} <= {1, 2}
    sent: dict[int, set[int]] = {}
    for r in reqs:
        sent.setdefault(res.instances[r.request_id], set()).add(r.session_id)
    for instance, sessions in sent.items():
        tree = policy.trees[instance]
        for r in reqs:
            hashes = r.engine_block_hashes(block_size)
            held = tree.match(hashes) == len(hashes)
            assert held == (r.session_id in sessions), (instance, r.session_id)
