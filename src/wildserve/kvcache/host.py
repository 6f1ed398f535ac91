"""Host (CPU) memory behind one GPU: byte accounting plus PCIe transfer time, and a KV tier on top.

``HostMemory`` only counts bytes and prices copies; it knows nothing about KV blocks, so a swapping
scheduler (InferCept-style preemption) can reserve from the same object. Copy times come from the
perf model (``StepCostBase.p2p_time`` at the GPU's ``pcie_bw``), never from constants here.

``HostKVCache`` is a victim cache of prefix blocks: a block whose last GPU copy is evicted is kept in
host memory (least recently used goes when full), and a later prefix lookup that runs past the GPU
hits continues into it; those blocks are copied back instead of recomputed. Stores (GPU to host)
are assumed to overlap with compute and cost nothing; loads are charged to the step that needs them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from wildserve.errors import ConfigError

GIB = 1 << 30


@dataclass
class HostMemory:
    """Bytes of host DRAM one instance may use, and how long a host<->GPU copy of N bytes takes."""

    capacity_bytes: int
    transfer_time: Callable[[float], float]  # seconds to copy that many bytes over PCIe
    used_bytes: int = 0
    bytes_loaded: int = field(default=0, repr=False)  # host -> GPU, over the run

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
                f"a host-memory tier needs a perf cost model with a GPU (got "
                f"{type(cost_model).__name__}): its PCIe bandwidth prices the copies"
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

    def load_time(self, num_bytes: int) -> float:
        """Seconds to copy ``num_bytes`` from host to GPU (counted in ``bytes_loaded``)."""
        if num_bytes <= 0:
            return 0.0
        self.bytes_loaded += num_bytes
        return self.transfer_time(num_bytes)


class HostKVCache:
    """An LRU victim cache of prefix-block hashes in host memory."""

    def __init__(self, memory: HostMemory, block_bytes: int) -> None:
        if block_bytes <= 0:
            raise ConfigError(f"block_bytes must be positive, got {block_bytes}")
        self.memory = memory
        self.block_bytes = block_bytes
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self.num_hits = 0  # blocks found here by prefix lookups

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._blocks

    def store(self, block_hash: int) -> None:
        """Keep an evicted GPU block, dropping least recently used ones to make room."""
        blocks = self._blocks
        if block_hash in blocks:
            blocks.move_to_end(block_hash)
            return
        while not self.memory.try_reserve(self.block_bytes):
            if not blocks:
                return  # the tier cannot hold even one block
            blocks.popitem(last=False)
            self.memory.release(self.block_bytes)
        blocks[block_hash] = None

    def match(self, block_hashes: Sequence[int]) -> int:
        """How many leading hashes are held here (no state change)."""
        n = 0
        for h in block_hashes:
            if h not in self._blocks:
                break
            n += 1
        return n

    def take(self, block_hashes: Sequence[int]) -> float:
        """Note a load of these held blocks into the GPU; returns the copy time in seconds.

        The host copy stays (marked recently used): it is still valid and costs nothing to keep.
        """
        for h in block_hashes:
            self._blocks.move_to_end(h)
        self.num_hits += len(block_hashes)
        return self.memory.load_time(len(block_hashes) * self.block_bytes)
