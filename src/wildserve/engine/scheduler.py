"""One step's plan, vLLM v1 style: running requests first, then admissions, from one token budget.

``schedule`` plans a step and ``update_from_output`` applies it once it is done (vLLM v1's split):
the engine in between only costs the plan and stamps times. There are no prefill or decode phases:
each scheduled request gets the tokens that bring its KV cache closer to its token count. When blocks run out, the newest running request is preempted and goes back
to the head of the waiting queue. How it gives up its KV is a replaceable ``PreemptionPolicy``: the
default recomputes (vLLM v1); ``wildserve.overload`` adds swapping and preserving. A waiting request
that still has computed tokens kept its KV through its preemption and is resumed, not recomputed.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from wildserve.engine.config import EngineConfig
from wildserve.engine.kv_manager import KVCacheManager
from wildserve.engine.request import EngineRequest, RequestStatus


class AdmissionBlocker(enum.IntEnum):
    """Why the head of the waiting queue was not admitted in a step (``NONE``: nothing was left)."""

    NONE = 0  # the waiting queue was empty or fully admitted
    KV_BLOCKS = 1  # its blocks (plus the free-block watermark) do not fit
    TOKEN_BUDGET = 2  # the step's token budget was spent before it
    SEATS = 3  # ``max_num_seqs`` requests already run
    PREEMPTING = 4  # the step preempted a running request, so it admits nothing (vLLM)
    TRANSFER = 5  # its kept KV cannot be copied back in this step (a swap budget)


@dataclass(slots=True)
class SchedulerOutput:
    """What one step computes; the engine costs it, then applies it."""

    scheduled: list[EngineRequest] = field(default_factory=list)  # in batch order
    num_new_tokens: list[int] = field(default_factory=list)  # tokens computed for each, same order
    context_tokens: list[int] = field(default_factory=list)  # tokens already in KV for each
    preempted: list[EngineRequest] = field(default_factory=list)
    num_admitted: int = 0
    is_pure_decode: bool = True  # every scheduled request computes exactly its next decode token
    blocker: AdmissionBlocker = AdmissionBlocker.NONE  # why the waiting head stayed waiting

    @property
    def total_tokens(self) -> int:
        return sum(self.num_new_tokens)

    @property
    def waiting_stuck(self) -> bool:
        """The waiting head cannot get in until a running request finishes (blocks or seats)."""
        return self.blocker in (AdmissionBlocker.KV_BLOCKS, AdmissionBlocker.SEATS)


@dataclass(slots=True)
class StepUpdate:
    """What applying one step (or a fast-forwarded decode run) changed, for the engine's result."""

    num_tokens: int = 0  # tokens computed across all steps
    first_token: list[EngineRequest] = field(default_factory=list)  # produced their first token
    finished: list[EngineRequest] = field(default_factory=list)


class PreemptionPolicy:
    """Recompute preemption (vLLM v1): drop the KV, keep the outputs. Subclasses keep the KV."""

    def begin_step(self, sched: Scheduler, now: float) -> None:
        """Called before each plan (e.g. to refill a per-step transfer budget)."""

    def preempt(self, sched: Scheduler, req: EngineRequest, now: float) -> None:
        """Take running ``req`` (already off the running list) out, back to the waiting head."""
        sched.preempt_recompute(req, now)

    def resume(
        self, sched: Scheduler, req: EngineRequest, num_new: int, reserve: int, now: float
    ) -> bool | None:
        """Readmit a waiting request that kept its computed tokens.

        False: no room (it waits until memory frees); None: not this step, but maybe the next.
        """
        return sched.kv.allocate_slots(req, num_new, now, (), reserve)

    def unstick(self, sched: Scheduler, now: float) -> bool:
        """Nothing can run: free KV that waiting requests kept; True if anything was freed."""
        return False


class Scheduler:
    """Waiting and running queues over one KV cache manager."""

    def __init__(
        self, config: EngineConfig, kv: KVCacheManager, preemption: PreemptionPolicy | None = None
    ) -> None:
        self.config = config
        self.kv = kv
        self.preemption = preemption if preemption is not None else PreemptionPolicy()
        self.waiting: deque[EngineRequest] = deque()
        self.running: list[EngineRequest] = []
        self.queued_prefill_tokens = 0  # sum of queued_prefill_tokens over unfinished requests

    def add(self, req: EngineRequest) -> None:
        """Queue a new request; its uncached prompt tokens join the queued prefill."""
        assert req.status == RequestStatus.WAITING, req
        req.queued_prefill_tokens = req.num_tokens - self.kv.prefix_hit_tokens(req)
        self.waiting.append(req)
        self.queued_prefill_tokens += req.queued_prefill_tokens

    def reconfigure(self, config: EngineConfig) -> None:
        """New limits from the next plan on (the block size never changes)."""
        self.config = config

    def sort_waiting(self, key: Callable[[EngineRequest], object]) -> None:
        """Reorder the waiting queue by ``key`` (stable)."""
        self.waiting = deque(sorted(self.waiting, key=key))

    def schedule(self, now: float) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        threshold = self.config.long_prefill_token_threshold
        running = self.running
        kv = self.kv
        preemption = self.preemption
        preemption.begin_step(self, now)

        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            num_new = req.num_tokens - req.num_computed_tokens
            if threshold and num_new > threshold:
                num_new = threshold
            num_new = min(num_new, budget)
            scheduled = True
            while not kv.allocate_slots(req, num_new, now):
                victim = running.pop()
                preemption.preempt(self, victim, now)
                out.preempted.append(victim)
                if victim is req:
                    scheduled = False
                    break
            if not scheduled:
                break
            self._add_to_output(out, req, num_new)
            budget -= num_new
            i += 1

        # vLLM admits nothing in a step that preempted; but a step must not end empty while
        # requests wait (only possible when a policy keeps preempted KV on the GPU)
        if not out.preempted or not out.scheduled:
            self._admit_waiting(out, budget, now)
        elif self.waiting:
            out.blocker = AdmissionBlocker.PREEMPTING
        return out

    def _admit_waiting(self, out: SchedulerOutput, budget: int, now: float) -> None:
        cfg = self.config
        kv = self.kv
        waiting = self.waiting
        reserve = int(cfg.watermark * kv.pool.num_blocks)
        while waiting:
            if budget <= 0:
                out.blocker = AdmissionBlocker.TOKEN_BUDGET
                return
            if len(self.running) >= cfg.max_num_seqs:
                out.blocker = AdmissionBlocker.SEATS
                return
            req = waiting[0]
            if req.num_computed_tokens:  # kept its KV through a preemption: resume it
                num_new = min(req.num_tokens - req.num_computed_tokens, budget)
                resumed = self.preemption.resume(self, req, num_new, reserve, now)
                if resumed is None:  # not this step (e.g. a transfer budget), maybe the next
                    out.blocker = AdmissionBlocker.TRANSFER
                    return
                admitted = resumed
                num_hit = req.num_computed_tokens
            else:
                computed = kv.get_computed_blocks(req)
                num_hit = len(computed) * kv.block_size
                num_new = req.num_tokens - num_hit
                if cfg.long_prefill_token_threshold and num_new > cfg.long_prefill_token_threshold:
                    num_new = cfg.long_prefill_token_threshold
                if not cfg.enable_chunked_prefill and num_new > budget:
                    out.blocker = AdmissionBlocker.TOKEN_BUDGET
                    return
                num_new = min(num_new, budget)
                whole = req.num_tokens if cfg.scheduler_reserve_full_isl else 0
                admitted = kv.allocate_slots(req, num_new, now, computed, reserve, whole)
            if not admitted:  # out of blocks: only an idle engine may free kept KV and retry
                if self.running or out.scheduled or not self.preemption.unstick(self, now):
                    out.blocker = AdmissionBlocker.KV_BLOCKS
                    return
                continue
            waiting.popleft()
            assert req.status in (RequestStatus.WAITING, RequestStatus.PREEMPTED), req
            req.status = RequestStatus.RUNNING
            req.num_computed_tokens = num_hit
            if req.num_hit_tokens < 0:
                req.num_hit_tokens = min(num_hit, req.num_prompt_tokens)
                req.first_scheduled_s = now
            self.running.append(req)
            out.num_admitted += 1
            self._add_to_output(out, req, num_new)
            budget -= num_new

    @staticmethod
    def _add_to_output(out: SchedulerOutput, req: EngineRequest, num_new: int) -> None:
        out.scheduled.append(req)
        out.num_new_tokens.append(num_new)
        out.context_tokens.append(req.num_computed_tokens)
        if (
            num_new != 1
            or req.num_output_tokens == 0
            or req.num_computed_tokens != req.num_tokens - 1
        ):
            out.is_pure_decode = False

    def preempt_recompute(self, req: EngineRequest, now: float) -> None:
        """Recompute preemption: drop the KV, keep the outputs, go back to the waiting head."""
        assert req.status == RequestStatus.RUNNING, req
        self.drop_kv(req, now)
        self.park(req)

    def park(self, req: EngineRequest) -> None:
        """A preempted request goes back to the head of the queue (its KV already dealt with)."""
        req.status = RequestStatus.PREEMPTED
        req.num_preemptions += 1
        self.waiting.appendleft(req)

    def drop_kv(self, req: EngineRequest, now: float) -> None:
        """Free a request's KV; it starts over from its cached prefix (outputs are kept)."""
        self.kv.free(req, now)
        req.num_computed_tokens = 0
        self.set_queued_prefill(req, req.num_tokens - self.kv.prefix_hit_tokens(req))

    def requeue(self, req: EngineRequest, front: bool = False) -> None:
        """Queue a request that arrives with outputs but no KV (moved here from another engine)."""
        assert not req.is_finished and not req.block_ids, req
        if req.status == RequestStatus.RUNNING or req.num_output_tokens:
            req.status = RequestStatus.PREEMPTED
        req.num_computed_tokens = 0
        self.set_queued_prefill(req, req.num_tokens - self.kv.prefix_hit_tokens(req))
        if front:
            self.waiting.appendleft(req)
        else:
            self.waiting.append(req)

    def resume_running(self, req: EngineRequest, now: float) -> bool:
        """Run a request moved here with its computed KV; False, changing nothing, if it does not fit."""
        assert not req.is_finished and not req.block_ids, req
        if not self.kv.allocate_slots(req, 0, now):
            return False
        req.status = RequestStatus.RUNNING
        self.set_queued_prefill(
            req, req.num_tokens - req.num_computed_tokens if req.in_prefill else 0
        )
        self.running.append(req)
        return True

    def remove(self, req: EngineRequest, now: float) -> None:
        """Take an unfinished request off its queue and free its blocks (it leaves this engine)."""
        if req.status == RequestStatus.RUNNING:
            self.running.remove(req)
        else:
            self.waiting.remove(req)
        self.kv.free(req, now)
        self.set_queued_prefill(req, 0)

    def set_queued_prefill(self, req: EngineRequest, tokens: int) -> None:
        """``req`` has ``tokens`` uncached prompt tokens left to prefill (the total follows)."""
        self.queued_prefill_tokens += tokens - req.queued_prefill_tokens
        req.queued_prefill_tokens = tokens

    def finish(self, req: EngineRequest, status: RequestStatus, now: float) -> None:
        """Leave the engine: free blocks, drop from its queue, stamp the finish time."""
        assert not req.is_finished, req
        self.remove(req, now)
        req.status = status
        req.finish_s = now

    # ---- applying a step -----------------------------------------------------------------------
    def update_from_output(
        self, out: SchedulerOutput, num_steps: int, first_step: int, now: float, end: float
    ) -> StepUpdate:
        """Apply the planned step that started at ``now`` and ended at ``end``.

        ``num_steps`` > 1: a fast-forwarded run of identical decode steps (the engine checked they
        fit in memory). ``first_step`` is the step-log index of the first of them (< 0: token times
        are not recorded).
        """
        update = StepUpdate()
        if num_steps == 1:
            self._apply_step(out, first_step, end, update)
        else:
            self._apply_decode_run(out, first_step, num_steps, now, update)
        self._finish(update.finished, end)
        return update

    def _apply_step(
        self, out: SchedulerOutput, step_idx: int, end: float, update: StepUpdate
    ) -> None:
        for req, n in zip(out.scheduled, out.num_new_tokens, strict=True):
            req.num_computed_tokens += n
            update.num_tokens += n
            if req.queued_prefill_tokens:
                self.set_queued_prefill(req, max(0, req.num_tokens - req.num_computed_tokens))
            if req.num_computed_tokens >= req.num_tokens:  # caught up: sample one token
                req.num_output_tokens += 1
                if step_idx >= 0:
                    req.record_tokens(step_idx, 1)
                if req.first_token_s < 0:
                    req.first_token_s = end
                    update.first_token.append(req)
                if req.num_output_tokens >= req.max_output_tokens:
                    update.finished.append(req)

    def _apply_decode_run(
        self, out: SchedulerOutput, first_step: int, num_steps: int, now: float, update: StepUpdate
    ) -> None:
        kv = self.kv
        for req in out.scheduled:
            ok = kv.allocate_slots(req, num_steps, now)
            assert ok, "fast-forward checked the memory"
            req.num_computed_tokens += num_steps
            req.num_output_tokens += num_steps
            if first_step >= 0:
                req.record_tokens(first_step, num_steps)
            if req.num_output_tokens >= req.max_output_tokens:
                update.finished.append(req)
        update.num_tokens = num_steps * len(out.scheduled)

    def _finish(self, finished: list[EngineRequest], end: float) -> None:
        if not finished:
            return
        for req in finished:
            assert req.status == RequestStatus.RUNNING, req
            self.kv.free(req, end)
            self.set_queued_prefill(req, 0)
            req.status = RequestStatus.FINISHED_LENGTH
            req.finish_s = end
        done = set(map(id, finished))
        self.running = [r for r in self.running if id(r) not in done]
