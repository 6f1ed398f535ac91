"""Trace blocks of 512 tokens onto 16-token engine blocks keep the prefix relation."""

from __future__ import annotations

import numpy as np
import pytest

from wildserve.workload import load_trace
from wildserve.workload.request import Request


def _req(ids, prompt):
    return Request(0, 0.0, prompt, 1, hash_ids=tuple(ids), block_size=512)


@pytest.mark.parametrize("k", [0, 1, 2, 5])
def test_sharing_k_trace_blocks_shares_exactly_32k_engine_blocks(k):
    a = _req([*range(k), 100, 101], 512 * (k + 2))
    b = _req([*range(k), 200, 201, 202], 512 * (k + 3))
    ha, hb = a.engine_block_hashes(16), b.engine_block_hashes(16)
    assert len(ha) == 32 * (k + 2) and len(hb) == 32 * (k + 3)
    common = 0
    while common < min(len(ha), len(hb)) and ha[common] == hb[common]:
        common += 1
    assert common == 32 * k
    # chained: nothing after the divergence is shared either
    assert not set(ha[32 * k :]) & set(hb)


@pytest.mark.parametrize("prompt", [1, 15, 16, 17, 511, 513, 1000, 1024])
def test_partial_last_block_maps_to_floor(prompt):
    ids = list(range(-(-prompt // 512)))
    assert len(_req(ids, prompt).engine_block_hashes(16)) == prompt // 16


def test_engine_blocks_distinct_inside_a_trace_block():
    h = _req([7], 512).engine_block_hashes(16)
    assert len(set(h)) == 32


def test_builtin_prefix_relation_survives_mapping():
    # every pair of requests sharing k leading trace blocks shares exactly 32k leading engine blocks
    reqs = load_trace()[:400]
    rng = np.random.default_rng(0)
    for i, j in rng.integers(0, len(reqs), size=(300, 2)).tolist():
        a, b = reqs[i], reqs[j]
        k = 0
        while k < min(len(a.hash_ids), len(b.hash_ids)) and a.hash_ids[k] == b.hash_ids[k]:
            k += 1
        ha, hb = a.engine_block_hashes(16), b.engine_block_hashes(16)
        full_a, full_b = a.prompt_tokens // 16, b.prompt_tokens // 16
        expect = min(32 * k, full_a, full_b)
        assert ha[:expect] == hb[:expect]
        if i != j and expect < min(full_a, full_b):
            assert ha[expect] != hb[expect]
