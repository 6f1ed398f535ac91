"""One serving instance, advanced one step at a time by whichever clock drives it.

``step(now)`` plans a batch, asks the cost model how long it takes, applies it and stamps the tokens
produced at ``now + duration``. The driver (simulator or HTTP server) must not call ``step`` before
that time. The engine never reads a clock and never sleeps.

Fast-forward: when a step is pure decode and nothing else can change until a request finishes, the
next ``k`` steps are identical in shape. Given a ``horizon`` (the next moment anything outside could
change this engine), ``step`` advances all steps that start before it in one call, with exactly the
durations, token times and block allocations that ``k`` single steps would give.
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from wildserve.engine.admission import AdmissionLog
from wildserve.engine.block_pool import BlockPool
from wildserve.engine.config import EngineConfig
from wildserve.engine.costing import ModelCosting, StepCosting
from wildserve.engine.kv_events import KVEventQueue
from wildserve.engine.kv_manager import KVCacheManager, cdiv
from wildserve.engine.memory import GpuMemory
from wildserve.engine.request import EngineRequest, RequestStatus
from wildserve.engine.scheduler import (
    AdmissionBlocker,
    PreemptionPolicy,
    Scheduler,
    SchedulerOutput,
)
from wildserve.errors import ConfigError
from wildserve.kvcache.host import GIB, HostKVCache, HostMemory
from wildserve.kvcache.policy import make_eviction_policy
from wildserve.perf.batch import StepCostModel

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StepResult:
    """What one ``step`` call did; ``num_steps`` > 1 when a decode run was fast-forwarded."""

    start_s: float
    duration_s: float = 0.0
    num_steps: int = 0
    num_tokens: int = 0  # tokens computed across all steps
    scheduled: list[EngineRequest] = field(default_factory=list)
    # the first step's plan, in batch order like ``scheduled``: tokens computed for each request, and
    # tokens it had in KV before (for a request just admitted: its prefix-cache hit)
    num_new_tokens: list[int] = field(default_factory=list)
    context_tokens: list[int] = field(default_factory=list)
    first_token: list[EngineRequest] = field(default_factory=list)  # produced their first token
    finished: list[EngineRequest] = field(default_factory=list)
    preempted: list[EngineRequest] = field(default_factory=list)
    blocker: AdmissionBlocker = AdmissionBlocker.NONE  # why the waiting head was not admitted

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """What routers and controllers read of one engine at one moment (``Engine.load()``).

    The first five fields are ``Engine.route_load()``'s tuple, in its order."""

    num_running: int
    num_waiting: int
    queued_prefill_tokens: int  # uncached prompt tokens of unfinished requests not yet computed
    kv_usage: float  # fraction of KV blocks in use by requests (vLLM's kv_cache_usage_perc)
    num_kv_blocks: int  # KV blocks the pool holds now
    num_free_blocks: int  # empty plus evictable cached blocks
    num_finished: int
    num_preemptions: int
    num_evictions: int  # cached blocks evicted so far

    @property
    def num_requests(self) -> int:
        return self.num_running + self.num_waiting

    @property
    def num_used_blocks(self) -> int:
        return self.num_kv_blocks - self.num_free_blocks


class Engine:
    """A vLLM-v1-like instance: scheduler, paged KV with prefix caching, a step-cost model.

    Its public face is what other packages use (``sim``, ``overload``, ``gateway``): ``load()``, the
    counters and queries below, the KV events (``kv_events()``) and the driving calls. The
    scheduler, KV manager and pool are internals (a test keeps other packages off them).
    """

    def __init__(
        self,
        config: EngineConfig,
        cost_model: StepCostModel,
        num_blocks: int | None = None,
        instance_id: int = 0,
        memory: GpuMemory | None = None,
        host_memory: HostMemory | None = None,
    ) -> None:
        self.config = config
        self.cost_model = cost_model
        self.costing: StepCosting = ModelCosting(cost_model)  # replaceable: see engine/costing.py
        self.instance_id = instance_id
        self.memory = memory
        num_blocks = config.num_gpu_blocks or num_blocks
        if num_blocks is None:
            if memory is None:
                raise ValueError("Engine needs num_blocks, config.num_gpu_blocks or a GpuMemory")
            num_blocks = memory.num_blocks()
        policy = make_eviction_policy(config.eviction_policy)
        if policy.offline_only:
            raise ConfigError(
                f"eviction policy '{config.eviction_policy}' needs the future; use it offline "
                "(wildserve.kvcache.replay)"
            )
        self.pool = BlockPool(num_blocks, policy)
        self.host = self._host_tier(config, cost_model, memory, host_memory)
        self.kv = KVCacheManager(
            self.pool, config.block_size, config.enable_prefix_caching, self.host
        )
        self.scheduler = Scheduler(config, self.kv)
        self.step_end_s: array = array("d")  # end time of every step taken, in order
        self.num_finished = 0
        self.num_preemptions = 0
        self.busy_s = 0.0
        self._admission = AdmissionLog()

    @staticmethod
    def _host_tier(
        config: EngineConfig,
        cost_model: StepCostModel,
        memory: GpuMemory | None,
        host_memory: HostMemory | None,
    ) -> HostKVCache | None:
        """A host-memory KV tier when ``host_memory`` or ``config.host_memory_gb`` asks for one."""
        if host_memory is None and config.host_memory_gb <= 0:
            return None
        if memory is None:
            raise ConfigError("a host-memory tier needs the GPU memory model (bytes per KV block)")
        if host_memory is None:
            host_memory = HostMemory.for_cost_model(int(config.host_memory_gb * GIB), cost_model)
        return HostKVCache(host_memory, memory.block_bytes)

    # ---- what a router can see -------------------------------------------------------------------
    def load(self) -> EngineLoad:
        """A frozen snapshot of the load and memory figures routers and controllers decide on:
        ``route_load()``'s five and the counters beside them."""
        pool = self.pool
        return EngineLoad(
            *self.route_load(),
            num_free_blocks=pool.num_free,
            num_finished=self.num_finished,
            num_preemptions=self.num_preemptions,
            num_evictions=pool.num_evictions,
        )

    def route_load(self) -> tuple[int, int, int, float, int]:
        """Running, waiting, queued prefill tokens, KV usage and KV blocks (``EngineLoad``'s first
        five fields, in order) as a plain tuple: what a router's view of the engine reads. A
        simulated decision reads every engine, so this is built ~200k times a run, where the frozen
        snapshot cost ~1.5 us each."""
        sched = self.scheduler
        pool = self.pool
        return (
            len(sched.running),
            len(sched.waiting),
            sched.queued_prefill_tokens,
            pool.usage(),
            pool.num_blocks,
        )

    def cached_blocks(self, block_hashes: Sequence[int]) -> int:
        """Length in blocks of the longest cached prefix of ``block_hashes`` (0 without caching)."""
        if not self.config.enable_prefix_caching:
            return 0
        return self.pool.num_matched(block_hashes)

    def kv_events(self) -> KVEventQueue:
        """A new listener's queue of this engine's KV events (``engine/kv_events.py``), from now on."""
        return self.pool.subscribe()

    def cached_block_hashes(self) -> list[int]:
        """Every prefix hash cached now (a listener joining late starts from these)."""
        return list(self.pool.index)

    @property
    def prefix_closed(self) -> bool:
        """Every cached block's parent is cached too (prefix caching on, a prefix-closed policy)."""
        return self.pool.policy.prefix_closed and self.config.enable_prefix_caching

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def queued_prefill_tokens(self) -> int:
        return self.scheduler.queued_prefill_tokens

    def kv_usage(self) -> float:
        return self.pool.usage()

    def cached_tokens(self, block_hashes: list[int]) -> int:
        return self.kv.num_cached_tokens(block_hashes)

    @property
    def has_work(self) -> bool:
        return bool(self.scheduler.running or self.scheduler.waiting)

    @property
    def num_kv_blocks(self) -> int:
        """KV blocks the pool holds now (it may grow or shrink at run time)."""
        return self.pool.num_blocks

    @property
    def num_used_blocks(self) -> int:
        """KV blocks held by requests (cached-but-unreferenced blocks are not used)."""
        return self.pool.num_used

    @property
    def num_free_blocks(self) -> int:
        """KV blocks a new allocation can take (empty plus evictable cached)."""
        return self.pool.num_free

    def running_requests(self) -> tuple[EngineRequest, ...]:
        """The running requests, oldest admission first (a snapshot)."""
        return tuple(self.scheduler.running)

    def waiting_requests(self) -> tuple[EngineRequest, ...]:
        """The waiting requests in queue order (a snapshot)."""
        return tuple(self.scheduler.waiting)

    def queued_kv_demand(self, stop_at: int | None = None) -> int:
        """KV blocks the waiting requests need to be admitted (stops counting once past ``stop_at``)."""
        bs = self.config.block_size
        total = 0
        for req in self.scheduler.waiting:
            total += cdiv(req.num_tokens, bs) - len(req.block_ids)
            if stop_at is not None and total > stop_at:
                break
        return total

    def set_preemption(self, policy: PreemptionPolicy) -> None:
        """How a running request gives up its KV when blocks run out (see ``engine.scheduler``)."""
        self.scheduler.preemption = policy

    def reserve_blocks(self, num_blocks: int, now: float) -> list[int] | None:
        """Take ``num_blocks`` free blocks out of use by requests (e.g. KV arriving by migration);
        None, changing nothing, if fewer are free. Hand them back with ``release_blocks``."""
        if num_blocks > self.pool.num_free:
            return None
        return self.pool.allocate(num_blocks, now)

    def release_blocks(self, block_ids: Sequence[int], now: float) -> None:
        """Return blocks taken by ``reserve_blocks``."""
        self.pool.release(block_ids, now)

    def clear_prefix_cache(self) -> int:
        """Forget every cached prefix block no request holds (e.g. its KV layout changed)."""
        return self.pool.clear_cache()

    def sort_waiting(self, key: Callable[[EngineRequest], object]) -> None:
        """Reorder the waiting queue by ``key`` (stable), e.g. after adopting another engine's queue."""
        self.scheduler.sort_waiting(key)

    @property
    def admission_log(self) -> AdmissionLog:
        """Why the waiting head stayed waiting, one record per step taken (read-only use)."""
        return self._admission

    # ---- driving -------------------------------------------------------------------------------
    def add_request(self, req: EngineRequest, now: float) -> bool:
        """Queue a request; False (and the request finished as aborted) if it can never fit."""
        bs = self.config.block_size
        usable = self.pool.num_blocks - int(self.config.watermark * self.pool.num_blocks)
        if cdiv(req.num_prompt_tokens + req.max_output_tokens, bs) > usable:
            log.warning(
                "request %s needs more KV blocks than the instance has; aborted", req.request_id
            )
            req.status = RequestStatus.FINISHED_ABORTED
            req.finish_s = now
            return False
        req.engine_id = self.instance_id
        self.scheduler.add(req)
        return True

    def abort_request(self, req: EngineRequest, now: float) -> None:
        """Drop a request that has not finished (client went away)."""
        if not req.is_finished:
            self.scheduler.finish(req, RequestStatus.FINISHED_ABORTED, now)

    def detach(self, req: EngineRequest, now: float) -> None:
        """Take an unfinished request out (migration, regrouping) keeping its progress.

        Its blocks are released here; ``num_computed_tokens`` says how much KV the caller moves with
        it, and the token times recorded against this engine's step log are frozen on the request.
        Call only between steps (the driver has reached the end of the last one).
        """
        assert not req.is_finished, req
        self.scheduler.remove(req, now)
        req.freeze_token_times(self.step_end_s)

    def attach(self, req: EngineRequest, now: float, with_kv: bool, front: bool = False) -> bool:
        """Adopt a detached request: running with its KV (blocks for its computed tokens), or queued.

        With ``with_kv`` it returns False, changing nothing, when the blocks do not fit. Without, it
        waits to recompute like a preempted request (at the queue head with ``front``).
        """
        if with_kv and req.num_computed_tokens > 0:
            if not self.scheduler.resume_running(req, now):
                return False
        else:
            self.scheduler.requeue(req, front)
        req.engine_id = self.instance_id
        return True

    def reconfigure(self, config: EngineConfig) -> None:
        """Swap the scheduler limits at run time (a pipeline group batches for all its stages)."""
        if config.block_size != self.config.block_size:
            raise ValueError("block_size cannot change at run time")
        self.config = config
        self.scheduler.reconfigure(config)

    def resize_kv(self, num_blocks: int, now: float) -> None:
        """Grow or (with enough free blocks) shrink the KV pool to ``num_blocks`` blocks."""
        delta = num_blocks - self.pool.num_blocks
        if delta > 0:
            self.pool.grow(delta)
        elif delta < 0:
            self.pool.shrink(-delta, now)

    def step(self, now: float, horizon: float | None = None) -> StepResult:
        """Run one step (or a fast-forwarded decode run ending before ``horizon``) starting at ``now``."""
        out = self.scheduler.schedule(now)
        result = StepResult(start_s=now, preempted=out.preempted, blocker=out.blocker)
        self.num_preemptions += len(out.preempted)
        if not out.scheduled:
            return result
        num_steps = 1
        if horizon is not None and horizon > now and self._can_fast_forward(out):
            durations = self._decode_run(out, now, horizon)
            num_steps = len(durations)
        else:
            durations = [self.costing.step_time(out)]
        if self.host is not None:
            durations[0] += self.kv.take_load_time()  # host hits are copied in before the step
        record = self.config.record_token_times
        first_step = len(self.step_end_s) if record else -1
        if num_steps == 1:
            t = now + durations[0]
            if record:
                self.step_end_s.append(t)
        else:  # the same left-to-right sums as adding one duration at a time
            ends = np.cumsum(np.concatenate(([now], durations)))
            t = ends[-1]
            if record:
                self.step_end_s.frombytes(ends[1:].tobytes())
        result.duration_s = t - now
        result.num_steps = num_steps
        result.scheduled = out.scheduled
        result.num_new_tokens = out.num_new_tokens
        result.context_tokens = out.context_tokens
        self.busy_s += result.duration_s
        update = self.scheduler.update_from_output(out, num_steps, first_step, now, t)
        result.num_tokens = update.num_tokens
        result.first_token = update.first_token
        result.finished = update.finished
        self.num_finished += len(update.finished)
        self._admission.record(
            now,
            result.duration_s,
            num_steps,
            out.blocker,
            result.num_tokens,
            self.config.max_num_batched_tokens,
        )
        return result

    # ---- internals -----------------------------------------------------------------------------
    def _can_fast_forward(self, out: SchedulerOutput) -> bool:
        cfg = self.config
        return (
            cfg.max_fast_forward_steps > 1
            and out.is_pure_decode
            and not out.preempted
            and (out.waiting_stuck or not self.scheduler.waiting)
        )

    def _decode_run(self, out: SchedulerOutput, now: float, horizon: float) -> np.ndarray:
        """Durations of the identical decode steps that start before ``horizon`` and fit in memory."""
        reqs = out.scheduled
        k = min(
            self.config.max_fast_forward_steps,
            min(r.max_output_tokens - r.num_output_tokens for r in reqs),
        )
        durations = self.costing.decode_run_times(out, k)
        if k > 1:
            # cut at the horizon first, then at memory: both cuts keep a prefix of the run (step
            # times do not depend on how many are computed together), and the memory check, one
            # pass over the batch per probe, then covers only the steps that can start
            starts = now + np.cumsum(durations) - durations
            k = max(1, bisect_left(starts, horizon))
            if k > 1:
                k = self._max_steps_in_memory(reqs, k)
            durations = durations[:k]
        return durations

    def _max_steps_in_memory(self, reqs: list[EngineRequest], k: int) -> int:
        """Largest number of decode steps (≤ k) whose new blocks fit in the free pool."""
        free = self.pool.num_free
        need = self.kv.blocks_needed_for_decode

        def fits(steps: int) -> bool:
            total = 0
            for r in reqs:
                total += need(r, steps)
                if total > free:
                    return False
            return True

        if fits(k):
            return k
        lo, hi = 1, k  # fits(1) holds: the scheduler already allocated the first step
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
        return lo
