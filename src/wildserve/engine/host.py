"""Host (CPU) memory behind one GPU, for swapping: the one definition lives in ``wildserve.kvcache.host``.

Kept as an import path for ``wildserve.overload`` (it predates the kvcache branch); the KV host tier
(``HostKVCache``) draws from the same ``HostMemory`` objects.
"""

from wildserve.kvcache.host import GIB, HostMemory

__all__ = ["GIB", "HostMemory"]
