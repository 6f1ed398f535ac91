"""Property tests of the offline replay on random prefix-sharing traces (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kvcache.conftest import SPECS, WA_TEST, random_streams
from tests.kvcache.reference import RefCache, brute_next_use
from wildserve.kvcache.replay import ideal_hits, replay

_SETTINGS = settings(max_examples=60, deadline=None)


def _kw(spec: str) -> dict:
    return WA_TEST if spec.startswith(("wa", "rwa")) else {}


@_SETTINGS
@given(random_streams(), st.integers(1, 12))
def test_opt_hits_at_least_every_policy_and_no_cache_beats_infinite(stream, capacity):
    results = {s: replay(stream, s, capacity, **_kw(s)) for s in SPECS}
    opt = results["opt"].hit_blocks
    for spec, r in results.items():
        assert r.hit_blocks <= opt, spec
        assert r.hit_blocks <= ideal_hits(stream)
        assert r.violations == 0 and r.max_cached <= capacity, spec
    assert results["opt:leaf"].hit_blocks == opt  # OPT never leaves a hole: the variants agree
    # vLLM's LRU is prefix-closed, so its leaf-only variant is the same policy
    assert np.array_equal(results["lru"].hits, results["lru:leaf"].hits)


@_SETTINGS
@given(random_streams(max_requests=20), st.integers(1, 10), st.sampled_from(SPECS), st.booleans())
def test_hits_and_victims_equal_brute_force_reference(stream, capacity, spec, history):
    name, _, variant = spec.partition(":")
    ref = RefCache(
        name, capacity, variant == "leaf", WA_TEST if name in ("wa", "rwa") else None,
        len(stream.categories.names), history,
    )  # fmt: skip
    hints = brute_next_use(stream, capacity) if name == "opt" else None
    if hints is not None:
        assert np.array_equal(hints, stream.next_use(capacity))
    ref_hits = ref.run(stream, hints)
    got = replay(stream, spec, capacity, log_victims=True, history=history, **_kw(spec))
    assert got.hits.tolist() == ref_hits.tolist()
    assert got.victims.tolist() == ref.victims


@settings(max_examples=150, deadline=None)
@given(
    random_streams(max_requests=25),
    st.integers(1, 8),
    st.booleans(),
    st.sampled_from(["wa", "rwa"]),
)
def test_wa_matches_the_reference_with_and_without_history(stream, capacity, history, name):
    """WA's bookkeeping is the most intricate: give it more examples of its own."""
    ref = RefCache(name, capacity, False, WA_TEST, len(stream.categories.names), history)
    ref_hits = ref.run(stream)
    got = replay(stream, name, capacity, log_victims=True, history=history, **WA_TEST)
    assert got.hits.tolist() == ref_hits.tolist() and got.victims.tolist() == ref.victims


@_SETTINGS
@given(random_streams(), st.integers(1, 12))
def test_infinite_capacity_reaches_the_ideal_hit_count(stream, capacity):
    big = stream.num_blocks + 1
    for spec in SPECS:
        assert replay(stream, spec, big, **_kw(spec)).hit_blocks == ideal_hits(stream)
