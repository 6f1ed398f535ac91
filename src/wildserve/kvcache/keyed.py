"""Policies whose victim is the smallest static key in a heap: LFU, GDSF and Belady's OPT.

As in SGLang's ``evict_policy.py``, each policy is just the key it gives a block when it is
accessed; the smallest (key, then push order) is evicted first. A block's key cannot change while it
is evictable (nobody accesses it), so one indexed binary heap serves every one of them.
"""

from __future__ import annotations

import math

import numba as nb

from wildserve.kvcache import _core
from wildserve.kvcache._core import at, getf, putf
from wildserve.kvcache.policy import EVICTION_POLICIES, ArrayPolicy, _nop_evict, _nop_push

# per-block fields after the generic ones: heap slot, heap position, key1, key2 (floats), count
_HEAP, _HPOS, _K1, _K2, _COUNT = range(_core.NUM_GENERIC, _core.NUM_GENERIC + 5)
_L = _core.H_PAR  # GDSF's inflation value (float)


@nb.njit(cache=True)
def _insert(a, s):
    _core.heap_push(a, _HEAP, _HPOS, _K1, _K2, s)


@nb.njit(cache=True)
def _delete(a, s):
    _core.heap_delete(a, _HEAP, _HPOS, _K1, _K2, s)


@nb.njit(cache=True)
def _peek(a, now):
    return _core.heap_top(a, _HEAP)


@nb.njit(cache=True)
def _count(a, s, fill):
    i = at(a, _COUNT, s)
    a[i] = 1 if fill else a[i] + 1
    return a[i]


class HeapPolicy(ArrayPolicy):
    """Shared per-block fields of the heap-keyed policies."""

    slot_defaults = (-1, -1, 0, 0, 0)


# ---- LFU -----------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _lfu_access(a, s, now, depth, cat, h0, h1, h2, fill):
    putf(a, at(a, _K1, s), float(_count(a, s, fill)))


@nb.njit(cache=True)
def _lfu_ops(op, a, ids, num, now, depth0, cat, parent0, hints):
    return _core.run_op(_nop_push, _lfu_access, _insert, _delete, _peek, _nop_evict,
                        op, a, ids, num, now, depth0, cat, parent0, hints)  # fmt: skip


@nb.njit(cache=True)
def _lfu_replay(a, req_start, blocks, times, cats, hints, num_dense, capacity, log):
    return _core.replay(_nop_push, _lfu_access, _insert, _delete, _peek, _nop_evict, True,
                        a, req_start, blocks, times, cats, hints, num_dense, capacity, log)  # fmt: skip


@EVICTION_POLICIES.register("lfu")
class LFUPolicy(HeapPolicy):
    """Least frequently used since the block was filled; ties go to the one released first."""

    name = "lfu"
    kernels = (_lfu_ops, _lfu_replay)


# ---- GDSF ----------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _gdsf_access(a, s, now, depth, cat, h0, h1, h2, fill):
    # H = L + frequency * cost / size, with cost = size = 1 block
    putf(a, at(a, _K1, s), getf(a, _L) + float(_count(a, s, fill)))


@nb.njit(cache=True)
def _gdsf_evict(a, s):
    a[_L] = a[at(a, _K1, s)]  # inflate L to the evicted H: old popular blocks age out


@nb.njit(cache=True)
def _gdsf_ops(op, a, ids, num, now, depth0, cat, parent0, hints):
    return _core.run_op(_nop_push, _gdsf_access, _insert, _delete, _peek, _gdsf_evict,
                        op, a, ids, num, now, depth0, cat, parent0, hints)  # fmt: skip


@nb.njit(cache=True)
def _gdsf_replay(a, req_start, blocks, times, cats, hints, num_dense, capacity, log):
    return _core.replay(_nop_push, _gdsf_access, _insert, _delete, _peek, _gdsf_evict, True,
                        a, req_start, blocks, times, cats, hints, num_dense, capacity, log)  # fmt: skip


@EVICTION_POLICIES.register("gdsf")
class GDSFPolicy(HeapPolicy):
    """Greedy-Dual-Size-Frequency (Cherkasova 1998) with unit block size and cost.

    H = L + hits since fill; evict the smallest H and set L to it, so frequency counts of blocks that
    stopped being used are overtaken by the rising L (LFU with dynamic aging).
    """

    name = "gdsf"
    kernels = (_gdsf_ops, _gdsf_replay)


# ---- OPT (Belady) --------------------------------------------------------------------------------
@nb.njit(cache=True)
def _opt_access(a, s, now, depth, cat, h0, h1, h2, fill):
    nxt = math.inf if math.isnan(h0) else h0  # no hint: as if never used again
    putf(a, at(a, _K1, s), -nxt)  # furthest next use first
    putf(a, at(a, _K2, s), -float(a[at(a, _core.F_DEPTH, s)]))  # then deepest first


@nb.njit(cache=True)
def _opt_ops(op, a, ids, num, now, depth0, cat, parent0, hints):
    return _core.run_op(_nop_push, _opt_access, _insert, _delete, _peek, _nop_evict,
                        op, a, ids, num, now, depth0, cat, parent0, hints)  # fmt: skip


@nb.njit(cache=True)
def _opt_replay(a, req_start, blocks, times, cats, hints, num_dense, capacity, log):
    return _core.replay(_nop_push, _opt_access, _insert, _delete, _peek, _nop_evict, True,
                        a, req_start, blocks, times, cats, hints, num_dense, capacity, log)  # fmt: skip


@EVICTION_POLICIES.register("opt")
class OPTPolicy(HeapPolicy):
    """Belady: evict the block whose next use is furthest away (never used again: first).

    Ties go deepest first, so a parent never leaves before its cached children (a child's every use
    is also a use of its parent): the cache stays prefix-closed, and on the flattened block stream
    with the current request's blocks pinned this is the classical optimum. Needs next-use hints,
    so it only runs offline.
    """

    name = "opt"
    offline_only = True
    hint_kind = "next_use"
    prefix_closed = True
    kernels = (_opt_ops, _opt_replay)
