"""Numba kernels behind ``wildserve.blocks``: CPython's tuple and int hashes, bit for bit.

CPython (3.8+, 64-bit) hashes a tuple with an xxHash-style accumulator over its items' hashes, and an
int ``x`` as ``sign(x) * (|x| mod 2**61 - 1)`` with -1 mapped to -2. Reproducing both here makes the
native chain equal to ``hash((parent, tuple(block)))`` (``tests/test_blocks_native.py`` checks it against
CPython on random inputs), so nothing that stored or compared hashes changes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_P1 = np.uint64(11400714785074694791)  # _PyHASH_XXPRIME_1
_P2 = np.uint64(14029467366897019727)  # _PyHASH_XXPRIME_2
_P5 = np.uint64(2870177450012600261)  # _PyHASH_XXPRIME_5
_LEN_MIX = np.uint64(2870177450012600261 ^ 3527539)  # added with the tuple's length
_MINUS_ONE = np.uint64(0xFFFFFFFFFFFFFFFF)
_MODULUS = np.uint64((1 << 61) - 1)


@njit(cache=True, inline="always")
def _rotate(acc):
    return (acc << np.uint64(31)) | (acc >> np.uint64(33))


@njit(cache=True, inline="always")
def _int_lane(x):
    """CPython's ``hash(x)`` of an int64, as the uint64 lane a tuple hash consumes."""
    neg = x < 0
    mag = np.uint64(0) - np.uint64(x) if neg else np.uint64(x)
    r = (mag & _MODULUS) + (mag >> np.uint64(61))
    if r >= _MODULUS:
        r -= _MODULUS
    v = np.int64(r)
    if neg:
        v = -v
    if v == -1:
        v = -2
    return np.uint64(v)


@njit(cache=True, inline="always")
def _finish(acc, length):
    acc += np.uint64(length) ^ _LEN_MIX
    if acc == _MINUS_ONE:
        return np.uint64(1546275796)
    return acc


@njit(cache=True)
def chain_token_blocks(tokens, block_size, parent):
    """``h_i = hash((h_{i-1}, tuple(tokens[i*B:(i+1)*B])))`` for every full block; ids in [0, 2**61-1).

    The blocks' own tuple hashes are independent, so they are computed first, interleaved across
    blocks (no serial multiply chain per token); only the two-item parent chain is sequential.
    """
    n = tokens.shape[0] // block_size
    inner = np.full(n, _P5, dtype=np.uint64)
    for j in range(block_size):
        for b in range(n):
            acc = inner[b] + np.uint64(tokens[b * block_size + j]) * _P2
            inner[b] = _rotate(acc) * _P1
    out = np.empty(n, dtype=np.int64)
    h = np.int64(parent)
    for b in range(n):
        content = _finish(inner[b], block_size)
        acc = _rotate(_P5 + _int_lane(h) * _P2) * _P1
        acc = _rotate(acc + content * _P2) * _P1
        h = np.int64(_finish(acc, 2))
        out[b] = h
    return out


@njit(cache=True, inline="always")
def _pair_hash(h, x):
    """CPython's ``hash((h, x))`` for two int64s."""
    acc = _rotate(_P5 + _int_lane(h) * _P2) * _P1
    acc = _rotate(acc + _int_lane(x) * _P2) * _P1
    return np.int64(_finish(acc, 2))


_PHI = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True)
def trace_engine_hashes(hash_ids, parent, trace_block_size, num_full, block_size):
    """``blocks.trace_block_hashes`` in one pass: chain the trace ids, then mix each engine block's
    owner chain hash with its last token offset (splitmix64 finalizer), all in wrapping uint64."""
    last = ((num_full * block_size) - 1) // trace_block_size
    chain = np.empty(last + 1, dtype=np.int64)
    h = np.int64(parent)
    for t in range(last + 1):
        h = _pair_hash(h, hash_ids[t])
        chain[t] = h
    out = np.empty(num_full, dtype=np.int64)
    for e in range(num_full):
        end = (e + 1) * block_size - 1
        x = np.uint64(chain[end // trace_block_size]) ^ (np.uint64(end) * _PHI)
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        x ^= x >> np.uint64(31)
        out[e] = np.int64(x)
    return out
