"""Policies whose victim is the smallest static key in a heap (``KeyedPolicy``): LFU, GDSF, OPT.

As in SGLang's ``evict_policy.py``, such a policy is just the key it gives a block when the block is
accessed; the smallest (key, then push order) is evicted first. A block's key cannot change while it
is evictable (nobody accesses it), so one indexed binary heap serves every one of them. A subclass
gives ``key``, a jitted ``(arena, block, now, depth, category, hint, count) -> (primary, secondary)``
where ``count`` is the block's accesses since it was filled, and optionally ``evicted``, a jitted
``(arena, block)`` hook called when a block leaves; the hooks and kernels are generated from them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba as nb

from wildserve.kvcache import _core
from wildserve.kvcache._codegen import specialize
from wildserve.kvcache._core import at, getf, putf
from wildserve.kvcache.hooks import nop_evict, nop_push
from wildserve.kvcache.policy import EVICTION_POLICIES, ArrayPolicy, Hooks

# per-block fields after the generic ones: heap slot, heap position, key1, key2 (floats), count
HEAP, HPOS, K1, K2, COUNT = range(_core.NUM_GENERIC, _core.NUM_GENERIC + 5)


@nb.njit(cache=True)
def heap_insert(a, s):
    _core.heap_push(a, HEAP, HPOS, K1, K2, s)


@nb.njit(cache=True)
def heap_delete(a, s):
    _core.heap_delete(a, HEAP, HPOS, K1, K2, s)


@nb.njit(cache=True)
def heap_peek(a, now):
    return _core.heap_top(a, HEAP)


def _keyed_access(a, s, now, depth, cat, hint, fill):
    """Count the access and store the block's key (KEY is bound per policy)."""
    i = at(a, COUNT, s)
    a[i] = 1 if fill else a[i] + 1
    k1, k2 = KEY(a, s, now, depth, cat, hint, a[i])  # noqa: F821
    putf(a, at(a, K1, s), k1)
    putf(a, at(a, K2, s), k2)


class KeyedPolicy(ArrayPolicy):
    """Evict the block with the smallest ``key`` (then the one released first)."""

    key: ClassVar[Any]  # jitted (a, s, now, depth, cat, hint, count) -> (float, float)
    evicted: ClassVar[Any] = nop_evict  # jitted (a, s): a block left the cache
    block_fields = (-1, -1, 0, 0, 0)  # HEAP, HPOS, K1, K2, COUNT

    @classmethod
    def make_hooks(cls) -> Hooks | None:
        if "key" not in dir(cls):
            return None
        access = specialize(_keyed_access, cls, "on_access", KEY=cls.key)
        return Hooks(nop_push, access, heap_insert, heap_delete, heap_peek, cls.evicted)


# ---- LFU -----------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _lfu_key(a, s, now, depth, cat, hint, count):
    return float(count), 0.0


@EVICTION_POLICIES.register("lfu")
class LFUPolicy(KeyedPolicy):
    """Least frequently used since the block was filled; ties go to the one released first."""

    key = _lfu_key


# ---- GDSF ----------------------------------------------------------------------------------------
_L = _core.H_PAR  # GDSF's inflation value (float)


@nb.njit(cache=True)
def _gdsf_key(a, s, now, depth, cat, hint, count):
    # H = L + frequency * cost / size, with cost = size = 1 block
    return getf(a, _L) + float(count), 0.0


@nb.njit(cache=True)
def _gdsf_evicted(a, s):
    a[_L] = a[at(a, K1, s)]  # inflate L to the evicted H: old popular blocks age out


@EVICTION_POLICIES.register("gdsf")
class GDSFPolicy(KeyedPolicy):
    """Greedy-Dual-Size-Frequency (Cherkasova 1998) with unit block size and cost.

    H = L + hits since fill; evict the smallest H and set L to it, so frequency counts of blocks that
    stopped being used are overtaken by the rising L (LFU with dynamic aging).
    """

    key = _gdsf_key
    evicted = _gdsf_evicted


# ---- OPT (Belady) --------------------------------------------------------------------------------
@nb.njit(cache=True)
def _opt_key(a, s, now, depth, cat, hint, count):
    nxt = math.inf if math.isnan(hint.next_use) else hint.next_use  # no hint: never used again
    # furthest next use first, then deepest first
    return -nxt, -float(a[at(a, _core.F_DEPTH, s)])


@EVICTION_POLICIES.register("opt")
class OPTPolicy(KeyedPolicy):
    """Belady: evict the block whose next use is furthest away (never used again: first).

    Ties go deepest first, so a parent never leaves before its cached children (a child's every use
    is also a use of its parent): the cache stays prefix-closed, and on the flattened block stream
    with the current request's blocks pinned this is the classical optimum. Needs next-use hints,
    so it only runs offline.
    """

    offline_only = True
    hint_kind = "next_use"
    prefix_closed = True
    key = _opt_key
