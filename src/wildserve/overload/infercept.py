"""InferCept-style preemption: per victim, discard and recompute, preserve, or swap to host memory.

InferCept (Abhyankar et al., ICML 2024) picks, for each paused request, the option that wastes the
least GPU memory x time. Here the pause is a preemption for lack of KV blocks (the vLLM victim: the
newest running request). With C bytes of KV (``M``), the other running requests' KV ``R``, the
time ``t_fwd`` to recompute the victim's tokens, the PCIe copy time ``t_swap`` of M, and the
expected wait ``t_wait`` until memory frees (the running request closest to finishing, at the last
step's duration per token):

- discard: ``t_fwd x (M + R)``: the recompute stalls every running request's memory;
- swap: ``2 x t_swap x M``: out now, back in later, each copy overlapped with a step; allowed only
  while this step's swap budget (PCIe time = the last step's duration) and host memory last;
- preserve: ``t_wait x M``: the KV stays on the GPU unused; it frees nothing, so it is an option
  only when the running request closest to finishing can finish in the free blocks. Not allowed when nothing else runs; preserved KV is discarded when it would stop
  the last running request or the queue head (``unstick``), so some request always progresses.

A swapped request resumes (without recompute) once blocks are free and its copy fits the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from wildserve.engine import Engine, EngineRequest, RequestStatus
from wildserve.engine.scheduler import PreemptionPolicy, Scheduler
from wildserve.kvcache.host import GIB, HostMemory
from wildserve.overload.timeline import SampledController
from wildserve.perf.batch import BatchShape

OPTIONS = ("discard", "swap", "preserve")


@dataclass(frozen=True)
class InferCeptConfig:
    """Host memory and the swap budget."""

    host_memory_gb: float = field(default=128.0, metadata={"help": "host DRAM per instance (GiB)"})
    swap_budget: float = field(
        default=1.0, metadata={"help": "PCIe time per step for swaps, as a share of the last step"}
    )
    allow_preserve: bool = field(default=True, metadata={"help": "consider keeping the KV on GPU"})


class InferCeptPreemption(PreemptionPolicy):
    """The engine's preemption policy under InferCept (module doc)."""

    def __init__(
        self, engine: Engine, host: HostMemory | None = None, cfg: InferCeptConfig | None = None
    ) -> None:
        self.engine = engine
        self.cfg = cfg if cfg is not None else InferCeptConfig()
        if host is None:
            host = HostMemory.for_cost_model(int(self.cfg.host_memory_gb * GIB), engine.cost_model)
        self.host = host
        assert engine.memory is not None, "InferCept needs the engine's GPU memory model"
        self.token_bytes = engine.memory.kv_bytes_per_token
        self.swapped: dict[int, int] = {}  # id(request) -> bytes held in host memory
        self.counts = dict.fromkeys((*OPTIONS, "swap_in", "unstick"), 0)
        self.budget_s = 0.0
        self._step_s = 0.0  # average duration of the steps since the last plan
        self._last_begin = -1.0
        self._last_len = 0

    # ---- estimates ------------------------------------------------------------------------------
    def begin_step(self, sched: Scheduler, now: float) -> None:
        ends = self.engine.step_end_s
        if len(ends) > self._last_len and self._last_begin >= 0:
            self._step_s = (ends[-1] - self._last_begin) / (len(ends) - self._last_len)
        self._last_begin, self._last_len = now, len(ends)
        self.budget_s = self.cfg.swap_budget * self._step_s

    def waste(self, sched: Scheduler, req: EngineRequest) -> dict[str, float]:
        """Memory x time each allowed option wastes (bytes x seconds)."""
        m = req.num_computed_tokens * self.token_bytes
        shape = BatchShape()
        shape.add_chunk(max(1, req.num_computed_tokens), 0, True)
        t_fwd = self.engine.cost_model.step_time(shape)
        others = sum(r.num_computed_tokens for r in sched.running) * self.token_bytes
        out = {"discard": t_fwd * (m + others)}
        t_swap = self.host.transfer_time(m)
        if m and t_swap <= self.budget_s and m <= self.host.free_bytes:
            out["swap"] = 2.0 * t_swap * m
        if self.cfg.allow_preserve and sched.running and self._step_s > 0:
            near = min(sched.running, key=lambda r: r.max_output_tokens - r.num_output_tokens)
            left = near.max_output_tokens - near.num_output_tokens
            # only if the request closest to finishing can finish in the memory that is free
            if sched.kv.blocks_needed_for_decode(near, left) <= sched.kv.num_free_blocks:
                out["preserve"] = left * self._step_s * m
        return out

    # ---- the PreemptionPolicy hooks -------------------------------------------------------------
    def preempt(self, sched: Scheduler, req: EngineRequest, now: float) -> None:
        if not sched.running and self.unstick(sched, now):
            # the last running request cannot grow because preserved KV holds the memory: that
            # KV is discarded instead, and this request keeps its own and resumes at once
            choice = "preserve"
        else:
            w = self.waste(sched, req)
            choice = min(w, key=lambda k: (w[k], OPTIONS.index(k)))
        self.counts[choice] += 1
        if choice == "discard":
            sched.preempt_recompute(req, now)
            return
        assert req.status == RequestStatus.RUNNING, req
        if choice == "swap":
            m = req.num_computed_tokens * self.token_bytes
            assert self.host.try_reserve(m)
            self.swapped[id(req)] = m
            self.budget_s -= self.host.transfer_time(m)
            sched.kv.free(req, now)
        pending = req.num_tokens - req.num_computed_tokens if req.in_prefill else 0
        sched.set_queued_prefill(req, pending)
        sched.park(req)

    def resume(
        self, sched: Scheduler, req: EngineRequest, num_new: int, reserve: int, now: float
    ) -> bool | None:
        m = self.swapped.get(id(req))
        if m is None:  # preserved: its blocks are still here
            return sched.kv.allocate_slots(req, num_new, now, (), reserve)
        t = self.host.transfer_time(m)
        if t > self.budget_s and sched.running:
            return None  # the copy would not hide behind this step: try the next one
        if not sched.kv.allocate_slots(req, num_new, now, (), reserve):
            return False
        del self.swapped[id(req)]
        self.host.release(m)
        self.budget_s -= t
        self.counts["swap_in"] += 1
        return True

    def unstick(self, sched: Scheduler, now: float) -> bool:
        """Nothing runs and the head cannot fit: discard the KV that preserved requests kept."""
        freed = False
        for req in sched.waiting:
            if req.block_ids and id(req) not in self.swapped:
                sched.drop_kv(req, now)
                self.counts["unstick"] += 1
                freed = True
        return freed


class InferCeptController(SampledController):
    """Installs the policy on every engine; samples host-memory use and sums the choices."""

    def __init__(
        self, engines: Sequence[Engine], cfg: InferCeptConfig | None = None, period_s: float = 0.5
    ) -> None:
        super().__init__(engines, period_s)
        self.policies = [InferCeptPreemption(e, cfg=cfg) for e in self.engines]
        for e, p in zip(self.engines, self.policies, strict=True):
            e.set_preemption(p)

    def extra_sample(self) -> dict[str, float]:
        return {"swapped_gib": sum(p.host.used_bytes for p in self.policies) / GIB}

    def summary(self) -> dict:
        return {
            "preemption_choices": {
                k: sum(p.counts[k] for p in self.policies) for k in self.policies[0].counts
            }
        }
