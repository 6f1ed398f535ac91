"""One GPU's memory budget: parameters + KV region + reserve, the single place KV capacity comes from.

It is mutable on purpose: a later issue drops and restores model layers at run time, which moves
bytes between parameters and the KV region and changes how many bytes one token of KV needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from wildserve.errors import ConfigError
from wildserve.perf.memory import KVCapacity


@dataclass
class GpuMemory:
    """Byte accounting of one instance's GPU memory."""

    usable_bytes: int  # total memory times the utilization fraction
    param_bytes: int  # model weights resident on this GPU
    reserve_bytes: int  # activations, CUDA graphs, allocator slack
    kv_bytes_per_token: int  # K and V of one token for the layers this GPU holds
    block_size: int

    @classmethod
    def from_capacity(cls, cap: KVCapacity, block_size: int) -> GpuMemory:
        return cls(
            cap.usable_bytes, cap.param_bytes, cap.reserve_bytes, cap.kv_bytes_per_token, block_size
        )

    @property
    def kv_bytes(self) -> int:
        return self.usable_bytes - self.param_bytes - self.reserve_bytes

    @property
    def block_bytes(self) -> int:
        return self.kv_bytes_per_token * self.block_size

    def num_blocks(self) -> int:
        """KV blocks that fit; raises if the weights and reserve leave no room for one."""
        n = self.kv_bytes // self.block_bytes if self.kv_bytes > 0 else 0
        if n < 1:
            raise ConfigError(
                f"no room for KV cache: {self.param_bytes} B weights + {self.reserve_bytes} B reserve "
                f"of {self.usable_bytes} B usable"
            )
        return n
