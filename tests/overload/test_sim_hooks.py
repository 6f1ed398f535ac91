"""The simulator's controller hook: targets, holding an instance back, horizons, Call and Wake."""

from __future__ import annotations

import numpy as np

from tests.sim.test_simulator import synthetic
from wildserve.engine import Engine, EngineConfig
from wildserve.perf.linear import LinearCostModel
from wildserve.routing import make_policy
from wildserve.sim.events import Call
from wildserve.sim.simulator import ClusterController, Simulator, Wake


def engines(n=3, ff=1024):
    cost = LinearCostModel(base_s=0.004, per_token_s=4e-5, per_decode_ctx_s=5e-8)
    return [
        Engine(EngineConfig(max_fast_forward_steps=ff), cost, num_blocks=3000, instance_id=i)
        for i in range(n)
    ]


class Recorder(ClusterController):
    """Routes only to instances 0 and 2, holds 2 back until t=5 s, bounds runs at 1 s marks."""

    def __init__(self):
        self.held = True
        self.steps: list[tuple[int, float, float]] = []
        self.ends = 0
        self.dispatches = 0

    def start(self, sim):
        return [(5.0, Call(self.release))]

    def release(self, sim, now):
        self.held = False
        return [(now, Wake(2))]

    def targets(self):
        return [0, 2]

    def may_step(self, instance):
        return not (instance == 2 and self.held)

    def horizon(self, instance):
        return np.inf if instance == 2 else 1.0e9

    def after_dispatch(self, sim, instance, now):
        self.dispatches += 1
        return ()

    def on_step(self, sim, instance, result):
        self.steps.append((instance, result.start_s, result.end_s))

    def at_step_end(self, sim, instance, now):
        self.ends += 1
        return ()


def test_controller_hooks_steer_hold_and_wake():
    reqs = synthetic(300, 5)
    ctl = Recorder()
    res = Simulator(engines(), make_policy("round-robin"), controller=ctl).run(reqs)
    assert set(res.instances) == {0, 2}  # only the targets were chosen
    assert ctl.dispatches == len(reqs)
    assert min(start for i, start, _ in ctl.steps if i == 2) == 5.0  # held, then woken at 5 s
    assert not any(i == 1 for i, _, _ in ctl.steps)
    assert ctl.ends == len(ctl.steps)  # every planned step reached its end
    assert sum(e.num_finished for e in res.engines) == len(reqs)


class Horizon(ClusterController):
    """With ``whole_seconds``, says every instance may change at each whole second."""

    def __init__(self, whole_seconds: bool):
        self.whole_seconds = whole_seconds
        self.now = 0.0
        self.runs = []

    def horizon(self, instance):
        return np.floor(self.now) + 1.0 if self.whole_seconds else np.inf

    def on_step(self, sim, instance, result):
        if result.num_steps > 1:
            last_start = sim.engines[instance].step_end_s[-2]
            self.runs.append((result.start_s, last_start))


def run_with(ctl, reqs):
    sim = Simulator(engines(2), make_policy("least-requests"), controller=ctl)
    start_step = sim.start_step

    def tracked(instance, now):
        ctl.now = now
        return start_step(instance, now)

    sim.start_step = tracked
    return sim.run(reqs)


def test_fast_forward_stops_at_the_controller_horizon():
    reqs = synthetic(60, 6, rate=0.5)  # arrivals ~2 s apart: decode runs would cross seconds
    free, bound = Horizon(False), Horizon(True)
    a, b = run_with(free, reqs), run_with(bound, reqs)
    assert any(last >= np.floor(start) + 1.0 for start, last in free.runs)
    assert bound.runs and all(last < np.floor(start) + 1.0 for start, last in bound.runs)
    # cutting runs short changes nothing but the number of events
    np.testing.assert_allclose(a.metrics().ttft, b.metrics().ttft, rtol=1e-9)
    np.testing.assert_allclose(a.metrics().e2e, b.metrics().e2e, rtol=1e-9)
    assert b.extra["events"] > a.extra["events"]
