"""KunServe: absorb KV-memory overload by dropping replicated layers and running groups as pipelines.

Trigger: an instance's KV usage is at least ``trigger_usage`` and its queued requests need at least
its free blocks. The planner (``plan.py``) picks groups; each group drops at the first moment all its
members are between steps (at most one step after the decision). At the drop, member r keeps layers
[r·L/g, (r+1)·L/g); the freed weight bytes join the KV region in place, and the group's leader engine
becomes the group: its pool grows to the group's blocks, it adopts the members' requests, costs its
steps as a pipeline and batches for all stages. Running requests keep their KV (``exchange``: each
member sends its peers their layers' share, layer by layer over the interconnect, and the group starts
once the slowest member is done) or lose it (``recompute``).

Restore: when a group has nothing queued and its KV usage is at most ``restore_usage`` and lower than
``restore_check_s`` earlier, it stops taking new requests, shrinks its KV pool to what fits next to
full weights, reloads the dropped layers from a peer at link bandwidth, and splits back into its
initial instances once its last request has finished.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from wildserve.engine import Engine, EngineRequest, StepResult
from wildserve.engine.costing import ModelCosting
from wildserve.engine.kv_manager import cdiv
from wildserve.engine.request import RequestStatus
from wildserve.errors import ConfigError
from wildserve.overload.invariants import check_cluster
from wildserve.overload.layout import (
    LayeredCluster,
    group_blocks,
    pipeline_blocks,
    stage_bounds,
    staged_memory,
)
from wildserve.overload.pipeline import PipelineCosting, PipelineStats
from wildserve.overload.plan import DROP_PLANNERS, InstanceLoad
from wildserve.overload.timeline import SampledController
from wildserve.sim.events import Call, Event
from wildserve.sim.simulator import Simulator, Wake

KV_MODES = ("exchange", "recompute")


@dataclass(frozen=True)
class KunServeConfig:
    """Drop, pipeline and restore settings."""

    kv_mode: str = field(
        default="exchange", metadata={"help": "running KV at a drop: exchange or recompute"}
    )
    planner: str = field(default="greedy", metadata={"help": "greedy or fixed"})
    degrees: tuple[int, ...] = field(
        default=(2, 4, 8), metadata={"help": "pipeline degrees the greedy planner tries"}
    )
    fixed_degree: int = field(default=2, metadata={"help": "group size of the fixed planner"})
    trigger_usage: float = field(
        default=0.95, metadata={"help": "KV usage an instance must reach to trigger a drop"}
    )
    restore_usage: float = field(
        default=0.5, metadata={"help": "group KV usage at or below which it may restore"}
    )
    restore_check_s: float = field(
        default=1.0, metadata={"help": "usage must be lower than this long ago (falling)"}
    )
    num_microbatches: int = field(
        default=0, metadata={"help": "micro-batches per step (0: one per stage)"}
    )
    check_invariants: bool = field(
        default=False, metadata={"help": "assert memory and layer invariants at every step"}
    )

    def __post_init__(self) -> None:
        if self.kv_mode not in KV_MODES:
            raise ConfigError(f"kv_mode '{self.kv_mode}': choose one of {', '.join(KV_MODES)}")
        DROP_PLANNERS.get(self.planner)
        if not 0 < self.restore_usage < self.trigger_usage <= 1:
            raise ConfigError(
                f"need 0 < restore_usage ({self.restore_usage}) < trigger_usage "
                f"({self.trigger_usage}) <= 1"
            )  # fmt: skip


class GroupState(enum.Enum):
    NORMAL = "normal"  # not (or no longer) a pipeline
    DROPPED = "dropped"  # running as a pipeline, taking requests
    RESTORING = "restoring"  # reloading layers / draining its requests, taking none


@dataclass
class Group:
    """Instances running as one pipeline; ``members[0]`` is the leader whose engine serves it."""

    members: list[int]
    state: GroupState = GroupState.NORMAL
    planned_s: float = 0.0
    dropped_s: float = math.nan
    ready_s: float = math.nan  # the KV exchange is done; the pipeline may start
    restore_s: float = math.nan
    reloaded_s: float = math.nan
    split_s: float = math.nan
    exchange_s: float = 0.0
    reload_s: float = 0.0
    moved_tokens: int = 0  # KV tokens of running requests at the drop
    num_recomputed: int = 0  # running requests whose KV was dropped (recompute mode)
    trigger: dict = field(default_factory=dict)  # the overload that caused it
    restore_check: dict = field(default_factory=dict)  # the numbers that allowed the restore
    costing: PipelineCosting | None = None
    ref_usage: tuple[float, float] = (0.0, 1.0)  # (time, usage) the "falling" test compares with

    @property
    def leader(self) -> int:
        return self.members[0]

    @property
    def degree(self) -> int:
        return len(self.members)

    def record(self) -> dict:
        stats: PipelineStats | None = self.costing.stats if self.costing else None
        return {
            "members": self.members,
            "degree": self.degree,
            "state": self.state.value,
            "planned_s": self.planned_s,
            "dropped_s": self.dropped_s,
            "ready_s": self.ready_s,
            "exchange_s": self.exchange_s,
            "moved_tokens": self.moved_tokens,
            "num_recomputed": self.num_recomputed,
            "restore_s": self.restore_s,
            "reloaded_s": self.reloaded_s,
            "reload_s": self.reload_s,
            "split_s": self.split_s,
            "trigger": self.trigger,
            "restore_check": self.restore_check,
            "pipeline_steps": stats.num_steps if stats else 0,
            "bubble_fraction": stats.bubble_fraction if stats else None,
        }


def queued_demand(engine: Engine, stop_at: int | None = None) -> int:
    """Blocks the waiting requests need to be admitted (stops counting once past ``stop_at``)."""
    bs = engine.config.block_size
    total = 0
    for req in engine.scheduler.waiting:
        total += cdiv(req.num_tokens, bs) - len(req.block_ids)
        if stop_at is not None and total > stop_at:
            break
    return total


class KunServeController(SampledController):
    """Drops layers of overloaded instances into pipeline groups and restores them (module doc)."""

    def __init__(
        self, cluster: LayeredCluster, cfg: KunServeConfig | None = None, period_s: float = 0.5
    ) -> None:
        super().__init__(cluster.engines, period_s)
        self.cluster = cluster
        self.cfg = cfg if cfg is not None else KunServeConfig()
        n = len(self.engines)
        self.num_layers = cluster.num_layers
        self.initial_memory = [dataclasses.replace(e.memory) for e in self.engines]
        self.initial_blocks = [e.pool.num_blocks for e in self.engines]
        self.initial_config = [e.config for e in self.engines]
        if self.cfg.planner == "fixed":
            self.planner = DROP_PLANNERS.get("fixed")(self.cfg.fixed_degree)
        else:
            self.planner = DROP_PLANNERS.get(self.cfg.planner)(self.cfg.degrees)
        self.group_of: list[Group | None] = [None] * n
        self.held = [False] * n  # planned into a group not dropped yet, or exchanging KV
        self.groups: list[Group] = []
        self._pending: list[Group] = []
        self._targets: list[int] | None = None
        self._epoch = 0  # bumped whenever groups change; a failed plan is retried only after that
        self._no_plan_epoch = -1
        self.sim: Simulator | None = None

    # ---- simulator hooks ------------------------------------------------------------------------
    def start(self, sim: Simulator) -> Iterable[tuple[float, Event]]:
        self.sim = sim
        return super().start(sim)

    def targets(self) -> Sequence[int] | None:
        return self._targets

    def may_step(self, instance: int) -> bool:
        if self.held[instance]:
            return False
        g = self.group_of[instance]
        return g is None or g.leader == instance or g.state is GroupState.NORMAL

    def after_dispatch(self, sim: Simulator, instance: int, now: float) -> Iterable:
        return self._maybe_drop(sim, instance, now)

    def on_step(self, sim: Simulator, instance: int, result: StepResult) -> None:
        g = self.group_of[instance]
        if g is not None and g.costing is not None and g.leader == instance:
            g.costing.record(result.num_steps, result.duration_s)
        if self.cfg.check_invariants:
            check_cluster(self)

    def at_step_end(self, sim: Simulator, instance: int, now: float) -> Iterable:
        g = self.group_of[instance]
        if g is None:
            return self._maybe_drop(sim, instance, now)
        if g.state is GroupState.NORMAL:  # planned: drop once every member is between steps
            return self._drop_when_idle(sim, g, now)
        if g.leader == instance:
            return self._maybe_restore(sim, g, now)
        return ()

    # ---- views for the sampler and the report ---------------------------------------------------
    def live_engines(self) -> Iterable[Engine]:
        for i, e in enumerate(self.engines):
            g = self.group_of[i]
            if g is None or g.leader == i or g.state is GroupState.NORMAL:
                yield e

    def layers_dropped(self) -> int:
        tp = self.cluster.config.tp
        return tp * sum(self.num_layers - e.memory.num_held_layers for e in self.engines)

    def busy_elsewhere(self) -> bool:
        return any(g.state is not GroupState.NORMAL or g in self._pending for g in self.groups)

    def on_sample(self, sim: Simulator, now: float) -> list[tuple[float, Event]]:
        """Idle groups get no step ends: check them for a restore on the sampling clock."""
        follow: list[tuple[float, Event]] = []
        for g in self.groups:
            if g.state is not GroupState.NORMAL and not sim.busy[g.leader]:
                follow.extend(self._maybe_restore(sim, g, now))
        return follow

    def summary(self) -> dict:
        return {"groups": [g.record() for g in self.groups]}

    # ---- trigger and plan -----------------------------------------------------------------------
    def overloaded(self, instance: int) -> dict | None:
        """The overload trigger of a normal instance: its numbers when it fires, else None."""
        e = self.engines[instance]
        pool = e.pool
        usage = pool.usage()
        if usage < self.cfg.trigger_usage or not e.scheduler.waiting:
            return None
        free = pool.num_free
        demand = queued_demand(e, stop_at=free)
        if demand < free:
            return None
        return {"instance": instance, "usage": usage, "free": free, "demand": demand}

    def _load(self, instance: int) -> InstanceLoad:
        e = self.engines[instance]
        return InstanceLoad(
            instance,
            e.pool.num_blocks,
            e.pool.num_used,
            e.pool.num_free,
            queued_demand(e),
            self.overloaded(instance) is not None,
        )

    def group_capacity(self, members: Sequence[int]) -> int:
        """Group blocks ``members`` would have as a pipeline (in this order of stages)."""
        return pipeline_blocks([self.engines[m].memory for m in members], self.num_layers)

    def _maybe_drop(self, sim: Simulator, instance: int, now: float) -> list[tuple[float, Event]]:
        if self.group_of[instance] is not None:
            return []
        trigger = self.overloaded(instance)
        if trigger is None or self._no_plan_epoch == self._epoch:
            return []
        free = [i for i, g in enumerate(self.group_of) if g is None]
        plan = self.planner.plan([self._load(i) for i in free], self.group_capacity)
        if not plan:  # no group can form until some group changes state
            self._no_plan_epoch = self._epoch
            return []
        self._epoch += 1
        follow: list[tuple[float, Event]] = []
        for members in plan:
            g = Group(members, planned_s=now, trigger=dict(trigger, time_s=now))
            self.groups.append(g)
            self._pending.append(g)
            for m in members:
                self.group_of[m] = g
                self.held[m] = True
            follow.extend(self._drop_when_idle(sim, g, now))
        return follow

    # ---- drop ----------------------------------------------------------------------------------
    def _drop_when_idle(self, sim: Simulator, g: Group, now: float) -> list[tuple[float, Event]]:
        if any(sim.busy[m] for m in g.members):
            return []
        self._pending.remove(g)
        return self._drop(g, now)

    def _drop(self, g: Group, now: float) -> list[tuple[float, Event]]:
        engines = self.engines
        leader = engines[g.leader]
        bounds = stage_bounds(self.num_layers, g.degree)
        # KV tokens each member must share out (exchange) before the pipeline can run
        tokens = [
            sum(r.num_computed_tokens for r in engines[m].scheduler.running) for m in g.members
        ]
        moved: list[EngineRequest] = []
        waiting: list[EngineRequest] = []
        recompute = self.cfg.kv_mode == "recompute"
        for m in g.members:
            e = engines[m]
            if m != g.leader or recompute:
                for req in list(e.scheduler.running):
                    e.detach(req, now)
                    moved.append(req)
            if m != g.leader:
                while e.scheduler.waiting:
                    req = e.scheduler.waiting[0]
                    e.detach(req, now)
                    waiting.append(req)
            e.pool.clear_cache()  # cached prefixes lose their other layers' KV
        for m, (lo, hi) in zip(g.members, bounds, strict=True):
            engines[m].memory.hold_layers(lo, hi)
        leader.resize_kv(group_blocks([engines[m].memory for m in g.members]), now)
        for req in moved:
            if recompute:
                req.num_preemptions += 1
                g.num_recomputed += 1
                leader.attach(req, now, with_kv=False)
            elif not leader.attach(req, now, with_kv=True):
                raise AssertionError(f"group of {g.members} cannot hold the KV it had: {req}")
        for req in waiting:
            leader.attach(req, now, with_kv=False)
        # one FCFS queue: requests that already ran (preempted) first, then by arrival
        q = leader.scheduler.waiting
        leader.scheduler.waiting = deque(
            sorted(q, key=lambda r: (r.status is not RequestStatus.PREEMPTED, r.arrival_s))
        )
        base = self.initial_config[g.leader]
        leader.reconfigure(
            dataclasses.replace(
                base,
                max_num_seqs=base.max_num_seqs * g.degree,
                max_num_batched_tokens=base.max_num_batched_tokens * g.degree,
            )
        )
        bw = self.cluster.links.bandwidth(g.members)
        g.costing = PipelineCosting(
            self.cluster.cost_model, [hi - lo for lo, hi in bounds], bw, self.cfg.num_microbatches
        )
        leader.costing = g.costing
        g.exchange_s = 0.0 if recompute else self._exchange_time(g, bounds, tokens, bw)
        g.moved_tokens = sum(tokens)
        g.state = GroupState.DROPPED
        g.dropped_s = now
        g.ready_s = now + g.exchange_s
        g.ref_usage = (now, leader.pool.usage())
        self._refresh_targets()
        for m in g.members:
            self.held[m] = m == g.leader and g.exchange_s > 0
        if g.exchange_s > 0:
            return [(g.ready_s, Call(lambda sim, t, g=g: self._ready(g)))]
        return [(now, Wake(g.leader))]

    def _ready(self, g: Group) -> list[tuple[float, Event]]:
        self.held[g.leader] = False
        return [(g.ready_s, Wake(g.leader))]

    def _exchange_time(
        self, g: Group, bounds: list[tuple[int, int]], tokens: list[int], bw: float | None
    ) -> float:
        """Slowest member's layer-by-layer KV send or receive (each GPU has its own link)."""
        per_layer = self.engines[g.leader].memory.layer_kv_bytes_per_token
        p2p = self.cluster.cost_model.p2p_time
        worst = 0.0
        for k, (lo, hi) in enumerate(bounds):
            held = hi - lo
            send = (self.num_layers - held) * p2p(tokens[k] * per_layer, bw)
            recv = sum(held * p2p(tokens[q] * per_layer, bw) for q in range(g.degree) if q != k)
            worst = max(worst, send, recv)
        return worst

    # ---- restore -------------------------------------------------------------------------------
    def _maybe_restore(self, sim: Simulator, g: Group, now: float) -> list[tuple[float, Event]]:
        leader = self.engines[g.leader]
        if g.state is GroupState.RESTORING:
            if not math.isnan(g.reloaded_s) and not leader.has_work:
                return self._split(g, now)
            return []
        usage = leader.pool.usage()
        t_ref, u_ref = g.ref_usage
        if now - t_ref < self.cfg.restore_check_s:
            return []
        g.ref_usage = (now, usage)
        falling = usage < u_ref or not leader.has_work
        # the cluster must keep somewhere to send requests (unless none are left to come)
        others = any(i != g.leader for i in self._targets or ()) or sim.next_arrival_s == math.inf
        if leader.scheduler.waiting or usage > self.cfg.restore_usage or not falling or not others:
            return []
        # KV pool that fits next to full weights, KV still in the stage layout
        full = [
            staged_memory(
                self.engines[m].memory, 0, self.num_layers, self.engines[m].memory.kv_layers
            )
            for m in g.members
        ]
        blocks = group_blocks(full)
        if leader.pool.num_used > blocks:
            return []
        g.restore_check = {
            "usage": usage,
            "usage_before": u_ref,
            "waiting": len(leader.scheduler.waiting),
            "time_s": now,
        }
        leader.resize_kv(blocks, now)
        g.state = GroupState.RESTORING
        g.restore_s = now
        bw = self.cluster.links.bandwidth(g.members)
        p2p = self.cluster.cost_model.p2p_time
        layer_bytes = leader.memory.layer_param_bytes
        g.reload_s = max(
            (self.num_layers - self.engines[m].memory.num_held_layers) * p2p(layer_bytes, bw)
            for m in g.members
        )
        self._refresh_targets()
        return [(now + g.reload_s, Call(lambda sim, t, g=g: self._reloaded(g, t)))]

    def _reloaded(self, g: Group, now: float) -> list[tuple[float, Event]]:
        for m in g.members:
            mem = self.engines[m].memory
            mem.hold_layers(0, self.num_layers, mem.kv_layers)
        g.reloaded_s = now
        if not self.engines[g.leader].has_work and not self.sim.busy[g.leader]:
            return self._split(g, now)
        return []

    def _split(self, g: Group, now: float) -> list[tuple[float, Event]]:
        leader = self.engines[g.leader]
        leader.pool.clear_cache()  # cached blocks hold only the leader's stage of KV
        leader.costing = ModelCosting(leader.cost_model)
        leader.reconfigure(self.initial_config[g.leader])
        for m in g.members:
            self.engines[m].memory = dataclasses.replace(self.initial_memory[m])
            self.group_of[m] = None
        leader.resize_kv(self.initial_blocks[g.leader], now)
        g.state = GroupState.NORMAL
        g.split_s = now
        self._refresh_targets()
        return [(now, Wake(m)) for m in g.members]

    def _refresh_targets(self) -> None:
        self._epoch += 1
        out = []
        for i, g in enumerate(self.group_of):
            serves = g is None or g.state is GroupState.NORMAL
            if serves or (g.leader == i and g.state is GroupState.DROPPED):
                out.append(i)
        self._targets = None if len(out) == len(self.engines) else out
