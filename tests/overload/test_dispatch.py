"""Capacity-aware dispatch: a serving unit of g instances is seen as g shares, by every policy."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.overload.conftest import burst_workload, small_cluster
from wildserve.engine.cluster import build_engines
from wildserve.overload.dispatch import member_views, share, unit_views
from wildserve.overload.kunserve import KunServeConfig, KunServeController
from wildserve.overload.layout import build_layered_cluster
from wildserve.overload.timeline import SampledController
from wildserve.routing import make_policy
from wildserve.routing.llumnix import freeness
from wildserve.routing.view import InstanceView, RouteRequest
from wildserve.sim.simulator import Simulator

REQ = RouteRequest(request_id=0, prompt_tokens=512, block_hashes=(), block_size=16)


def view(i: int, running: int, waiting: int = 0, blocks: int = 1000, usage: float = 0.5, q=0):
    return InstanceView(i, running, waiting, q, usage, blocks, 16)


def test_shares_sum_to_the_unit_and_singletons_pass_through():
    assert [share(10, k, 3) for k in range(3)] == [4, 3, 3]
    unit = view(0, running=9, waiting=5, blocks=2001, q=7000)
    parts = member_views(unit, [0, 2])
    assert [p.instance_id for p in parts] == [0, 2]
    assert sum(p.num_running for p in parts) == 9 and sum(p.num_waiting for p in parts) == 5
    assert sum(p.num_kv_blocks for p in parts) == 2001
    assert sum(p.queued_prefill_tokens for p in parts) == 7000
    assert all(p.kv_usage == unit.kv_usage for p in parts)
    views = [view(0, 3), view(1, 4)]
    assert unit_views(views, []) == views


@pytest.mark.parametrize("policy", ["least-requests", "vllm-v1", "lmetric", "llumnix"])
def test_every_policy_sees_a_group_by_its_capacity(policy):
    # instance 0 leads a group of {0, 1} holding 10 requests in twice the blocks; instance 2 holds 6
    group = view(0, running=10, blocks=2000, usage=0.6, q=1000)
    views = [group, view(1, 0, blocks=0), view(2, running=6, blocks=1000, usage=0.6, q=1000)]
    shown = unit_views(views, [[0, 1]])
    pick = make_policy(policy).choose(REQ, shown)
    assert pick in (0, 1)  # 5 requests per instance's worth beat 6
    # the same group seen as one instance (the old behaviour) looks busier than instance 2
    naive = make_policy(policy).choose(REQ, [group, views[2]])
    assert naive == 1 or policy == "llumnix"
    if policy == "llumnix":  # freeness (free blocks per running request) is per-share invariant
        assert freeness(shown[0]) == pytest.approx(freeness(group), rel=0.05)


class Pair(SampledController):
    """Instances 0 and 1 serve as one unit led by 0 (a stand-in for a KunServe group)."""

    def units(self):
        return [[0, 1]]

    def serving_instance(self, instance):
        return 0 if instance == 1 else instance

    def may_step(self, instance):
        return instance != 1


def test_the_simulator_sends_a_members_share_to_its_leader():
    engines = build_engines(small_cluster(3))
    res = Simulator(engines, make_policy("round-robin"), controller=Pair(engines)).run(
        burst_workload(seed=4, n=300, burst_rate=2.0)
    )
    where = Counter(res.instances)
    assert where[1] == 0 and engines[1].num_finished == 0
    assert where[0] == 2 * where[2]  # round-robin over three views: the unit gets two turns


class Watched(KunServeController):
    """KunServe recording what the router is shown at every dispatch, next to the engines' state."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen: list[tuple[list[list[int]], list, list]] = []

    def route_views(self, views):
        shown, targets = super().route_views(views)
        pipelines = [list(g.members) for g in self.groups if g.is_pipeline]
        self.seen.append((pipelines, list(views), list(shown)))
        return shown, targets


def test_a_kunserve_group_is_routed_as_its_capacity_and_served_by_its_leader():
    cluster = build_layered_cluster(small_cluster(4))
    ctl = Watched(cluster, KunServeConfig())
    res = Simulator(cluster.engines, make_policy("least-requests"), controller=ctl).run(
        burst_workload(seed=1)
    )
    grouped = [(units, raw, shown) for units, raw, shown in ctl.seen if units]
    assert grouped, "the burst must form a group while requests still arrive"
    initial = ctl.initial_blocks
    for units, raw, shown in grouped:
        for members in units:
            lead = raw[members[0]]
            parts = [shown[m] for m in members]
            # the unit's whole state, split over its members: g instances' worth of seats and KV
            assert sum(p.num_running for p in parts) == lead.num_running
            assert sum(p.num_waiting for p in parts) == lead.num_waiting
            assert sum(p.num_kv_blocks for p in parts) == lead.num_kv_blocks
            assert lead.num_kv_blocks > sum(initial[m] for m in members)  # the drop freed memory
            assert max(p.num_kv_blocks for p in parts) - min(p.num_kv_blocks for p in parts) <= 1
        alone = {i for i in range(4)} - {m for u in units for m in u}
        assert all(shown[i] == raw[i] for i in alone)
    # requests routed to a member while it was part of a pipeline were served by its leader
    for g in ctl.groups:
        for i, er in enumerate(res.requests):
            if g.dropped_s <= er.arrival_s < g.split_s and res.instances[i] in g.members[1:]:
                raise AssertionError(
                    f"request {i} went to member {res.instances[i]} of {g.members}"
                )
