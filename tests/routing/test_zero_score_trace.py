"""The zero-score failure on a hot-prompt trace, and what the mitigation changes (cluster simulator)."""

from __future__ import annotations

import numpy as np

from wildserve.engine.cluster import ClusterConfig
from wildserve.experiments.lmetric import hot_prompt_workload
from wildserve.routing import make_policy
from wildserve.sim.run import run_policy


def test_hot_prompt_piles_onto_one_instance_unless_mitigated():
    reqs = hot_prompt_workload(num_hot=600, num_background=100, duration_s=40.0, hot_output=400)
    cfg = ClusterConfig(num_instances=4)
    hot = np.array([r.category == "hot" for r in reqs])
    out = {}
    for mitigate in (False, True):
        policy = make_policy("lmetric", mitigate_zero=mitigate)
        res = run_policy(reqs, cfg, policy)
        m = res.metrics()
        share = np.bincount(np.asarray(res.instances)[hot], minlength=4) / hot.sum()
        out[mitigate] = (policy.num_zero_score_decisions, share.max(), float(np.nanmean(m.tpot)))
    zero, top_share, tpot = out[False]
    zero_m, top_share_m, tpot_m = out[True]
    assert zero_m > 300  # still detected with the mitigation on
    assert zero > 300  # the failure happens and is counted
    assert top_share > 0.8  # ... and piles the hot prompt onto one instance
    assert top_share_m < top_share - 0.1  # the mitigation spreads it
    assert tpot_m < tpot  # ... and decoding gets faster
