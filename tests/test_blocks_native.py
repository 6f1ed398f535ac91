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
