"""Prefix-KV eviction policies, shared by the engine's block pool and the offline replay.

A policy is a registered ``ArrayPolicy`` class whose decisions are jitted hooks over one state
array; the same object runs in ``engine.BlockPool`` and in ``kvcache.replay`` (millions of block
accesses per second), so the two cannot decide differently. Most policies are one key function:

* ``KeyedPolicy`` (``keyed.py``): the key is fixed when the block is accessed (LFU, GDSF, OPT);
* ``AgeKeyedPolicy`` (``aged.py``): the key is a score of the block's class and idle time, never
  increasing with age (WA, RWA, WA-paper; ``reuse_fit.py`` fits their per-class reuse model).

Add a policy in one file plus a test:

1. write the key as an ``@numba.njit(cache=True)`` function, e.g. for "evict the shallowest
   block first" ``def _key(a, s, now, depth, cat, hint, count): return float(depth), 0.0``
   (``hint`` holds what the caller knows: ``hint.next_use``, ``hint.age_s``,
   ``hint.prev_category``, ``hint.prior_accesses``; per-block state lives in the arena ``a``,
   read with ``_core.at`` / ``getf``);
2. subclass the base and register it::

       @EVICTION_POLICIES.register("shallow")
       class ShallowFirst(KeyedPolicy):
           \"\"\"Why this order; what it needs.\"\"\"
           name = "shallow"
           key = _key

   The hooks and the two kernels (per-operation and replay) are generated for the class, cached by
   numba beside its file; ``classes_per_category``, ``block_fields``, ``tables()`` and
   ``_init_header`` add state when the key needs more than the base keeps;
3. import the module here, and test the order on a hand-built sequence of ``push`` / ``on_access``
   / ``pop_many`` calls (``tests/kvcache/test_policies.py``); the property tests then check it
   against the block pool and OPT. ``wa_paper.py`` is this recipe for an age-keyed score.

``make_eviction_policy("NAME[:leaf][@KEY=VALUE...]")`` builds one (``:leaf``: only prefix-tree
leaves may be evicted, as in SGLang; ``@life_s=30``: a keyword setting of the class).
"""

from wildserve.kvcache._core import AccessHints, Hint
from wildserve.kvcache.aged import AgeKeyedPolicy
from wildserve.kvcache.keyed import GDSFPolicy, KeyedPolicy, LFUPolicy, OPTPolicy
from wildserve.kvcache.policy import (
    EVICTION_POLICIES,
    ArrayPolicy,
    EvictionPolicy,
    Hooks,
    LRUPolicy,
    Table,
    make_eviction_policy,
    parse_policy_spec,
)
from wildserve.kvcache.rwa import RWAPolicy
from wildserve.kvcache.wa import WAPolicy
from wildserve.kvcache.wa_paper import WAPaperPolicy

__all__ = [
    "EVICTION_POLICIES",
    "AccessHints",
    "AgeKeyedPolicy",
    "ArrayPolicy",
    "EvictionPolicy",
    "GDSFPolicy",
    "Hint",
    "Hooks",
    "KeyedPolicy",
    "LFUPolicy",
    "LRUPolicy",
    "OPTPolicy",
    "RWAPolicy",
    "Table",
    "WAPaperPolicy",
    "WAPolicy",
    "make_eviction_policy",
    "parse_policy_spec",
]
