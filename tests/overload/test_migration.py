"""Llumnix: freeness dispatch on hand-built views, and a staged live migration in the simulator."""

from __future__ import annotations

import itertools

from tests.overload.conftest import burst_workload, small_cluster
from tests.routing.conftest import req, view
from wildserve.engine import RequestStatus
from wildserve.overload.layout import Links, build_layered_cluster
from wildserve.overload.migration import LlumnixController
from wildserve.routing import make_policy
from wildserve.routing.llumnix import freeness
from wildserve.routing.policy import RoutingPolicy
from wildserve.sim.simulator import Simulator


def test_freeness_counts_queued_demand_and_batch_size():
    v = view(0, run=4, queued=1600, usage=0.5, blocks=1000)
    assert freeness(v) == (500 - 100) / 4
    assert freeness(view(1, usage=1.0, queued=160, blocks=1000)) == -10.0  # idle: batch size 1


def test_dispatch_picks_the_freest_instance_and_breaks_ties_low():
    pol = make_policy("llumnix")
    views = [
        view(0, run=10, usage=0.5, blocks=1000),  # 50 per request
        view(1, run=2, usage=0.9, blocks=1000),  # 50 per request: tie, index 0 wins
        view(2, run=20, usage=0.2, blocks=1000, queued=16000),  # 800 - 1000 < 0
    ]
    assert pol.choose(req(), views) == 0
    views.append(view(3, run=1, usage=0.5, blocks=1000))
    assert pol.choose(req(), views) == 3
    # unknown KV sizes: fewest requests
    assert pol.choose(req(), [view(0, run=3, blocks=0), view(1, run=1, blocks=0)]) == 1


class AllToZero(RoutingPolicy):
    name = "all-to-zero"

    def choose(self, request, views):
        return 0


def test_overloaded_instance_migrates_requests_with_their_kv_in_stages():
    reqs = burst_workload(seed=4, n=300, base_rate=6.0, burst_rate=6.0)
    # instances on two nodes behind a slow (200 MB/s) link, so a copy spans many decode steps
    cluster = build_layered_cluster(small_cluster(2), Links(1, inter_node_bw=2e8))
    ctl = LlumnixController(cluster.engines, cluster.cost_model, cluster.links)
    Simulator(cluster.engines, AllToZero(), controller=ctl).run(reqs)
    moved = [m for m in ctl.history if m.outcome == "moved"]
    assert moved, "instance 0 alone is overloaded: requests must move to instance 1"
    assert ctl.summary()["migrations"] == len(moved) and not ctl.active
    assert all(m.src == 0 and m.dst == 1 and m.stages >= 1 for m in moved)
    assert any(m.stages > 1 for m in moved)  # it kept decoding while earlier blocks were copied
    engines = cluster.engines
    for m in moved:
        r = m.req
        assert r.status == RequestStatus.FINISHED_LENGTH and r.engine_id == 1
        assert r.num_output_tokens == r.max_output_tokens
        times = r.token_times(engines[1].step_end_s)
        assert len(times) == r.num_output_tokens
        assert all(b > a for a, b in itertools.pairwise(times))
        assert m.copied >= -(-r.num_prompt_tokens // 16)  # the whole prompt's KV went over
        # the request stopped only while its last block or two were copied
        two_blocks = cluster.cost_model.p2p_time(2 * engines[0].memory.block_bytes, 2e8)
        assert 0 <= m.done_s - m.switched_s <= two_blocks < m.switched_s - m.started_s
    assert sum(e.num_finished for e in engines) == len(reqs)
    assert engines[1].num_finished == len(moved)
    assert all(e.pool.num_used == 0 for e in engines)  # no reserved block leaked
    assert max(ctl.timeline.extra["migrations_in_flight"]) >= 1


def test_no_migration_when_every_instance_is_overloaded():
    reqs = burst_workload(seed=5, n=300, base_rate=30.0, burst_rate=30.0)
    cluster = build_layered_cluster(small_cluster(2))
    ctl = LlumnixController(cluster.engines, cluster.cost_model, cluster.links)
    Simulator(cluster.engines, make_policy("llumnix"), controller=ctl).run(reqs)
    assert sum(e.num_finished for e in cluster.engines) == len(reqs)
    starts = [m for m in ctl.history if m.outcome]
    burst = [m for m in starts if 1.0 < m.started_s < 8.0]
    assert len(burst) <= 2  # both full during the burst: (almost) nowhere to go
