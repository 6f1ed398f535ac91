"""The cluster simulator: arrivals are routed to engines, engines step on a virtual clock.

Two events exist. ``RequestArrival`` asks the routing policy for an instance (using views of every
instance as of now), hands the request to that engine and schedules the next arrival.
``StepEnd`` lets an instance plan its next step. An engine may fast-forward a run of identical decode
steps, but never past the next arrival, which is the only thing that can change its course.

An optional ``ClusterController`` (overload handling, migration) hooks into the same loop: it hears
every dispatch, step and step end, may hold an instance back, narrows the instances new requests may
go to (or reshapes the views the router sees, e.g. for a group of instances serving as one), bounds
fast-forward runs by its own next event, and schedules ``Call`` and ``Wake`` events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from wildserve.engine import Engine, EngineRequest, StepResult, as_hashes
from wildserve.engine.kv_events import BlockRemoved, BlockStored, KVEventQueue
from wildserve.metrics import RequestMetrics
from wildserve.routing.policy import RoutingPolicy
from wildserve.routing.prefix_match import ClusterPrefixIndex, LazyPrefixMatch
from wildserve.routing.view import InstanceView, RouteRequest, ViewSource
from wildserve.sim.events import Event, EventQueue
from wildserve.workload.request import Request


class ExactViews:
    """Views read straight from the engines' public face: what a router fed by KV events and
    metrics sees.

    With ``shared_index`` (default: on from 32 instances, when every cache is prefix-closed) a
    cluster-wide hash -> holders index, kept current by the engines' KV events (drained before each
    decision), finds every instance's match in one parallel galloping search; otherwise each engine
    is asked in turn.
    """

    def __init__(self, engines: Sequence[Engine], shared_index: bool | None = None) -> None:
        self.engines = engines
        closed = all(e.prefix_closed for e in engines)
        if shared_index is None:
            shared_index = closed and len(engines) >= 32
        if shared_index and not closed:
            raise ValueError(
                "a shared prefix index needs prefix-closed caches (LRU, prefix caching on)"
            )
        self.index: ClusterPrefixIndex | None = None
        self._events: list[KVEventQueue] = []
        if shared_index:
            self.index = ClusterPrefixIndex(len(engines))
            for i, e in enumerate(engines):
                self._events.append(e.kv_events())
                self.index.stored(i, e.cached_block_hashes())

    def _apply_events(self) -> None:
        index = self.index
        assert index is not None
        for i, queue in enumerate(self._events):
            for ev in queue.drain():
                if type(ev) is BlockStored:
                    index.stored(i, ev.block_hashes)
                elif type(ev) is BlockRemoved:
                    index.removed(i, ev.block_hashes)
                # AllCleared: the removals it made came before it

    def views(self, request: RouteRequest) -> list[InstanceView]:
        if self.index is None:
            # the request's hashes as one int64 array for every engine's lookup (not one per view)
            hashes = request.block_hashes
            arr = request.block_hash_array
            if arr is None:
                arr = as_hashes(hashes) if len(hashes) else hashes
            return [
                self._view(i, e, _same_request_match(e.cached_blocks, hashes, arr))
                for i, e in enumerate(self.engines)
            ]
        self._apply_events()
        shared = LazyPrefixMatch(self.index.match_lengths, request.block_hashes)
        return [
            self._view(i, e, shared.for_instance(i, e.cached_blocks))
            for i, e in enumerate(self.engines)
        ]

    def view(
        self, instance: int, match: Callable[[Sequence[int]], int] | None = None
    ) -> InstanceView:
        """One instance's view; ``match`` answers its prefix lookups (default: the engine's own)."""
        e = self.engines[instance]
        return self._view(instance, e, e.cached_blocks if match is None else match)

    @staticmethod
    def _view(instance: int, e: Engine, match: Callable[[Sequence[int]], int]) -> InstanceView:
        config = e.config
        running, waiting, queued, usage, num_blocks = e.route_load()
        # positional, in InstanceView's field order (half the cost of keywords; 16 per decision)
        return InstanceView(
            instance,
            running,
            waiting,
            queued,
            usage,
            num_blocks,
            config.block_size,
            match if config.enable_prefix_caching else _zero,
        )

    # exact views need no bookkeeping of their own
    def on_dispatch(self, instance_id: int, request: RouteRequest) -> None:
        pass

    def on_first_token(self, request_id: object) -> None:
        pass

    def on_finish(self, request_id: object) -> None:
        pass


def _zero(block_hashes: Sequence[int]) -> int:
    return 0


def _same_request_match(
    cached_blocks: Callable[[Sequence[int]], int], hashes: Sequence[int], arr: Sequence[int]
) -> Callable[[Sequence[int]], int]:
    """``cached_blocks``, handed ``arr`` when asked about ``hashes`` (the decision's request)."""
    return lambda block_hashes: cached_blocks(arr if block_hashes is hashes else block_hashes)


class ClusterController:
    """Cluster-level behaviour driven by the simulator's events; every hook here does nothing."""

    def start(self, sim: Simulator) -> Iterable[tuple[float, Event]]:
        """Called once before the first event; may schedule events."""
        return ()

    def targets(self) -> Sequence[int] | None:
        """Instances a new request may be routed to, in view order (None: all of them)."""
        return None

    def route_views(
        self, views: list[InstanceView]
    ) -> tuple[Sequence[InstanceView], Sequence[int] | None]:
        """The views the router decides on and the instances it may pick (default: as built)."""
        return views, self.targets()

    def serving_instance(self, instance: int) -> int:
        """The engine that serves a request routed to ``instance`` (default: that instance's)."""
        return instance

    def may_step(self, instance: int) -> bool:
        """False holds the instance idle (it is woken later by a ``Wake`` event)."""
        return True

    def horizon(self, instance: int) -> float:
        """Next time this controller may change ``instance``; fast-forward runs stop before it."""
        return math.inf

    def after_dispatch(
        self, sim: Simulator, instance: int, now: float
    ) -> Iterable[tuple[float, Event]]:
        return ()

    def on_step(self, sim: Simulator, instance: int, result: StepResult) -> None:
        """The instance planned a step (or a decode run) that ends at ``result.end_s``."""

    def at_step_end(
        self, sim: Simulator, instance: int, now: float
    ) -> Iterable[tuple[float, Event]]:
        """The instance reached the end of its step, before it plans the next one."""
        return ()


class Wake(Event):
    """Let an idle instance plan a step (after a controller stopped holding it back)."""

    priority = 1

    __slots__ = ("instance",)

    def __init__(self, instance: int) -> None:
        self.instance = instance

    def handle(self, sim: Simulator, now: float) -> Iterable[tuple[float, Event]]:
        if sim.busy[self.instance]:
            return ()
        return sim.start_step(self.instance, now)


class RequestArrival(Event):
    priority = 0  # a request arriving when a step ends is seen by that next step

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def handle(self, sim: Simulator, now: float) -> Iterable[tuple[float, Event]]:
        follow: list[tuple[float, Event]] = []
        nxt = self.index + 1
        if nxt < len(sim.requests):
            sim.next_arrival_s = sim.requests[nxt].arrival_s
            follow.append((sim.next_arrival_s, RequestArrival(nxt)))
        else:
            sim.next_arrival_s = math.inf
        instance = sim.dispatch(self.index, now)
        if instance is not None:
            if sim.controller is not None:
                follow.extend(sim.controller.after_dispatch(sim, instance, now))
            if not sim.busy[instance]:
                follow.extend(sim.start_step(instance, now))
        return follow


class StepEnd(Event):
    priority = 1

    __slots__ = ("instance",)

    def __init__(self, instance: int) -> None:
        self.instance = instance

    def handle(self, sim: Simulator, now: float) -> Iterable[tuple[float, Event]]:
        sim.busy[self.instance] = False
        if sim.controller is None:
            return sim.start_step(self.instance, now)
        follow = list(sim.controller.at_step_end(sim, self.instance, now))
        if not sim.busy[self.instance]:
            follow.extend(sim.start_step(self.instance, now))
        return follow


@dataclass
class SimResult:
    """Everything a run produced; metrics are computed from it on demand."""

    requests: list[EngineRequest]
    instances: list[int]  # instance each request went to (-1: never dispatched)
    engines: list[Engine]
    wall_s: float
    end_s: float
    extra: dict = field(default_factory=dict)

    def metrics(self) -> RequestMetrics:
        return RequestMetrics.from_requests(self.requests, self.instances)


class Simulator:
    """Replays requests against a cluster of engines under one routing policy."""

    def __init__(
        self,
        engines: Sequence[Engine],
        policy: RoutingPolicy,
        views: ViewSource | None = None,
        progress: Callable[[int, int], None] | None = None,
        controller: ClusterController | None = None,
    ) -> None:
        self.engines = list(engines)
        self.controller = controller
        self.policy = policy
        self.view_source = views if views is not None else ExactViews(self.engines)
        self.progress = progress
        self.busy = [False] * len(self.engines)
        self.next_arrival_s = math.inf
        self.requests: list[Request] = []
        self.engine_requests: list[EngineRequest] = []
        self.instances: list[int] = []
        self._categories: dict[str | None, int] = {}

    def run(self, requests: Sequence[Request]) -> SimResult:
        """Simulate until every request has finished; requests must be sorted by arrival."""
        wall0 = time.perf_counter()
        self.requests = list(requests)
        for a, b in zip(self.requests, self.requests[1:], strict=False):
            if b.arrival_s < a.arrival_s:
                raise ValueError("requests must be sorted by arrival time")
        self.engine_requests = []
        self.instances = [-1] * len(self.requests)
        queue = EventQueue()
        if self.requests:
            self.next_arrival_s = self.requests[0].arrival_s
            queue.push(self.next_arrival_s, RequestArrival(0))
        if self.controller is not None:
            for t, event in self.controller.start(self):
                queue.push(t, event)
        now = 0.0
        handled = 0
        total = len(self.requests)
        while queue:
            now, event = queue.pop()
            for t, follow in event.handle(self, now):
                queue.push(t, follow)
            handled += 1
            if self.progress is not None and handled % 512 == 0:
                self.progress(sum(e.num_finished for e in self.engines), total)
        if self.progress is not None:
            self.progress(sum(e.num_finished for e in self.engines), total)
        return SimResult(
            requests=self.engine_requests,
            instances=self.instances,
            engines=self.engines,
            wall_s=time.perf_counter() - wall0,
            end_s=now,
            extra={"events": handled},
        )

    def dispatch(self, index: int, now: float) -> int | None:
        """Route request ``index`` and hand it to the chosen engine; None if it was rejected."""
        req = self.requests[index]
        block_size = self.engines[0].config.block_size
        hashes = req.engine_block_hash_array(block_size)  # the engine request keeps this array
        route = RouteRequest(
            request_id=req.request_id,
            prompt_tokens=req.prompt_tokens,
            block_hashes=hashes.tolist(),
            block_size=block_size,
            session_id=req.session_id,
            category=req.category,
            block_hash_array=hashes,
        )
        views = self.view_source.views(route)
        if self.controller is None:
            instance = chosen = self.policy.choose_among(route, views, None)
        else:
            shown, targets = self.controller.route_views(views)
            chosen = self.policy.choose_among(route, shown, targets)
            instance = self.controller.serving_instance(chosen)
        cat = self._categories.setdefault(req.category, len(self._categories))
        ereq = EngineRequest(
            req.request_id, req.arrival_s, req.prompt_tokens, req.output_tokens, hashes, cat, req
        )
        self.engine_requests.append(ereq)
        self.instances[index] = instance
        self.policy.on_dispatch(chosen, route)
        self.view_source.on_dispatch(instance, route)
        if not self.engines[instance].add_request(ereq, now):
            self.view_source.on_finish(ereq.request_id)
            return None
        return instance

    def start_step(self, instance: int, now: float) -> list[tuple[float, Event]]:
        engine = self.engines[instance]
        if not engine.has_work:
            return []
        ctl = self.controller
        if ctl is None:
            result = engine.step(now, horizon=self.next_arrival_s)
        else:
            if not ctl.may_step(instance):
                return []
            result = engine.step(now, horizon=min(self.next_arrival_s, ctl.horizon(instance)))
            ctl.on_step(self, instance, result)
        source = self.view_source
        for req in result.first_token:
            source.on_first_token(req.request_id)
        for req in result.finished:
            source.on_finish(req.request_id)
        if result.num_steps == 0:
            return []
        self.busy[instance] = True
        return [(result.end_s, StepEnd(instance))]
