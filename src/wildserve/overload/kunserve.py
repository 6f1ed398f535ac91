"""KunServe: absorb KV-memory overload by dropping replicated layers and running groups as pipelines.

A group's life is one explicit state machine, ``PLANNED -> DROPPED -> RESTORING -> NORMAL`` (its
instances go normal -> dropped -> restoring -> normal); each transition is a method that checks where
it starts (``Group.advance``).

- Trigger (the authors' ``oom_check``): an instance's KV usage is at least ``trigger_usage`` and its
  queued requests need at least its free blocks. The planner (``plan.py``) picks groups (PLANNED).
- Drop: at the first moment all members are between steps (at most one step after the decision),
  member r keeps layers [r·L/g, (r+1)·L/g); the freed weight bytes join the KV region in place, and the
  leader engine becomes the group: its pool grows to the group's blocks, it adopts the members'
  requests, costs its steps as a pipeline (the first step pays the pipeline fill) and batches for all
  stages (``max_num_seqs`` and the token budget times the degree). Running requests keep their KV
  (``exchange``: layer by layer over the interconnect; the group starts once the slowest member is
  done) or lose it (``recompute``). DROPPED.
- Dispatch: the router sees the group as one unit of g instances (``dispatch.py``); requests routed
  to any member go to the leader, in every state of the group.
- Restore, with hysteresis (the authors' ``valley_check``): once the group has had nothing queued and
  KV usage at most ``restore_usage`` at every check for ``restore_hold_s`` seconds, its pool shrinks to
  what fits next to full weights and the dropped layers are reloaded from the peers at link bandwidth
  (RESTORING). The leader stays dispatchable and the group keeps running as a pipeline meanwhile.
- Split: once the layers are back and the leader is between steps, every request is moved out to a
  home member (largest KV first into the roomiest member), whose KV the other members send it layer
  by layer; the members run as normal instances from then on (NORMAL), held until their KV arrived.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from wildserve.engine import Engine, EngineRequest, StepResult
from wildserve.engine.costing import ModelCosting
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
from wildserve.overload.regroup import assign_homes, drop_exchange_time, gather_time
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
    restore_hold_s: float = field(
        default=5.0,
        metadata={"help": "seconds the group must stay calm (no queue, usage low) to restore"},
    )
    num_microbatches: int = field(
        default=0, metadata={"help": "micro-batches per step (0: one per stage)"}
    )
    charge_fill: bool = field(
        default=True, metadata={"help": "a new pipeline's first step pays the pipeline fill"}
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
        if self.restore_hold_s < 0:
            raise ConfigError(f"restore_hold_s must be >= 0, got {self.restore_hold_s}")


class GroupState(enum.Enum):
    PLANNED = "planned"  # chosen to drop; its members finish their current step
    DROPPED = "dropped"  # running as a pipeline (after its KV exchange), taking requests
    RESTORING = "restoring"  # reloading dropped layers; still a pipeline, still taking requests
    NORMAL = "normal"  # split back into its instances (final)


_NEXT = {
    GroupState.PLANNED: GroupState.DROPPED,
    GroupState.DROPPED: GroupState.RESTORING,
    GroupState.RESTORING: GroupState.NORMAL,
}


@dataclass
class Group:
    """Instances running as one pipeline; ``members[0]`` is the leader whose engine serves it."""

    members: list[int]
    state: GroupState = GroupState.PLANNED
    planned_s: float = 0.0
    dropped_s: float = math.nan
    ready_s: float = math.nan  # the KV exchange is done; the pipeline may start
    calm_since_s: float = math.nan  # since when the restore condition has held (nan: it does not)
    restore_s: float = math.nan
    reloaded_s: float = math.nan
    split_s: float = math.nan
    gathered_s: float = math.nan  # moved-out requests' KV arrived at their homes
    exchange_s: float = 0.0
    reload_s: float = 0.0
    gather_s: float = 0.0
    moved_tokens: int = 0  # KV tokens of running requests at the drop
    num_recomputed: int = 0  # running requests whose KV was dropped (recompute mode, or no room)
    num_moved_out: int = 0  # requests handed to the members at the split
    trigger: dict = field(default_factory=dict)  # the overload that caused it
    restore_check: dict = field(default_factory=dict)  # the numbers that allowed the restore
    costing: PipelineCosting | None = None

    @property
    def leader(self) -> int:
        return self.members[0]

    @property
    def degree(self) -> int:
        return len(self.members)

    @property
    def is_pipeline(self) -> bool:
        """Its leader serves the group's requests as a pipeline (dropped or restoring)."""
        return self.state in (GroupState.DROPPED, GroupState.RESTORING)

    def advance(self, to: GroupState, now: float) -> None:
        """Move to the next state of ``PLANNED -> DROPPED -> RESTORING -> NORMAL``, or raise."""
        if _NEXT.get(self.state) is not to:
            raise AssertionError(f"group {self.members}: no transition {self.state} -> {to}")
        self.state = to
        stamp = {"dropped": "dropped_s", "restoring": "restore_s", "normal": "split_s"}
        setattr(self, stamp[to.value], now)

    def record(self) -> dict:
        stats: PipelineStats | None = self.costing.stats if self.costing else None
        skip = ("state", "costing")
        return {
            **{
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if f.name not in skip
            },
            "degree": self.degree,
            "state": self.state.value,
            "pipeline_steps": stats.num_steps if stats else 0,
            "bubble_fraction": stats.bubble_fraction if stats else None,
            "fill_s": stats.fill_s if stats else 0.0,
        }


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
        self.initial_blocks = [e.num_kv_blocks for e in self.engines]
        self.initial_config = [e.config for e in self.engines]
        if self.cfg.planner == "fixed":
            self.planner = DROP_PLANNERS.get("fixed")(self.cfg.fixed_degree)
        else:
            self.planner = DROP_PLANNERS.get(self.cfg.planner)(self.cfg.degrees)
        self.group_of: list[Group | None] = [None] * n
        self.held = [False] * n  # planned into a group not dropped yet, or waiting for KV
        self.groups: list[Group] = []
        self._epoch = 0  # bumped whenever groups change; a failed plan is retried only after that
        self._no_plan_epoch = -1
        self.sim: Simulator | None = None

    # ---- simulator hooks ------------------------------------------------------------------------
    def start(self, sim: Simulator) -> Iterable[tuple[float, Event]]:
        self.sim = sim
        return super().start(sim)

    def units(self) -> Sequence[Sequence[int]]:
        return [g.members for g in self.groups if g.is_pipeline]

    def serving_instance(self, instance: int) -> int:
        g = self.group_of[instance]
        return g.leader if g is not None and g.is_pipeline else instance

    def may_step(self, instance: int) -> bool:
        if self.held[instance]:
            return False
        g = self.group_of[instance]
        return g is None or g.leader == instance or not g.is_pipeline

    def horizon(self, instance: int) -> float:
        """A decode run of a calm group stops when its restore could start."""
        g = self.group_of[instance]
        if g is None or g.state is not GroupState.DROPPED or g.leader != instance:
            return math.inf
        calm = g.calm_since_s
        return calm + self.cfg.restore_hold_s if calm == calm else math.inf

    def after_dispatch(self, sim: Simulator, instance: int, now: float) -> Iterable:
        g = self.group_of[instance]
        if g is not None and g.is_pipeline:
            g.calm_since_s = math.nan  # something is queued: not calm
        return self._maybe_drop(sim, instance, now)

    def on_step(self, sim: Simulator, instance: int, result: StepResult) -> None:
        g = self.group_of[instance]
        if g is not None and g.costing is not None and g.leader == instance and g.is_pipeline:
            g.costing.record(result.num_steps, result.duration_s)
        if self.cfg.check_invariants:
            check_cluster(self)

    def at_step_end(self, sim: Simulator, instance: int, now: float) -> Iterable:
        g = self.group_of[instance]
        if g is None:
            return self._maybe_drop(sim, instance, now)
        if g.state is GroupState.PLANNED:  # drop once every member is between steps
            return self._drop_when_idle(sim, g, now)
        if g.leader != instance:
            return ()
        if g.state is GroupState.DROPPED:
            return self._maybe_restore(g, now)
        if g.state is GroupState.RESTORING and g.reloaded_s == g.reloaded_s:
            return self._split(g, now)
        return ()

    def on_sample(self, sim: Simulator, now: float) -> list[tuple[float, Event]]:
        """Idle groups get no step ends: check them for a restore on the sampling clock."""
        follow: list[tuple[float, Event]] = []
        for g in self.groups:
            if g.state is GroupState.DROPPED and not sim.busy[g.leader] and not self.held[g.leader]:
                follow.extend(self._maybe_restore(g, now))
        return follow

    # ---- views for the sampler and the report ---------------------------------------------------
    def live_engines(self) -> Iterable[Engine]:
        for i, e in enumerate(self.engines):
            g = self.group_of[i]
            if g is None or g.leader == i or not g.is_pipeline:
                yield e

    def layers_dropped(self) -> int:
        tp = self.cluster.config.tp
        return tp * sum(self.num_layers - e.memory.num_held_layers for e in self.engines)

    def busy_elsewhere(self) -> bool:
        return any(g.state is not GroupState.NORMAL for g in self.groups) or any(self.held)

    def summary(self) -> dict:
        return {"groups": [g.record() for g in self.groups]}

    # ---- trigger and plan -----------------------------------------------------------------------
    def overloaded(self, instance: int) -> dict | None:
        """The overload trigger of a normal instance: its numbers when it fires, else None."""
        e = self.engines[instance]
        usage = e.kv_usage()
        if usage < self.cfg.trigger_usage or not e.num_waiting:
            return None
        free = e.num_free_blocks
        demand = e.queued_kv_demand(stop_at=free)
        if demand < free:
            return None
        return {"instance": instance, "usage": usage, "free": free, "demand": demand}

    def _load(self, instance: int) -> InstanceLoad:
        e = self.engines[instance]
        return InstanceLoad(
            instance,
            e.num_kv_blocks,
            e.num_used_blocks,
            e.num_free_blocks,
            e.queued_kv_demand(),
            self.overloaded(instance) is not None,
        )

    def group_capacity(self, members: Sequence[int]) -> int:
        """Group blocks ``members`` would have as a pipeline (in this order of stages)."""
        return pipeline_blocks([self.engines[m].memory for m in members], self.num_layers)

    def _maybe_drop(self, sim: Simulator, instance: int, now: float) -> list[tuple[float, Event]]:
        if self.group_of[instance] is not None or self.held[instance]:
            return []
        trigger = self.overloaded(instance)
        if trigger is None or self._no_plan_epoch == self._epoch:
            return []
        free = [i for i, g in enumerate(self.group_of) if g is None and not self.held[i]]
        plan = self.planner.plan([self._load(i) for i in free], self.group_capacity)
        if not plan:  # no group can form until some group changes state
            self._no_plan_epoch = self._epoch
            return []
        self._epoch += 1
        follow: list[tuple[float, Event]] = []
        for members in plan:
            g = Group(members, planned_s=now, trigger=dict(trigger, time_s=now))
            self.groups.append(g)
            for m in members:
                self.group_of[m] = g
                self.held[m] = True
            follow.extend(self._drop_when_idle(sim, g, now))
        return follow

    # ---- drop ----------------------------------------------------------------------------------
    def _drop_when_idle(self, sim: Simulator, g: Group, now: float) -> list[tuple[float, Event]]:
        if g.state is not GroupState.PLANNED or any(sim.busy[m] for m in g.members):
            return []
        return self._drop(g, now)

    def _drop(self, g: Group, now: float) -> list[tuple[float, Event]]:
        engines = self.engines
        leader = engines[g.leader]
        bounds = stage_bounds(self.num_layers, g.degree)
        # KV tokens each member must share out (exchange) before the pipeline can run
        tokens = [
            sum(r.num_computed_tokens for r in engines[m].running_requests()) for m in g.members
        ]
        moved: list[EngineRequest] = []
        waiting: list[EngineRequest] = []
        recompute = self.cfg.kv_mode == "recompute"
        for m in g.members:
            e = engines[m]
            if m != g.leader or recompute:
                for req in e.running_requests():
                    e.detach(req, now)
                    moved.append(req)
            if m != g.leader:
                for req in e.waiting_requests():
                    e.detach(req, now)
                    waiting.append(req)
            e.clear_prefix_cache()  # cached prefixes lose their other layers' KV
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
        leader.sort_waiting(lambda r: (r.status is not RequestStatus.PREEMPTED, r.arrival_s))
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
            self.cluster.cost_model,
            [hi - lo for lo, hi in bounds],
            bw,
            self.cfg.num_microbatches,
            charge_fill=self.cfg.charge_fill,
        )
        leader.costing = g.costing
        if not recompute:
            g.exchange_s = drop_exchange_time(
                bounds,
                tokens,
                leader.memory.layer_kv_bytes_per_token,
                self.num_layers,
                self.cluster.cost_model.p2p_time,
                bw,
            )
        g.moved_tokens = sum(tokens)
        g.advance(GroupState.DROPPED, now)
        g.ready_s = now + g.exchange_s
        self._epoch += 1
        for m in g.members:
            self.held[m] = m == g.leader and g.exchange_s > 0
        if g.exchange_s > 0:
            return [(g.ready_s, Call(lambda sim, t, g=g: self._release([g.leader], t)))]
        return [(now, Wake(g.leader))]

    def _release(self, members: Sequence[int], now: float) -> list[tuple[float, Event]]:
        for m in members:
            self.held[m] = False
        return [(now, Wake(m)) for m in members]

    # ---- restore -------------------------------------------------------------------------------
    def _restored_blocks(self, g: Group) -> int:
        """Group blocks with full weights back on every member, KV still in the stage layout."""
        full = [
            staged_memory(
                self.engines[m].memory, 0, self.num_layers, self.engines[m].memory.kv_layers
            )
            for m in g.members
        ]
        return group_blocks(full)

    def _maybe_restore(self, g: Group, now: float) -> list[tuple[float, Event]]:
        """Hysteresis: restore once the group has been calm for ``restore_hold_s`` (module doc)."""
        leader = self.engines[g.leader]
        if now < g.ready_s:
            return []
        usage = leader.kv_usage()
        if leader.num_waiting or usage > self.cfg.restore_usage:
            g.calm_since_s = math.nan
            return []
        if g.calm_since_s != g.calm_since_s:
            g.calm_since_s = now
        if now - g.calm_since_s < self.cfg.restore_hold_s:
            return []
        blocks = self._restored_blocks(g)
        if leader.num_used_blocks > blocks:
            return []
        g.restore_check = {
            "usage": usage,
            "waiting": leader.num_waiting,
            "calm_since_s": g.calm_since_s,
            "time_s": now,
        }
        leader.resize_kv(blocks, now)
        g.advance(GroupState.RESTORING, now)
        bw = self.cluster.links.bandwidth(g.members)
        p2p = self.cluster.cost_model.p2p_time
        layer_bytes = leader.memory.layer_param_bytes
        g.reload_s = max(
            (self.num_layers - self.engines[m].memory.num_held_layers) * p2p(layer_bytes, bw)
            for m in g.members
        )
        return [(now + g.reload_s, Call(lambda sim, t, g=g: self._reloaded(g, t)))]

    def _reloaded(self, g: Group, now: float) -> list[tuple[float, Event]]:
        for m in g.members:
            mem = self.engines[m].memory
            mem.hold_layers(0, self.num_layers, mem.kv_layers)
        g.reloaded_s = now
        if self.sim is not None and not self.sim.busy[g.leader]:
            return self._split(g, now)
        return []  # split at the leader's step end

    def _split(self, g: Group, now: float) -> list[tuple[float, Event]]:
        """Move every request out to a home member and run the members as instances again."""
        engines = self.engines
        leader = engines[g.leader]
        running = list(leader.running_requests())
        waiting = list(leader.waiting_requests())
        blocks = [len(r.block_ids) for r in running]
        for req in (*running, *waiting):
            leader.detach(req, now)
        leader.clear_prefix_cache()  # cached blocks hold only the leader's stage of KV
        for m in g.members:
            engines[m].memory = dataclasses.replace(self.initial_memory[m])
            self.group_of[m] = None
        leader.costing = ModelCosting(leader.cost_model)
        leader.reconfigure(self.initial_config[g.leader])
        leader.resize_kv(self.initial_blocks[g.leader], now)
        rooms = [engines[m].num_kv_blocks - engines[m].num_used_blocks for m in g.members]
        homes = assign_homes(blocks, rooms)
        home_tokens = [0] * g.degree
        for req, k in zip(running, homes, strict=True):
            if k < 0 or not engines[g.members[k]].attach(req, now, with_kv=True):
                k = max(range(g.degree), key=lambda k: (rooms[k], -k)) if k < 0 else k
                req.num_preemptions += 1
                g.num_recomputed += 1
                engines[g.members[k]].attach(req, now, with_kv=False)
            else:
                home_tokens[k] += req.num_computed_tokens
        # the queue is dealt over the members in order, each member's share keeping FCFS order
        for i, req in enumerate(waiting):
            engines[g.members[i % g.degree]].attach(req, now, with_kv=False)
        for m in g.members:
            engines[m].sort_waiting(
                lambda r: (r.status is not RequestStatus.PREEMPTED, r.arrival_s)
            )
        g.num_moved_out = len(running) + len(waiting)
        g.gather_s = gather_time(
            stage_bounds(self.num_layers, g.degree),
            home_tokens,
            self.initial_memory[g.leader].layer_kv_bytes_per_token,
            self.num_layers,
            self.cluster.cost_model.p2p_time,
            self.cluster.links.bandwidth(g.members),
        )
        g.advance(GroupState.NORMAL, now)
        g.gathered_s = now + g.gather_s
        self._epoch += 1
        if g.gather_s > 0:
            for m in g.members:
                self.held[m] = True
            return [(g.gathered_s, Call(lambda sim, t, ms=list(g.members): self._release(ms, t)))]
        return [(now, Wake(m)) for m in g.members]
