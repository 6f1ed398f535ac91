"""One GPU's memory budget: parameters + KV region + reserve, the single place KV capacity comes from.

It is mutable on purpose: dropping and reloading model layers at run time (``wildserve.overload``)
moves bytes between parameters and the KV region and changes how many bytes one token of KV needs.
With per-layer tracking (``num_layers`` > 0) weights are ``other_param_bytes`` (embedding, head) plus
one ``layer_param_bytes`` per held layer, and a token's KV costs ``layer_kv_bytes_per_token`` per layer
whose KV this GPU stores, so a GPU keeping L/g layers fits g times more tokens per KV byte.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from wildserve.errors import ConfigError
from wildserve.perf.memory import KVCapacity


@dataclass
class GpuMemory:
    """Byte accounting of one instance's GPU memory."""

    usable_bytes: int  # total memory times the utilization fraction
    param_bytes: int  # model weights resident on this GPU
    reserve_bytes: int  # activations, CUDA graphs, allocator slack
    kv_bytes_per_token: int  # K and V of one token for the layers this GPU stores KV of
    block_size: int
    num_layers: int = 0  # layers of the whole model; 0: weights are not tracked per layer
    layer_param_bytes: int = 0  # weights of one layer on this GPU
    layer_kv_bytes_per_token: int = 0  # K and V of one token in one layer on this GPU
    layers: tuple[int, int] = (0, 0)  # weights held: layers [lo, hi)
    kv_layers: int = 0  # layers whose KV this GPU stores (normally the layers held)

    @classmethod
    def from_capacity(
        cls, cap: KVCapacity, block_size: int, num_layers: int = 0, layer_param_bytes: int = 0
    ) -> GpuMemory:
        """From a whole-model split; ``num_layers`` and ``layer_param_bytes`` enable layer dropping."""
        mem = cls(
            cap.usable_bytes,
            cap.param_bytes,
            cap.reserve_bytes,
            cap.kv_bytes_per_token,
            block_size,
        )
        return mem.with_layers(num_layers, layer_param_bytes) if num_layers else mem

    def with_layers(self, num_layers: int, layer_param_bytes: int) -> GpuMemory:
        """This accounting, tracked per layer (all ``num_layers`` held), so layers can be dropped."""
        if num_layers < 1 or self.kv_bytes_per_token % num_layers:
            raise ConfigError(f"num_layers={num_layers} does not divide the per-token KV bytes")
        return dataclasses.replace(
            self,
            num_layers=num_layers,
            layer_param_bytes=layer_param_bytes,
            layer_kv_bytes_per_token=self.kv_bytes_per_token // num_layers,
            layers=(0, num_layers),
            kv_layers=num_layers,
        )

    @property
    def kv_bytes(self) -> int:
        return self.usable_bytes - self.param_bytes - self.reserve_bytes

    @property
    def block_bytes(self) -> int:
        return self.kv_bytes_per_token * self.block_size

    @property
    def num_held_layers(self) -> int:
        return self.layers[1] - self.layers[0]

    def num_blocks(self) -> int:
        """KV blocks that fit; raises if the weights and reserve leave no room for one."""
        n = self.kv_bytes // self.block_bytes if self.kv_bytes > 0 else 0
        if n < 1:
            raise ConfigError(
                f"no room for KV cache: {self.param_bytes} B weights + {self.reserve_bytes} B reserve "
                f"of {self.usable_bytes} B usable"
            )
        return n

    def fits(self, num_blocks: int) -> bool:
        """Whether weights + ``num_blocks`` KV blocks + the reserve fit in the usable memory."""
        return self.param_bytes + num_blocks * self.block_bytes + self.reserve_bytes <= (
            self.usable_bytes
        )

    def hold_layers(self, lo: int, hi: int, kv_layers: int | None = None) -> None:
        """Keep the weights of layers [lo, hi) only; KV then stores ``kv_layers`` (default hi - lo).

        Dropping weights hands their bytes to the KV region in place (virtual-memory remapping, no
        copy); reloading takes them back, so the caller must first shrink the KV pool to fit.
        """
        if not self.num_layers:
            raise ConfigError("this GpuMemory does not track weights per layer (num_layers=0)")
        kv = hi - lo if kv_layers is None else kv_layers
        if not (0 <= lo < hi <= self.num_layers and 1 <= kv <= self.num_layers):
            raise ConfigError(
                f"layers [{lo}, {hi}) with KV of {kv} layers out of range for {self.num_layers}"
            )
        self.param_bytes += (hi - lo - self.num_held_layers) * self.layer_param_bytes
        self.layers = (lo, hi)
        self.kv_layers = kv
        self.kv_bytes_per_token = kv * self.layer_kv_bytes_per_token
