"""Per-backend load shared by the workers of one gateway: in-flight requests and queued prefill tokens.

Layout: one shared-memory block holding an ``int64`` array ``[2, workers, backends]`` (plane 0 the
in-flight requests, plane 1 the queued prefill tokens). Worker ``w`` writes only row ``w`` of each
plane, so every cell has a single writer and no lock is needed; a routing decision reads the column
sums (``workers x backends`` integers: a few hundred nanoseconds). A request is counted once, in the
row of the worker that proxies it, and released by that same worker, so nothing is double counted.

Consistency: each cell is an aligned 8-byte word written by one process, so a reader never sees a
torn value; a sum may miss another worker's update of the last microseconds (two workers may pick the
same backend in the same instant, the race every multi-threaded router has). When a worker dies its
row still holds what it had in flight: the parent calls :meth:`clear_row` before it starts a
replacement, so a crash does not leave phantom load behind.
"""

from __future__ import annotations

from multiprocessing import shared_memory

import numpy as np

IN_FLIGHT, QUEUED_PREFILL = 0, 1


class SharedLoadTable:
    """The ``[2, workers, backends]`` load table; ``worker`` is the row this process writes (or None)."""

    def __init__(
        self,
        shm: shared_memory.SharedMemory,
        num_workers: int,
        num_backends: int,
        worker: int | None,
        owner: bool,
    ) -> None:
        if worker is not None and not 0 <= worker < num_workers:
            raise ValueError(f"worker {worker} outside 0..{num_workers - 1}")
        self._shm = shm
        self._owner = owner
        self.num_workers = num_workers
        self.num_backends = num_backends
        self.worker = worker
        self.table = np.ndarray((2, num_workers, num_backends), dtype=np.int64, buffer=shm.buf)
        self._row = None if worker is None else self.table[:, worker, :]

    @classmethod
    def create(cls, num_workers: int, num_backends: int) -> SharedLoadTable:
        """A zeroed table owned by this process (the parent): :meth:`close` unlinks it."""
        if num_workers < 1 or num_backends < 1:
            raise ValueError(f"need >= 1 worker and backend, got {num_workers}, {num_backends}")
        size = 2 * num_workers * num_backends * 8
        shm = shared_memory.SharedMemory(create=True, size=size)
        table = cls(shm, num_workers, num_backends, None, owner=True)
        table.table[:] = 0
        return table

    @classmethod
    def attach(cls, name: str, num_workers: int, num_backends: int, worker: int) -> SharedLoadTable:
        """Open the parent's table as ``worker``; closing it leaves the block to the parent."""
        # Python < 3.13 registers an attach with the resource tracker too (bpo-39959); the workers
        # are the parent's multiprocessing children and share its tracker, whose set of names then
        # holds this one once and unlinks it only if the parent dies without closing the table
        shm = shared_memory.SharedMemory(name=name)
        return cls(shm, num_workers, num_backends, worker, owner=False)

    @property
    def name(self) -> str:
        return self._shm.name

    # ---- this worker's row -------------------------------------------------------------------
    def add(self, backend: int, in_flight: int, queued_prefill: int = 0) -> None:
        """Change this worker's counts for ``backend`` (negative to release)."""
        row = self._row
        if row is None:
            raise RuntimeError("the parent's view of the table has no row to write")
        row[IN_FLIGHT, backend] += in_flight
        row[QUEUED_PREFILL, backend] += queued_prefill

    # ---- whole-gateway reads ------------------------------------------------------------------
    def in_flight(self) -> np.ndarray:
        """In-flight requests per backend, summed over the workers."""
        return self.table[IN_FLIGHT].sum(axis=0)

    def queued_prefill(self) -> np.ndarray:
        """Queued prefill tokens per backend, summed over the workers."""
        return self.table[QUEUED_PREFILL].sum(axis=0)

    def clear_row(self, worker: int) -> None:
        """Forget a dead worker's counts (the parent, before a replacement starts on that row)."""
        self.table[:, worker, :] = 0

    def close(self) -> None:
        self._row = None
        del self.table
        self._shm.close()
        if self._owner:
            self._shm.unlink()
