from __future__ import annotations

import numpy as np

from tests.routing.conftest import req, view
from wildserve.routing import make_policy
from wildserve.routing.baselines import minmax


def test_vllm_v1_weights_waiting_four_times():
    p = make_policy("vllm-v1")
    # 4*1+0 = 4 ; 4*0+3 = 3 ; 4*0+5 = 5
    assert p.choose(req(), [view(0, wait=1), view(1, run=3), view(2, run=5)]) == 1
    assert p.choose(req(), [view(0, run=2), view(1, run=2)]) == 0


def test_llm_d_weighs_prefix_3_queue_2_kv_2():
    p = make_policy("llm-d")
    r = req(blocks=10)
    # inst0: full prefix, long queue, busy KV; inst1: no prefix, empty queue, free KV
    vs = [view(0, match=10, wait=4, usage=0.9), view(1, match=0, wait=0, usage=0.1)]
    assert p.choose(r, vs) == 1  # 3*1 + 0 + 0 = 3 < 0 + 2 + 2 = 4
    vs = [view(0, match=10, wait=4, usage=0.1), view(1, match=0, wait=0, usage=0.1)]
    assert p.choose(r, vs) == 0  # 3 + 0 + 2 = 5 > 0 + 2 + 2 = 4
    assert minmax([3, 3]) == [1.0, 1.0] and minmax([0, 5, 10]) == [0.0, 0.5, 1.0]


def test_dynamo_prefill_blocks_plus_active_blocks():
    p = make_policy("dynamo")
    r = req(blocks=10)
    # inst0: 10 new blocks + 100 active ; inst1: 0 new + 105 active
    vs = [view(0, match=0, usage=0.1, blocks=1000), view(1, match=10, usage=0.105, blocks=1000)]
    assert p.choose(r, vs) == 1
    vs = [view(0, match=0, usage=0.1, blocks=1000), view(1, match=10, usage=0.115, blocks=1000)]
    assert p.choose(r, vs) == 0


def test_production_weighted_samples_in_proportion_to_score():
    p = make_policy("production-weighted", seed=3)
    r = req(blocks=10)
    vs = [view(0, match=10, run=0, queued=0), view(1, match=0, run=10, queued=1000)]
    picks = [p.choose(r, vs) for _ in range(300)]
    assert picks.count(1) == 0  # its score is exactly 0
    vs = [view(0, match=10, run=10, queued=0), view(1, match=0, run=0, queued=1000)]
    # scores (1 + 0 + 1)/3 = 2/3 and (0 + 1 + 0)/3 = 1/3 -> about 2:1
    picks = np.array([p.choose(r, vs) for _ in range(3000)])
    assert abs((picks == 0).mean() - 2 / 3) < 0.03


def test_aibrix_balances_on_running_gap_else_prefix_below_mean_plus_two_sigma():
    p = make_policy("aibrix-prefix")
    r = req(blocks=10)
    assert p.choose(r, [view(0, run=20, match=10), view(1, run=2), view(2, run=5)]) == 1
    assert p.choose(r, [view(0, run=10, match=10), view(1, run=2), view(2, run=5, match=4)]) == 0
    # no match anywhere: least running among candidates
    assert p.choose(r, [view(0, run=3), view(1, run=2), view(2, run=5)]) == 1
    # an outlier above mean + 2 sigma is excluded even with the best match
    runs = [0] * 9 + [16]
    vs = [view(i, run=x, match=10 if i == 9 else 1) for i, x in enumerate(runs)]
    assert p.choose(r, vs) == 0


def test_sglang_cache_aware_follows_its_own_history_until_imbalanced():
    p = make_policy("sglang-cache-aware")
    a = req(blocks=10, rid=1)
    vs = [view(0, run=0), view(1, run=0)]
    assert p.choose(a, vs) == 0  # no history: least loaded, lowest index
    p.on_dispatch(0, a)
    # same prefix again: matches its own tree on instance 0 even though instance 1 is less loaded
    assert p.choose(a, [view(0, run=5), view(1, run=0)]) == 0
    # imbalance beyond both thresholds (gap > 64 and > 1.5x): least loaded wins
    assert p.choose(a, [view(0, run=100), view(1, run=30)]) == 1
    # a new prefix with ratio <= 0.3 goes to the least loaded
    other = type(a)(
        request_id=2, prompt_tokens=160, block_hashes=list(range(50, 60)), block_size=16
    )
    assert p.choose(other, [view(0, run=3), view(1, run=2)]) == 1


def test_linear_new_trades_new_tokens_against_requests():
    r = req(prompt=160, blocks=10)
    vs = [view(0, run=4, match=10), view(1, run=0)]
    assert make_policy("linear-new", alpha=1.0, beta=1.0).scores(r, vs) == [4.0, 160.0]
    assert make_policy("linear-new", alpha=1.0, beta=1.0).choose(r, vs) == 0
    assert make_policy("linear-new", alpha=1.0, beta=100.0).scores(r, vs) == [400.0, 160.0]
    assert make_policy("linear-new", alpha=1.0, beta=100.0).choose(r, vs) == 1


def test_linear_tuned_adds_the_queued_prefill_backlog():
    r = req(prompt=160, blocks=10)
    # instance 0: 6 of 10 blocks cached (64 new tokens), 1000 queued, 2 requests;
    # instance 1: nothing cached (160 new), 100 queued, 3 requests
    vs = [view(0, run=1, wait=1, queued=1000, match=6), view(1, run=3, queued=100)]
    p = make_policy("linear-tuned", w=50.0)
    assert p.scores(r, vs) == [1000 + 64 + 100.0, 100 + 160 + 150.0]
    assert p.choose(r, vs) == 1
    # with a heavy request weight the request count decides: 1064 + 2w < 260 + 3w once w > 804
    assert make_policy("linear-tuned", w=1000.0).choose(r, vs) == 0
    # the narrower family never sees the backlog: it keeps the request on the cached instance
    assert make_policy("linear-new", beta=50.0).choose(r, vs) == 0
