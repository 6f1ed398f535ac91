"""KunServe's group life: the explicit state machine, hysteresis, dispatch while restoring, move-out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.overload.conftest import burst_workload, small_cluster
from wildserve.engine import RequestStatus
from wildserve.overload.kunserve import Group, GroupState, KunServeConfig, KunServeController
from wildserve.overload.layout import Links, build_layered_cluster
from wildserve.routing import make_policy
from wildserve.sim.simulator import Simulator
from wildserve.workload.request import Request


def trickle(seed: int, n: int = 900, tail: int = 400) -> list[Request]:
    """A burst, then a steady trickle of short requests that keeps arriving while groups restore."""
    reqs = burst_workload(seed, n)
    rng = np.random.default_rng(seed + 100)
    t = reqs[-1].arrival_s
    for i in range(tail):
        t += rng.exponential(0.4)
        reqs.append(Request(n + i, t, int(rng.integers(100, 400)), int(rng.integers(5, 40))))
    return reqs


class Probe(KunServeController):
    """Records what the tests check: states seen, dispatches into groups, calm-window samples."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.states: dict[int, list[GroupState]] = {}
        self.dispatched: list[
            tuple[int, GroupState, int, float]
        ] = []  # (request, state, engine, t)
        self.checks: list[tuple[float, int, float, int]] = []  # (t, leader, usage, waiting)
        self.seats: list[tuple[int, int]] = []

    def _seen(self):
        for g in self.groups:
            seq = self.states.setdefault(id(g), [])
            if not seq or seq[-1] is not g.state:
                seq.append(g.state)

    def after_dispatch(self, sim, instance, now):
        g = self.group_of[instance]
        if g is not None:
            self.dispatched.append((len(sim.engine_requests) - 1, g.state, instance, now))
        return super().after_dispatch(sim, instance, now)

    def on_step(self, sim, instance, result):
        super().on_step(sim, instance, result)
        self._seen()
        g = self.group_of[instance]
        if g is not None and g.is_pipeline and g.leader == instance:
            self.seats.append((self.engines[instance].config.max_num_seqs, g.degree))

    def _maybe_restore(self, g, now):
        e = self.engines[g.leader]
        self.checks.append((now, g.leader, e.kv_usage(), e.num_waiting))
        out = super()._maybe_restore(g, now)
        self._seen()
        return out


def run(reqs, cfg: KunServeConfig, links: Links | None = None, n: int = 4):
    cluster = build_layered_cluster(small_cluster(n), links)
    ctl = Probe(cluster, cfg)
    res = Simulator(cluster.engines, make_policy("least-requests"), controller=ctl).run(reqs)
    ctl._seen()
    return res, ctl


def test_transitions_follow_one_chain_and_an_illegal_one_raises():
    g = Group([0, 1])
    with pytest.raises(AssertionError, match="no transition"):
        g.advance(GroupState.RESTORING, 1.0)
    for t, s in enumerate((GroupState.DROPPED, GroupState.RESTORING, GroupState.NORMAL)):
        g.advance(s, float(t))
    assert (g.dropped_s, g.restore_s, g.split_s) == (0.0, 1.0, 2.0)
    with pytest.raises(AssertionError):
        g.advance(GroupState.DROPPED, 3.0)


@pytest.fixture(scope="module")
def slow_reload():
    """Each instance on its own node with a slow NIC: reloading layers takes seconds."""
    cfg = KunServeConfig(check_invariants=True, restore_hold_s=2.0)
    links = Links(instances_per_node=1, inter_node_bw=2e9)
    return run(trickle(seed=5), cfg, links)


def test_every_group_goes_planned_dropped_restoring_normal(slow_reload):
    _res, ctl = slow_reload
    assert ctl.groups
    chain = [GroupState.PLANNED, GroupState.DROPPED, GroupState.RESTORING, GroupState.NORMAL]
    for g in ctl.groups:
        seen = ctl.states[id(g)]
        assert seen == chain[chain.index(seen[0]) :]  # in order, none skipped after the first
        assert seen[-1] is GroupState.NORMAL


def test_the_leader_takes_requests_while_its_group_restores(slow_reload):
    res, ctl = slow_reload
    during = [(i, e) for i, state, e, _ in ctl.dispatched if state is GroupState.RESTORING]
    assert during, "requests must arrive while a group reloads its layers"
    for i, e in during:
        er = res.requests[i]
        g = next(g for g in ctl.groups if e in g.members)
        assert e == g.leader and er.status is RequestStatus.FINISHED_LENGTH
        assert er.num_output_tokens == max(1, er.source.output_tokens)


def test_a_split_moves_requests_out_to_the_members_with_their_kv(slow_reload):
    res, ctl = slow_reload
    moved = [g for g in ctl.groups if g.num_moved_out]
    assert moved
    for g in moved:
        assert g.gather_s > 0 and g.gathered_s == pytest.approx(g.split_s + g.gather_s)
    # some request admitted before a split finished on a member other than the leader
    served_by_member = [
        er
        for er in res.requests
        for g in moved
        if er.engine_id in g.members[1:] and 0 <= er.first_token_s < g.split_s <= er.finish_s
    ]
    assert served_by_member
    assert all(er.status is RequestStatus.FINISHED_LENGTH for er in res.requests)


def test_a_group_batches_with_its_instances_seats(slow_reload):
    _, ctl = slow_reload
    base = ctl.initial_config[0].max_num_seqs
    assert ctl.seats and all(seats == base * degree for seats, degree in ctl.seats)


@pytest.mark.parametrize("hold", [0.0, 6.0])
def test_restore_waits_for_the_hold_with_no_queue_and_low_usage(hold):
    cfg = KunServeConfig(restore_hold_s=hold)
    _res, ctl = run(trickle(seed=6), cfg)
    restored = [g for g in ctl.groups if not math.isnan(g.restore_s)]
    assert restored
    for g in restored:
        r = g.restore_check
        assert r["time_s"] - r["calm_since_s"] >= hold
        window = [
            c for c in ctl.checks if c[1] == g.leader and r["calm_since_s"] <= c[0] <= r["time_s"]
        ]
        assert window and all(u <= cfg.restore_usage and w == 0 for _, _, u, w in window)
        # the calm window starts at the first check after the group was last not calm: a check
        # with a queue or high usage, or a request dispatched to it
        before = [
            c for c in ctl.checks if c[1] == g.leader and g.ready_s < c[0] < r["calm_since_s"]
        ]
        if before:
            t, _, usage, waiting = before[-1]
            sent = [
                d for d in ctl.dispatched if d[2] == g.leader and t <= d[3] <= r["calm_since_s"]
            ]
            assert usage > cfg.restore_usage or waiting > 0 or sent


def test_the_first_pipelined_step_pays_the_fill():
    with_fill = run(burst_workload(seed=1), KunServeConfig())[1]
    without = run(burst_workload(seed=1), KunServeConfig(charge_fill=False))[1]
    assert all(g.costing.stats.fill_s > 0 for g in with_fill.groups if g.costing)
    assert all(g.costing.stats.fill_s == 0 for g in without.groups if g.costing)
