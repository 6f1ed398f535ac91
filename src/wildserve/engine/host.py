"""Host (CPU) memory behind one GPU: bytes reserved there and the PCIe time to copy them.

A minimal stand-in with the interface of ``wildserve.kvcache.host.HostMemory`` (being built on the
``kvcache`` branch, not yet on main): swap out reserves bytes, swap in releases them, and copy times
come from the perf model at the GPU's PCIe bandwidth. Replace with the kvcache one when it lands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from wildserve.errors import ConfigError

GIB = 1 << 30


@dataclass
class HostMemory:
    """Bytes of host DRAM one instance may use, and how long a host<->GPU copy of N bytes takes."""

    capacity_bytes: int
    transfer_time: Callable[[float], float]  # seconds to copy that many bytes over PCIe
    used_bytes: int = 0

    def __post_init__(self) -> None:
        if self.capacity_bytes < 0:
            raise ConfigError(f"host memory capacity must be >= 0, got {self.capacity_bytes}")

    @classmethod
    def for_cost_model(cls, capacity_bytes: int, cost_model: object) -> HostMemory:
        """Host memory whose copies are priced by the perf model at the GPU's PCIe bandwidth."""
        p2p = getattr(cost_model, "p2p_time", None)
        gpu = getattr(cost_model, "gpu", None)
        if p2p is None or gpu is None:
            raise ConfigError(
                f"host memory needs a perf cost model with a GPU (got {type(cost_model).__name__})"
            )
        bw = gpu.pcie_bw
        return cls(int(capacity_bytes), lambda num_bytes: p2p(num_bytes, bw))

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - self.used_bytes

    def try_reserve(self, num_bytes: int) -> bool:
        """Take ``num_bytes`` if they fit; False (and nothing taken) if not."""
        if num_bytes > self.free_bytes:
            return False
        self.used_bytes += num_bytes
        return True

    def release(self, num_bytes: int) -> None:
        if num_bytes > self.used_bytes:
            raise RuntimeError(f"release({num_bytes}) of host memory with {self.used_bytes} used")
        self.used_bytes -= num_bytes
