"""Chained prefix-block hashes: the one definition shared by engine, routers, analysis and caches.

A block's hash covers its own content and, through the parent hash, every block before it, so two
requests share a cached block exactly when they share the whole prefix up to and including it
(vLLM's ``hash_block_tokens``). The definition is CPython's ``hash((parent, tuple(block_tokens)))``
(deterministic across processes: no PYTHONHASHSEED dependence for ints); token blocks are chained in
native code (numba) that computes exactly that value, because a router hashes every prompt on its hot
path (a 20k-token prompt is 1,250 blocks: ~1 ms as Python tuples, tens of us here).
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Sequence

import numpy as np

ROOT_HASH = 0x5EED  # parent of the first block of every sequence


def chain_hash(parent: int, content: object) -> int:
    """Hash of one block given its parent's hash; ``content`` must be an int or a tuple of ints."""
    return hash((parent, content))


def token_block_hashes(
    token_ids: Sequence[int] | bytes | np.ndarray, block_size: int, parent: int = ROOT_HASH
) -> list[int]:
    """Hashes of the full ``block_size``-token blocks of ``token_ids`` (a trailing partial block has none).

    Block ``i``'s hash is ``hash((h_{i-1}, tuple(token_ids[i*B:(i+1)*B])))`` with ``h_{-1} = parent``.
    """
    return token_block_hash_array(token_ids, block_size, parent).tolist()


def token_block_hash_array(
    token_ids: Sequence[int] | bytes | np.ndarray, block_size: int, parent: int = ROOT_HASH
) -> np.ndarray:
    """``token_block_hashes`` as an int64 array (no Python ints made: the router's hot path).

    ``bytes`` (one token per byte) are read in place; token ids must be in [0, 2**61 - 1).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if isinstance(token_ids, (bytes, bytearray, memoryview)):
        tokens = np.frombuffer(token_ids, dtype=np.uint8)
    else:
        tokens = np.asarray(token_ids, dtype=np.int64)
        if tokens.ndim != 1:
            raise ValueError("token_ids must be a flat sequence of ints")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= _HASH_MODULUS):
            raise ValueError("token ids must be in [0, 2**61 - 1)")
    if tokens.size < block_size:
        return np.empty(0, dtype=np.int64)
    return _native().chain_token_blocks(tokens, block_size, parent)


_HASH_MODULUS = (1 << 61) - 1  # CPython hashes ints modulo this Mersenne prime


def load_native() -> None:
    """Compile (or load from numba's cache) the hashing kernels now: servers call this before they
    listen, so that no request stalls the event loop for the first-call compile.

    It also moves every object alive so far (numba's and numpy's are hundreds of thousands) to the
    garbage collector's permanent generation: otherwise each full collection walks them all, which
    cost a server ~100 us per request.
    """
    token_block_hash_array(b"\0\0", 1)  # byte tokens (uint8)
    token_block_hash_array([0, 0], 1)  # token ids (int64): a real tokenizer's, or a list prompt
    gc.collect()
    gc.freeze()


@functools.cache
def _native():
    """The numba kernels, compiled (or loaded from numba's on-disk cache) on first use."""
    from wildserve import _blocks_native

    return _blocks_native


def _mix64(base: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer of ``base ^ offset*phi``: a well-spread 64-bit hash, vectorized."""
    with np.errstate(over="ignore"):
        x = base.view(np.uint64) ^ (offset.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x.view(np.int64)


def trace_block_hashes(
    hash_ids: Sequence[int], trace_block_size: int, prompt_tokens: int, block_size: int
) -> list[int]:
    """``trace_block_hash_array`` as a list of ints."""
    return trace_block_hash_array(hash_ids, trace_block_size, prompt_tokens, block_size).tolist()


def trace_block_hash_array(
    hash_ids: Sequence[int], trace_block_size: int, prompt_tokens: int, block_size: int
) -> np.ndarray:
    """Map a trace's per-block ids onto hashes of the prompt's full ``block_size``-token blocks.

    The trace ids are chained first (``h_t = chain_hash(h_{t-1}, id_t)``), so ``h_t`` names the whole
    prefix through trace block ``t``. Engine block ``e`` covers tokens ``[e*B, (e+1)*B)``; its hash mixes
    the chain hash of the last trace block it overlaps with its token offset, so a 512-token trace block
    becomes 32 distinct 16-token blocks and equal trace prefixes give equal engine prefixes. Only full
    engine blocks inside the prompt get a hash; the map stops where the trace runs out of ids.
    Returns an int64 array (what the engine's block pool takes without converting).
    """
    if trace_block_size <= 0 or block_size <= 0:
        raise ValueError("block sizes must be positive")
    num_full = min(prompt_tokens, len(hash_ids) * trace_block_size) // block_size
    if num_full == 0:
        return np.empty(0, dtype=np.int64)
    last_trace_block = ((num_full * block_size) - 1) // trace_block_size
    try:
        ids = np.asarray(hash_ids[: last_trace_block + 1], dtype=np.int64)
    except OverflowError:  # ids beyond int64: CPython's own hashes below
        pass
    else:
        return _native().trace_engine_hashes(ids, ROOT_HASH, trace_block_size, num_full, block_size)
    chain = np.empty(last_trace_block + 1, dtype=np.int64)
    h = ROOT_HASH
    for t in range(last_trace_block + 1):
        h = hash((h, hash_ids[t]))
        chain[t] = h
    ends = (np.arange(num_full, dtype=np.int64) + 1) * block_size - 1  # last token of each block
    owner = ends // trace_block_size
    return _mix64(chain[owner], ends)
