"""Prefix-KV eviction policies, shared by the engine's block pool and the offline cache simulator."""

from wildserve.kvcache.keyed import GDSFPolicy, LFUPolicy, OPTPolicy
from wildserve.kvcache.policy import (
    EVICTION_POLICIES,
    ArrayPolicy,
    EvictionPolicy,
    LRUPolicy,
    make_eviction_policy,
    parse_policy_spec,
)
from wildserve.kvcache.rwa import RWAPolicy
from wildserve.kvcache.wa import WAPolicy

__all__ = [
    "EVICTION_POLICIES",
    "ArrayPolicy",
    "EvictionPolicy",
    "GDSFPolicy",
    "LFUPolicy",
    "LRUPolicy",
    "OPTPolicy",
    "RWAPolicy",
    "WAPolicy",
    "make_eviction_policy",
    "parse_policy_spec",
]
