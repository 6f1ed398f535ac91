"""The native block-hash chain equals CPython's ``hash((parent, tuple(block)))``, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from wildserve.blocks import ROOT_HASH, token_block_hash_array, token_block_hashes


def _reference(tokens, block_size: int, parent: int = ROOT_HASH) -> list[int]:
    """The definition, in plain Python."""
    out, h = [], parent
    for start in range(0, len(tokens) - block_size + 1, block_size):
        h = hash((h, tuple(tokens[start : start + block_size])))
        out.append(h)
    return out


def test_random_token_lists_block_sizes_and_parents_match_cpython():
    rng = np.random.default_rng(7)
    for _ in range(300):
        bs = int(rng.integers(1, 40))
        tokens = rng.integers(0, 300_000, size=int(rng.integers(0, 400))).tolist()
        parent = int(rng.integers(-(2**63), 2**63 - 1))
        assert token_block_hashes(tokens, bs, parent) == _reference(tokens, bs, parent)


def test_edge_values_match_cpython():
    big = (1 << 61) - 2  # the largest id below the modulus
    cases = [[0] * 16, [big] * 16, [1, big, 0, 2**40] * 8, list(range(255, -1, -1))]
    for tokens in cases:
        for parent in (ROOT_HASH, -1, -2, 0, -(2**63), 2**63 - 1, (1 << 61) - 1, 1 << 61):
            assert token_block_hashes(tokens, 16, parent) == _reference(tokens, 16, parent)


def test_bytes_are_hashed_in_place_as_one_token_per_byte():
    text = ("héllo wörld " * 300).encode()
    assert token_block_hashes(text, 16) == _reference(list(text), 16)
    assert token_block_hash_array(text, 16).dtype == np.int64
    assert token_block_hashes(b"short", 16) == []


def test_out_of_range_ids_are_refused():
    with pytest.raises(ValueError, match="token ids"):
        token_block_hashes([1, -3, 4, 5], 2)
    with pytest.raises(ValueError, match="block_size"):
        token_block_hashes([1, 2], 0)


def _trace_reference(hash_ids, trace_bs, prompt_tokens, bs):
    """Trace-id chaining as plain CPython tuple hashes and splitmix64 on Python ints."""
    mask = (1 << 64) - 1
    num_full = min(prompt_tokens, len(hash_ids) * trace_bs) // bs
    chain, h = [], ROOT_HASH
    for x in hash_ids:
        h = hash((h, x))
        chain.append(h)
    out = []
    for e in range(num_full):
        end = (e + 1) * bs - 1
        x = (chain[end // trace_bs] & mask) ^ ((end * 0x9E3779B97F4A7C15) & mask)
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        x ^= x >> 31
        out.append(x - (1 << 64) if x >= 1 << 63 else x)
    return out


def test_trace_block_hashes_match_cpython_tuple_hashes():
    from wildserve.blocks import trace_block_hashes

    rng = np.random.default_rng(3)
    for _ in range(200):
        trace_bs = int(rng.choice([16, 64, 512]))
        bs = int(rng.choice([8, 16, 32]))
        ids = rng.integers(-(2**63), 2**63 - 1, size=int(rng.integers(1, 30))).tolist()
        if rng.random() < 0.5:
            ids = [i % 10_000 for i in ids]
        prompt = int(rng.integers(1, len(ids) * trace_bs + 50))
        assert trace_block_hashes(ids, trace_bs, prompt, bs) == _trace_reference(
            ids, trace_bs, prompt, bs
        )
    huge = [2**70, 3, -(2**80)]  # beyond int64: the CPython path
    assert trace_block_hashes(huge, 16, 48, 16) == _trace_reference(huge, 16, 48, 16)
