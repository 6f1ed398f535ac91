"""vLLM's own scheduler, unchanged, with every decision written down (``--scheduler-cls``).

Loaded inside a real vLLM engine process by ``benchmarks/engine_vs_vllm.py`` (``PYTHONPATH`` holds
this folder, ``--scheduler-cls vllm_probe.RecordingScheduler``). Each method calls vLLM's and then
appends one JSON line to ``$WILDSERVE_VLLM_TRACE``: when a request arrived (after how many schedule
calls), and for every step the batch in order with each request's new and already-computed tokens,
the preempted requests, and the requests that finished. Requests are named by a hash of their prompt
token ids (Python's tuple-of-int hash is the same in every process), so the benchmark can match them.
"""

from __future__ import annotations

import json
import os

from vllm.v1.core.sched.scheduler import Scheduler


class RecordingScheduler(Scheduler):
    """vLLM's ``Scheduler`` plus a trace of what it decided; no decision is changed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._trace = open(os.environ["WILDSERVE_VLLM_TRACE"], "a", buffering=1)  # noqa: SIM115
        self._keys: dict[str, int] = {}

    def _write(self, record: dict) -> None:
        self._trace.write(json.dumps(record) + "\n")

    def add_request(self, request) -> None:
        key = hash(tuple(request.prompt_token_ids))
        self._keys[request.request_id] = key
        self._write({"event": "add", "after_step": self.current_step, "key": key,
                     "prompt_tokens": request.num_prompt_tokens,
                     "max_tokens": request.max_tokens})  # fmt: skip
        super().add_request(request)

    def schedule(self, *args, **kwargs):
        out = super().schedule(*args, **kwargs)
        computed = {r.req_id: r.num_computed_tokens for r in out.scheduled_new_reqs}
        cached = out.scheduled_cached_reqs
        computed.update(zip(cached.req_ids, cached.num_computed_tokens, strict=True))
        resumed = set(cached.resumed_req_ids) | {r.req_id for r in out.scheduled_new_reqs}
        self._write({
            "event": "step",
            "step": self.current_step,
            "batch": [[self._keys[rid], n, computed[rid], rid in resumed]
                      for rid, n in out.num_scheduled_tokens.items()],
            "preempted": sorted(self._keys[rid] for rid in (out.preempted_req_ids or ())),
            "free_blocks": self.kv_cache_manager.block_pool.get_num_free_blocks(),
        })  # fmt: skip
        return out

    def update_from_output(self, scheduler_output, model_runner_output):
        before = set(self.requests)
        result = super().update_from_output(scheduler_output, model_runner_output)
        gone = [rid for rid in before if rid not in self.requests]
        if gone:
            self._write({"event": "finish", "step": self.current_step,
                         "keys": [self._keys.pop(rid) for rid in gone]})  # fmt: skip
        return result
