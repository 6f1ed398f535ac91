"""Prefix-KV eviction policies, shared by the engine's block pool and the offline cache simulator."""

from wildserve.kvcache.policy import (
    EVICTION_POLICIES,
    EvictionPolicy,
    LRUPolicy,
    make_eviction_policy,
)

__all__ = ["EVICTION_POLICIES", "EvictionPolicy", "LRUPolicy", "make_eviction_policy"]
