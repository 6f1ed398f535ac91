"""KunServe end to end on a small cluster: invariants at every step, triggers, restores, planners."""

from __future__ import annotations

import itertools

import pytest

from tests.overload.conftest import burst_workload, small_cluster
from wildserve.engine import RequestStatus
from wildserve.engine.costing import ModelCosting
from wildserve.overload.invariants import InvariantError, check_cluster
from wildserve.overload.kunserve import GroupState, KunServeConfig, KunServeController
from wildserve.overload.layout import build_layered_cluster
from wildserve.overload.plan import FixedPlanner, GreedyPlanner, InstanceLoad
from wildserve.routing import make_policy
from wildserve.sim.simulator import Simulator


def run(reqs, cfg: KunServeConfig, n=4):
    cluster = build_layered_cluster(small_cluster(n))
    ctl = KunServeController(cluster, cfg)
    res = Simulator(cluster.engines, make_policy("least-requests"), controller=ctl).run(reqs)
    return res, ctl


def assert_each_request_finished_once(res, ctl):
    for src, er in zip(
        res.requests and [r.source for r in res.requests], res.requests, strict=True
    ):
        assert er.status == RequestStatus.FINISHED_LENGTH
        assert er.num_output_tokens == max(1, src.output_tokens)
    finished = sum(e.num_finished for e in ctl.engines)
    assert finished == len(res.requests) == len({id(r) for r in res.requests})


def token_times(res, ctl, er):
    # the engine that served it last holds its step log; earlier tokens were frozen on the request
    t = er.token_times(ctl.engines[er.engine_id].step_end_s)
    assert len(t) == er.num_output_tokens
    return t


@pytest.mark.parametrize(
    "cfg",
    [
        KunServeConfig(check_invariants=True),
        KunServeConfig(kv_mode="recompute", check_invariants=True),
        KunServeConfig(planner="fixed", fixed_degree=2, check_invariants=True),
        KunServeConfig(degrees=(4,), check_invariants=True),
    ],
    ids=["exchange", "recompute", "fixed", "degree4"],
)
def test_burst_drops_pipelines_restores_and_keeps_every_invariant(cfg):
    reqs = burst_workload(seed=1)
    res, ctl = run(reqs, cfg)
    assert_each_request_finished_once(res, ctl)
    for er in res.requests[::7]:
        times = token_times(res, ctl, er)
        assert all(b > a for a, b in itertools.pairwise(times))
        assert times[0] == er.first_token_s and times[-1] == er.finish_s
    assert ctl.groups, "the burst must overload the cluster"
    for g in ctl.groups:
        # a drop happens only under the trigger: usage >= 95 % and queued demand >= free blocks
        t = g.trigger
        assert t["usage"] >= cfg.trigger_usage and t["demand"] >= t["free"] and t["demand"] > 0
        assert g.planned_s <= g.dropped_s <= g.ready_s <= g.restore_s <= g.reloaded_s <= g.split_s
        assert g.state is GroupState.NORMAL  # every group came back
        r = g.restore_check
        assert r["usage"] <= cfg.restore_usage and r["waiting"] == 0
        assert r["time_s"] - r["calm_since_s"] >= cfg.restore_hold_s  # hysteresis
        assert g.split_s <= g.gathered_s
        if cfg.kv_mode == "exchange":
            assert g.exchange_s > 0 and g.moved_tokens > 0
        else:
            assert g.exchange_s == 0
        assert g.costing.stats.num_steps > 0 and 0 <= g.costing.stats.bubble_fraction < 1
        if cfg.planner == "fixed":
            assert g.members in ([0, 1], [2, 3])
    # after the restores every instance is back to its initial layout
    for i, e in enumerate(ctl.engines):
        assert e.memory == ctl.initial_memory[i]
        assert e.memory.layers == (0, ctl.num_layers)
        assert e.pool.num_blocks == ctl.initial_blocks[i]
        assert type(e.costing) is ModelCosting and e.config is ctl.initial_config[i]
    assert ctl.targets() is None
    assert max(ctl.timeline.layers_dropped) > 0 and ctl.timeline.layers_dropped[-1] == 0


def test_recompute_mode_drops_the_running_kv_and_exchange_keeps_it():
    res_x, ctl_x = run(burst_workload(seed=2), KunServeConfig())
    res_r, ctl_r = run(burst_workload(seed=2), KunServeConfig(kv_mode="recompute"))
    assert ctl_r.groups and ctl_x.groups
    assert all(g.num_recomputed == 0 for g in ctl_x.groups)
    assert all(g.num_recomputed > 0 for g in ctl_r.groups)
    extra = sum(g.num_recomputed for g in ctl_r.groups)
    pre_x = sum(er.num_preemptions for er in res_x.requests)
    assert sum(er.num_preemptions for er in res_r.requests) >= extra
    assert pre_x < sum(er.num_preemptions for er in res_r.requests)


def test_no_drop_without_overload():
    reqs = burst_workload(seed=3, n=200, burst_rate=2.0)
    res, ctl = run(reqs, KunServeConfig(check_invariants=True))
    assert not ctl.groups and max(ctl.timeline.layers_dropped) == 0
    assert_each_request_finished_once(res, ctl)


def test_invariant_checker_catches_a_missing_layer_and_overcommitted_memory():
    reqs = burst_workload(seed=1)
    cluster = build_layered_cluster(small_cluster(4))
    ctl = KunServeController(cluster, KunServeConfig())
    seen = {}

    def probe(sim, instance, result, orig=ctl.on_step):
        orig(sim, instance, result)
        g = ctl.group_of[instance]
        if g is not None and g.state is GroupState.DROPPED and "done" not in seen:
            seen["done"] = True
            member = ctl.engines[g.members[-1]].memory
            lo, hi = member.layers
            member.layers = (lo, hi - 1)  # pretend the last stage lost its last layer
            with pytest.raises(InvariantError, match="misses layers"):
                check_cluster(ctl)
            member.layers = (lo, hi)
            check_cluster(ctl)
            reserve = member.reserve_bytes
            member.reserve_bytes += member.kv_bytes  # now weights + KV + reserve overflow
            with pytest.raises(InvariantError, match="instance"):
                check_cluster(ctl)
            member.reserve_bytes = reserve

    ctl.on_step = probe
    Simulator(cluster.engines, make_policy("least-requests"), controller=ctl).run(reqs)
    assert seen


def load(i, used, free, demand, over, blocks=1000):
    return InstanceLoad(i, blocks, used, free, demand, over)


def test_greedy_planner_smallest_degree_fewest_instances():
    cap = {2: 2600, 4: 5600, 8: 12000}
    capacity = lambda members: cap[len(members)]  # noqa: E731
    planner = GreedyPlanner((2, 4, 8))
    # two overloaded instances that a pair covers: one pair, the idle instances left alone
    loads = [load(0, 990, 10, 200, True), load(1, 980, 20, 250, True)]
    loads += [load(i, 100, 900, 0, False) for i in range(2, 8)]
    assert planner.plan(loads, capacity) == [[0, 1]]
    # three overloaded: a pair plus one padded with the least-used idle instance
    loads[2] = load(2, 990, 10, 100, True)
    loads[5] = load(5, 10, 990, 0, False)
    assert sorted(planner.plan(loads, capacity)) == [[0, 5], [1, 2]] or sorted(
        planner.plan(loads, capacity)
    ) == [[0, 2], [1, 5]]
    # demand a pair cannot cover: degree 4
    loads = [load(0, 1000, 0, 900, True), load(1, 1000, 0, 900, True)]
    loads += [load(i, 100, 900, 0, False) for i in range(2, 8)]
    plan = planner.plan(loads, capacity)
    assert len(plan) == 1 and len(plan[0]) == 4 and {0, 1} <= set(plan[0])
    # nothing covers: the largest degree that fits
    loads = [load(i, 1000, 0, 5000, True) for i in range(8)]
    assert planner.plan(loads, capacity) == [list(range(8))]
    assert planner.plan([load(0, 999, 1, 50, True)], capacity) == []  # no partner


def test_fixed_planner_drops_whole_predefined_groups():
    planner = FixedPlanner(2)
    loads = [load(i, 100, 900, 0, i == 3) for i in range(6)]
    assert planner.plan(loads, lambda m: 0) == [[2, 3]]
    assert planner.plan([x for x in loads if x.instance != 2], lambda m: 0) == []


def test_config_is_checked():
    with pytest.raises(Exception, match="kv_mode"):
        KunServeConfig(kv_mode="swap")
    with pytest.raises(Exception, match="restore_usage"):
        KunServeConfig(restore_usage=0.99)
    with pytest.raises(Exception, match="drop planner"):
        KunServeConfig(planner="best")
