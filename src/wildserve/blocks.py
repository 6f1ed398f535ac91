"""Chained prefix-block hashes: the one definition shared by engine, routers, analysis and caches.

A block's hash covers its own content and, through the parent hash, every block before it, so two
requests share a cached block exactly when they share the whole prefix up to and including it
(vLLM's ``hash_block_tokens``). Hashes are Python ints from ``hash()`` of int tuples, which is
deterministic across processes (no PYTHONHASHSEED dependence for ints).
"""

from __future__ import annotations

from collections.abc import Sequence

ROOT_HASH = 0x5EED  # parent of the first block of every sequence


def chain_hash(parent: int, content: object) -> int:
    """Hash of one block given its parent's hash; ``content`` must be an int or a tuple of ints."""
    return hash((parent, content))


def token_block_hashes(
    token_ids: Sequence[int], block_size: int, parent: int = ROOT_HASH
) -> list[int]:
    """Hashes of the full ``block_size``-token blocks of ``token_ids`` (a trailing partial block has none)."""
    hashes: list[int] = []
    h = parent
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        h = hash((h, tuple(token_ids[start : start + block_size])))
        hashes.append(h)
    return hashes


def trace_block_hashes(
    hash_ids: Sequence[int], trace_block_size: int, prompt_tokens: int, block_size: int
) -> list[int]:
    """Map a trace's per-block ids onto chained hashes of ``block_size``-token engine blocks.

    Engine block ``e`` covers tokens ``[e*B, (e+1)*B)``; its content is the ids of the trace blocks it
    overlaps plus its offset inside the first one, so a 512-token trace block becomes 32 distinct
    16-token engine blocks and equal trace prefixes give equal engine prefixes. Only full engine blocks
    inside the prompt get a hash; the map stops where the trace runs out of ids.
    """
    if trace_block_size <= 0 or block_size <= 0:
        raise ValueError("block sizes must be positive")
    num_full = min(prompt_tokens, len(hash_ids) * trace_block_size) // block_size
    hashes: list[int] = []
    h = ROOT_HASH
    if trace_block_size % block_size == 0:
        per_trace_block = trace_block_size // block_size
        e = 0
        for tid in hash_ids:
            for j in range(per_trace_block):
                if e >= num_full:
                    return hashes
                h = hash((h, (tid, j)))
                hashes.append(h)
                e += 1
        return hashes
    for e in range(num_full):
        start, end = e * block_size, (e + 1) * block_size
        first, last = start // trace_block_size, (end - 1) // trace_block_size
        content = (tuple(hash_ids[first : last + 1]), start - first * trace_block_size)
        h = hash((h, content))
        hashes.append(h)
    return hashes
