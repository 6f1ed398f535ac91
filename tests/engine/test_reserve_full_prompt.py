"""vLLM's admission check of a chunked prompt (scheduler_reserve_full_isl): the whole prompt must
fit in free KV blocks, not only its first chunk; benchmarks/engine_vs_vllm.py found vLLM 0.32 doing it."""

from __future__ import annotations

import pytest

from wildserve.engine import Engine, EngineConfig, EngineRequest
from wildserve.perf.linear import LinearCostModel


@pytest.mark.parametrize("reserve_full", [True, False])
def test_a_chunked_prompt_waits_until_all_of_it_fits(reserve_full):
    # 10 blocks of 16 tokens; a holds 6 of them while decoding; b's prompt needs 6 (160 tokens -> 10
    # blocks with a, 4 free) but its first chunk of 32 tokens needs only 2
    cfg = EngineConfig(max_num_batched_tokens=48, scheduler_reserve_full_isl=reserve_full)
    eng = Engine(cfg, LinearCostModel(), num_blocks=10)
    a = EngineRequest("a", 0.0, 80, 8)
    eng.add_request(a, 0.0)
    now = 0.0
    while a.in_prefill:
        now = eng.step(now).end_s
    b = EngineRequest("b", now, 90, 4)
    eng.add_request(b, now)
    res = eng.step(now)
    assert a in res.scheduled
    assert (b in res.scheduled) is not reserve_full
    while eng.has_work:
        now = eng.step(now).end_s
    assert a.num_output_tokens == 8 and b.num_output_tokens == 4  # both finish either way
