"""Per-step admission blockers: each cause on a hand-built engine, and the log's accounting."""

from __future__ import annotations

import numpy as np
import pytest

from tests.engine.test_engine_lifecycle import drive, random_requests
from wildserve.engine import AdmissionBlocker, Engine, EngineConfig, EngineRequest
from wildserve.engine.admission import BLOCKERS, AdmissionLog, blocker_time
from wildserve.perf.linear import LinearCostModel

B = AdmissionBlocker


def engine(num_blocks: int = 1000, **cfg) -> Engine:
    return Engine(EngineConfig(**cfg), LinearCostModel(), num_blocks=num_blocks)


def test_an_empty_or_fully_admitted_queue_blocks_nothing():
    e = engine()
    e.add_request(EngineRequest(0, 0.0, 100, 5), 0.0)
    assert e.step(0.0).blocker is B.NONE  # admitted at once
    assert e.step(1.0).blocker is B.NONE  # nothing waits


def test_seats():
    e = engine(max_num_seqs=1)
    for i in range(2):
        e.add_request(EngineRequest(i, 0.0, 64, 5), 0.0)
    assert e.step(0.0).blocker is B.SEATS


def test_token_budget():
    e = engine(max_num_batched_tokens=256)
    e.add_request(EngineRequest(0, 0.0, 1000, 5), 0.0)  # takes the whole budget (chunked)
    e.add_request(EngineRequest(1, 0.0, 64, 5), 0.0)
    assert e.step(0.0).blocker is B.TOKEN_BUDGET


def test_token_budget_without_chunking():
    e = engine(max_num_batched_tokens=256, enable_chunked_prefill=False)
    e.add_request(EngineRequest(0, 0.0, 200, 5), 0.0)
    e.add_request(EngineRequest(1, 0.0, 100, 5), 0.0)  # 100 > the 56 tokens left
    assert e.step(0.0).blocker is B.TOKEN_BUDGET


def test_kv_blocks():
    e = engine(num_blocks=20)  # 320 tokens
    e.add_request(EngineRequest(0, 0.0, 250, 50), 0.0)
    e.add_request(EngineRequest(1, 0.0, 100, 5), 0.0)
    assert e.step(0.0).blocker is B.KV_BLOCKS


def test_preempting():
    e = engine(num_blocks=30)  # 480 tokens: each 264-token request fits alone, three do not
    for i in range(3):
        e.add_request(EngineRequest(i, 0.0, 64, 200), 0.0)
    seen = set()
    now = 0.0
    for _ in range(200):
        res = e.step(now)
        seen.add(res.blocker)
        if res.preempted and res.scheduled:
            assert res.blocker is B.PREEMPTING  # a step that preempted admits nothing
        now = res.end_s if res.num_steps else now + 1
        if not e.has_work:
            break
    assert B.PREEMPTING in seen


@pytest.mark.parametrize("num_blocks", [4000, 300])
def test_blockers_sum_to_the_step_count_and_step_time(num_blocks):
    e = engine(num_blocks=num_blocks, max_num_seqs=32)
    drive(e, random_requests(np.random.default_rng(3), 300))
    counts = e.admission_log.step_counts()
    assert set(counts) == {b.name.lower() for b in BLOCKERS}
    assert sum(counts.values()) == len(e.step_end_s)  # every step has exactly one blocker
    time, used = blocker_time([e.admission_log], [0.0, e.step_end_s[-1] + 1])
    assert time.sum() == pytest.approx(e.busy_s)
    assert 0 < used[0] <= time.sum()  # budget use is a share of step time
    if num_blocks == 300:  # the small pool makes KV the blocker of many steps
        assert counts["kv_blocks"] + counts["preempting"] > 0


def test_blocker_time_splits_a_record_over_the_windows_it_overlaps():
    log = AdmissionLog()
    log.record(0.5, 1.0, 10, B.KV_BLOCKS, 50, 10)  # [0.5, 1.5): half the budget each step
    log.record(1.5, 0.5, 1, B.SEATS, 10, 10)  # [1.5, 2.0): full budget
    time, used = blocker_time([log], [0.0, 1.0, 2.0])
    assert time[0, B.KV_BLOCKS] == pytest.approx(0.5) and time[0].sum() == pytest.approx(0.5)
    assert time[1, B.KV_BLOCKS] == pytest.approx(0.5) and time[1, B.SEATS] == pytest.approx(0.5)
    assert used == pytest.approx([0.25, 0.25 + 0.5])
    assert log.step_counts()["kv_blocks"] == 10 and log.step_counts()["seats"] == 1


def test_blocker_time_equals_the_overlap_of_every_record_with_every_window():
    rng = np.random.default_rng(7)
    logs = []
    for _ in range(3):  # three engines, each stepping sequentially with idle gaps
        log, t = AdmissionLog(), 0.0
        for _ in range(500):
            t += rng.exponential(0.05) * (rng.random() < 0.3)
            d = rng.exponential(0.04)
            steps = int(rng.integers(1, 5))
            log.record(t, d, steps, B(int(rng.integers(0, len(B)))), int(rng.integers(0, 900)), 256)
            t += d
        logs.append(log)
    edges = np.sort(rng.uniform(-1, t + 1, 40))
    time, used = blocker_time(logs, edges)
    want, want_used = np.zeros_like(time), np.zeros_like(used)
    for log in logs:
        for k in range(len(log)):
            s, d = log.start_s[k], log.duration_s[k]
            use = log.num_tokens[k] / (log.num_steps[k] * log.budget[k])
            for w in range(len(edges) - 1):
                o = max(0.0, min(s + d, edges[w + 1]) - max(s, edges[w]))
                want[w, log.blocker[k]] += o
                want_used[w] += o * use
    assert time == pytest.approx(want, abs=1e-9) and used == pytest.approx(want_used, abs=1e-9)
