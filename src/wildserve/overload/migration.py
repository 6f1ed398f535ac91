"""Llumnix-style live migration: move running requests with their KV from overloaded to free instances.

Freeness (``wildserve.routing.llumnix.freeness``) rates instances. After each step of an instance whose
freeness is below ``src_freeness`` (its queued requests need more blocks than it has free), the
decoding request with the fewest KV blocks moves to the freest instance that can hold it, in stages
over the interconnect: each stage copies the blocks that existed when it began (the request keeps
decoding at the source meanwhile); once a stage leaves at most ``stop_blocks`` new blocks (or after
``max_stages``), the request stops between two of the source's steps, the rest is copied (the only
downtime), and it resumes at the destination. Destination blocks are reserved as they are copied, and
a migration is abandoned if the request finishes, is preempted, or the destination runs out of room.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from wildserve.engine import Engine, EngineRequest, RequestStatus
from wildserve.overload.layout import Links
from wildserve.overload.timeline import SampledController
from wildserve.perf.analytic import StepCostBase
from wildserve.routing.llumnix import freeness, unpromised_blocks
from wildserve.routing.view import RouteRequest
from wildserve.sim.events import Call, Event
from wildserve.sim.simulator import ExactViews, Simulator, Wake

_NO_REQUEST = RouteRequest(request_id=-1, prompt_tokens=1, block_hashes=(), block_size=16)


@dataclass(frozen=True)
class LlumnixConfig:
    """When and how requests migrate."""

    src_freeness: float = field(default=0.0, metadata={"help": "migrate out below this freeness"})
    dst_freeness: float = field(
        default=0.0, metadata={"help": "migrate in only above this freeness"}
    )
    stop_blocks: int = field(
        default=1, metadata={"help": "final stop-and-copy at most this many blocks"}
    )
    max_stages: int = field(default=8, metadata={"help": "stages before the final copy is forced"})


@dataclass
class Migration:
    """One request on its way from ``src`` to ``dst``."""

    req: EngineRequest
    src: int
    dst: int
    started_s: float
    preemptions: int = 0  # the request's count at the start: a preemption voids the copy
    stages: int = 0
    copied: int = 0  # blocks already at the destination
    reserved: list[int] = field(default_factory=list)  # destination blocks held for them
    next_s: float = math.inf  # when the current stage (or the final copy) ends
    switching: bool = False  # copying the last blocks; the request is off both engines
    ready: bool = False  # stage copy done; waiting for the source to reach a step boundary
    switched_s: float = math.nan  # left the source (the downtime starts)
    done_s: float = math.nan
    outcome: str = ""  # "moved" or why it was abandoned


class LlumnixController(SampledController):
    """Starts and advances staged migrations (module doc)."""

    def __init__(
        self,
        engines: Sequence[Engine],
        cost_model: StepCostBase,
        links: Links | None = None,
        cfg: LlumnixConfig | None = None,
        period_s: float = 0.5,
    ) -> None:
        super().__init__(engines, period_s)
        self.cost_model = cost_model
        self.links = links if links is not None else Links()
        self.cfg = cfg if cfg is not None else LlumnixConfig()
        self.active: list[Migration] = []
        self.history: list[Migration] = []
        self._views = ExactViews(self.engines, shared_index=False)
        self._out = [0] * len(self.engines)  # migrations leaving each instance
        self._in = [0] * len(self.engines)

    # ---- hooks ---------------------------------------------------------------------------------
    def horizon(self, instance: int) -> float:
        t = math.inf
        for m in self.active:
            if instance in (m.src, m.dst):
                t = min(t, m.next_s)
        return t

    def busy_elsewhere(self) -> bool:
        return bool(self.active)

    def extra_sample(self) -> dict[str, float]:
        return {"migrations_in_flight": float(len(self.active))}

    def at_step_end(self, sim: Simulator, instance: int, now: float) -> Iterable:
        follow: list[tuple[float, Event]] = []
        for m in [m for m in self.active if m.src == instance and m.ready]:
            follow.extend(self._switch(m, now))
        follow.extend(self._maybe_migrate(sim, instance, now))
        return follow

    def summary(self) -> dict:
        moved = [m for m in self.history if m.outcome == "moved"]
        return {
            "migrations": len(moved),
            "abandoned": len(self.history) - len(moved),
            "moved_blocks": sum(m.copied for m in moved),
        }

    # ---- starting ------------------------------------------------------------------------------
    def _maybe_migrate(self, sim: Simulator, src: int, now: float) -> list[tuple[float, Event]]:
        if self._out[src]:
            return []
        if freeness(self._views.view(src)) >= self.cfg.src_freeness:  # the common case: cheap
            return []
        source = self.engines[src]
        candidates = [r for r in source.running_requests() if not r.in_prefill and r.block_ids]
        if not candidates:
            return []
        req = min(candidates, key=lambda r: (len(r.block_ids), r.arrival_s))
        need = len(req.block_ids) + self.cfg.stop_blocks + 1
        best, best_f = -1, self.cfg.dst_freeness
        for i, v in enumerate(self._views.views(_NO_REQUEST)):
            if i == src or self._in[i]:
                continue
            f = freeness(v)
            if unpromised_blocks(v) >= need and f > best_f:
                best, best_f = i, f
        if best < 0:
            return []
        m = Migration(req, src, best, now, req.num_preemptions)
        self.active.append(m)
        self._out[src] += 1
        self._in[best] += 1
        return self._stage(m, now)

    # ---- advancing -----------------------------------------------------------------------------
    def _bytes(self, m: Migration, blocks: int) -> float:
        mem = self.engines[m.src].memory
        return blocks * mem.block_bytes if mem is not None else 0.0

    def _reserve(self, m: Migration, blocks: int, now: float) -> bool:
        got = self.engines[m.dst].reserve_blocks(blocks, now)
        if got is None:
            return False
        m.reserved += got
        return True

    def _stage(self, m: Migration, now: float) -> list[tuple[float, Event]]:
        blocks = len(m.req.block_ids) - m.copied
        if not self._reserve(m, blocks, now):
            return self._abandon(m, now, "destination full")
        m.stages += 1
        bw = self.links.bandwidth([m.src, m.dst])
        m.next_s = now + self.cost_model.p2p_time(self._bytes(m, blocks), bw)
        return [(m.next_s, Call(lambda sim, t, m=m, b=blocks: self._stage_done(sim, m, b, t)))]

    def _still_there(self, m: Migration) -> bool:
        req = m.req
        return req.status is RequestStatus.RUNNING and req.num_preemptions == m.preemptions

    def _stage_done(
        self, sim: Simulator, m: Migration, blocks: int, now: float
    ) -> list[tuple[float, Event]]:
        req = m.req
        if not self._still_there(m):
            return self._abandon(m, now, "finished or preempted at the source")
        m.copied += blocks
        left = len(req.block_ids) - m.copied
        if left > self.cfg.stop_blocks and m.stages < self.cfg.max_stages:
            return self._stage(m, now)
        m.ready = True
        m.next_s = math.inf
        if sim.busy[m.src]:
            return []  # switch at the source's next step boundary (at_step_end)
        return self._switch(m, now)

    def _switch(self, m: Migration, now: float) -> list[tuple[float, Event]]:
        req = m.req
        m.ready = False
        if not self._still_there(m):
            return self._abandon(m, now, "finished or preempted at the source")
        left = len(req.block_ids) - m.copied
        if not self._reserve(m, left, now):
            return self._abandon(m, now, "destination full")
        self.engines[m.src].detach(req, now)
        m.switching = True
        m.switched_s = now
        bw = self.links.bandwidth([m.src, m.dst])
        m.next_s = now + self.cost_model.p2p_time(self._bytes(m, left), bw)
        m.copied += left
        return [(m.next_s, Call(lambda sim, t, m=m: self._land(m, t))), (now, Wake(m.src))]

    def _land(self, m: Migration, now: float) -> list[tuple[float, Event]]:
        dst = self.engines[m.dst]
        dst.release_blocks(m.reserved, now)
        m.reserved = []
        if not dst.attach(m.req, now, with_kv=True):
            raise AssertionError(f"reserved blocks vanished at instance {m.dst}: {m.req}")
        self._close(m, now, "moved")
        return [(now, Wake(m.dst))]

    def _abandon(self, m: Migration, now: float, why: str) -> list[tuple[float, Event]]:
        if m.reserved:
            self.engines[m.dst].release_blocks(m.reserved, now)
            m.reserved = []
        self._close(m, now, why)
        return []

    def _close(self, m: Migration, now: float, outcome: str) -> None:
        m.done_s = now
        m.outcome = outcome
        m.next_s = math.inf
        self.active.remove(m)
        self.history.append(m)
        self._out[m.src] -= 1
        self._in[m.dst] -= 1
