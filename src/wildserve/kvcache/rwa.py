"""RWA: workload-aware eviction whose classes also say how often a block's content came back.

Our own design, on WA's machinery (``wa.py``: per-class exponential reuse model, one list per
class, evict the head least likely to be reused within ``life_s``). WA's classes are request
categories. RWA splits each category by the access history of the block's content: first access
(``r0``), second (``r1``), third or later (``r2+``). Most blocks of a trace are used once (74% of
Mooncake's), while a block that already came back once is much more likely to come back again
(multi-turn context, shared system prompts), so the fitted reuse probability of ``r0`` classes is
low and new, unproven blocks leave first, the way S3-FIFO's probation queue or LIRS's cold set
treat them, but with the threshold set by the fitted model instead of a queue size. Nothing else
is added or tuned: the levels (1, 2, 3+) were fixed before any run.

A reuse is credited to the class of the content's previous access (its category from the history,
its level from the history's access count minus one). Without history hints the level is what the
cache itself saw: 0 on a fill, one more than before on each hit.
"""

from __future__ import annotations

import math

import numba as nb

from wildserve.kvcache import _core
from wildserve.kvcache.policy import EVICTION_POLICIES, _nop_evict
from wildserve.kvcache.wa import (
    _CAT,
    _LAST,
    WAPolicy,
    _delete,
    _insert,
    _on_push,
    _peek,
    _record,
)

LEVELS = 3  # r0, r1, r2+


@nb.njit(cache=True)
def _rwa_on_access(a, s, now, depth, cat, h0, h1, h2, fill):
    if math.isnan(h0):  # no history: the level is the number of hits this cache saw
        if fill:
            _record(a, s, now, cat * LEVELS, -1, 0.0)
        else:
            prev = a[_core.at(a, _CAT, s)]
            level = min(prev % LEVELS + 1, LEVELS - 1)
            age = now - _core.getf(a, _core.at(a, _LAST, s))
            _record(a, s, now, cat * LEVELS + level, prev, age)
    elif h0 < math.inf:
        prior = int(h2)  # accesses of this content before this one (>= 1 here)
        prev = int(h1) * LEVELS + min(prior - 1, LEVELS - 1)
        _record(a, s, now, cat * LEVELS + min(prior, LEVELS - 1), prev, h0)
    else:
        _record(a, s, now, cat * LEVELS, -1, 0.0)


@nb.njit(cache=True)
def _rwa_ops(op, a, ids, num, now, depth0, cat, parent0, hints):
    return _core.run_op(_on_push, _rwa_on_access, _insert, _delete, _peek, _nop_evict,
                        op, a, ids, num, now, depth0, cat, parent0, hints)  # fmt: skip


@nb.njit(cache=True)
def _rwa_replay(a, req_start, blocks, times, cats, hints, num_dense, capacity, log):
    return _core.replay(_on_push, _rwa_on_access, _insert, _delete, _peek, _nop_evict, True,
                        a, req_start, blocks, times, cats, hints, num_dense, capacity, log)  # fmt: skip


@EVICTION_POLICIES.register("rwa")
class RWAPolicy(WAPolicy):
    """WA over (category, reuse level) classes (see the module docstring)."""

    name = "rwa"
    kernels = (_rwa_ops, _rwa_replay)
    classes_per_category = LEVELS
