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

from wildserve.kvcache._core import at, getf
from wildserve.kvcache.aged import CLS, LAST
from wildserve.kvcache.policy import EVICTION_POLICIES
from wildserve.kvcache.reuse_fit import record
from wildserve.kvcache.wa import WAPolicy

LEVELS = 3  # r0, r1, r2+


@nb.njit(cache=True)
def rwa_observe(a, s, now, depth, cat, hint, fill):
    if math.isnan(hint.age_s):  # no history: the level is the number of hits this cache saw
        if fill:
            cls = cat * LEVELS
            record(a, now, cls, -1, 0.0)
        else:
            prev = a[at(a, CLS, s)]
            cls = cat * LEVELS + min(prev % LEVELS + 1, LEVELS - 1)
            record(a, now, cls, prev, now - getf(a, at(a, LAST, s)))
    elif hint.age_s < math.inf:
        prior = hint.prior_accesses  # accesses of this content before this one (>= 1 here)
        prev = hint.prev_category * LEVELS + min(prior - 1, LEVELS - 1)
        cls = cat * LEVELS + min(prior, LEVELS - 1)
        record(a, now, cls, prev, hint.age_s)
    else:
        cls = cat * LEVELS
        record(a, now, cls, -1, 0.0)
    return cls


@EVICTION_POLICIES.register("rwa")
class RWAPolicy(WAPolicy):
    """WA over (category, reuse level) classes (see the module docstring)."""

    observe = rwa_observe
    classes_per_category = LEVELS
