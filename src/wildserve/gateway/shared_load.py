"""What the workers of one gateway share: per-backend load, and the counts behind ``/metrics``.

Layout: one shared-memory block holding an ``int64`` array ``[2, workers, backends]`` (plane 0 the
in-flight requests, plane 1 the queued prefill tokens), then each worker's metric cells (``int64``
``[workers, metric_ints]``, ``float64`` ``[workers, metric_floats]``: request counts, histogram
buckets and sums, laid out by ``gateway_metrics``). Worker ``w`` writes only row ``w`` of each
plane, so every cell has a single writer and no lock is needed; a routing decision reads the column
sums (``workers x backends`` integers: a few hundred nanoseconds). A request is counted once, in the
row of the worker that proxies it, and released by that same worker, so nothing is double counted.

Consistency: each cell is an aligned 8-byte word written by one process, so a reader never sees a
torn value; a sum may miss another worker's update of the last microseconds (two workers may pick the
same backend in the same instant, the race every multi-threaded router has). When a worker dies its
row still holds what it had in flight: the parent calls :meth:`clear_row` before it starts a
replacement, so a crash does not leave phantom load behind. Its metric cells are kept: they are
counters, and the replacement goes on adding to them, so a scrape's totals never go down.
"""

from __future__ import annotations

from multiprocessing import shared_memory

import numpy as np

IN_FLIGHT, QUEUED_PREFILL = 0, 1


class SharedLoadTable:
    """The ``[2, workers, backends]`` load table and the workers' metric cells; ``worker`` is the
    row this process writes (None in the parent)."""

    def __init__(
        self,
        shm: shared_memory.SharedMemory,
        num_workers: int,
        num_backends: int,
        worker: int | None,
        owner: bool,
        metric_cells: tuple[int, int] = (0, 0),
    ) -> None:
        if worker is not None and not 0 <= worker < num_workers:
            raise ValueError(f"worker {worker} outside 0..{num_workers - 1}")
        self._shm = shm
        self._owner = owner
        self.num_workers = num_workers
        self.num_backends = num_backends
        self.worker = worker
        self.metric_cells = metric_cells
        self.table = np.ndarray((2, num_workers, num_backends), dtype=np.int64, buffer=shm.buf)
        self._row = None if worker is None else self.table[:, worker, :]
        num_ints, num_floats = metric_cells
        self._ints_at = self.table.nbytes
        self._floats_at = self._ints_at + num_workers * num_ints * 8
        self._metric_ints = np.ndarray(
            (num_workers, num_ints), dtype=np.int64, buffer=shm.buf, offset=self._ints_at
        )
        self._metric_floats = np.ndarray(
            (num_workers, num_floats), dtype=np.float64, buffer=shm.buf, offset=self._floats_at
        )
        self._views: list[memoryview] = []  # the row views handed out, released by close()

    @staticmethod
    def _size(num_workers: int, num_backends: int, metric_cells: tuple[int, int]) -> int:
        return (2 * num_backends + sum(metric_cells)) * num_workers * 8

    @classmethod
    def create(
        cls, num_workers: int, num_backends: int, metric_cells: tuple[int, int] = (0, 0)
    ) -> SharedLoadTable:
        """A zeroed table owned by this process (the parent): :meth:`close` unlinks it.
        ``metric_cells``: how many int and float metric cells each worker writes."""
        if num_workers < 1 or num_backends < 1:
            raise ValueError(f"need >= 1 worker and backend, got {num_workers}, {num_backends}")
        size = cls._size(num_workers, num_backends, metric_cells)
        shm = shared_memory.SharedMemory(create=True, size=size)
        table = cls(shm, num_workers, num_backends, None, True, metric_cells)
        shm.buf[:size] = bytes(size)
        return table

    @classmethod
    def attach(
        cls,
        name: str,
        num_workers: int,
        num_backends: int,
        worker: int,
        metric_cells: tuple[int, int] = (0, 0),
    ) -> SharedLoadTable:
        """Open the parent's table as ``worker``; closing it leaves the block to the parent."""
        # Python < 3.13 registers an attach with the resource tracker too (bpo-39959); the workers
        # are the parent's multiprocessing children and share its tracker, whose set of names then
        # holds this one once and unlinks it only if the parent dies without closing the table
        shm = shared_memory.SharedMemory(name=name)
        if shm.size < cls._size(num_workers, num_backends, metric_cells):
            shm.close()
            raise ValueError(f"shared table {name} is smaller than its layout")
        return cls(shm, num_workers, num_backends, worker, False, metric_cells)

    @property
    def name(self) -> str:
        return self._shm.name

    # ---- this worker's row -------------------------------------------------------------------
    def load_rows(self) -> tuple[memoryview, memoryview]:
        """This worker's in-flight and queued-prefill counts per backend, written in place (a
        router keeps its own counts here, not in lists mirrored into the table)."""
        if self.worker is None:
            raise RuntimeError("the parent's view of the table has no row to write")
        flat = self._views_of(0, self.table.nbytes, "q")
        b, w = self.num_backends, self.num_workers
        at = [(plane * w + self.worker) * b for plane in (IN_FLIGHT, QUEUED_PREFILL)]
        return self.track(flat[at[0] : at[0] + b]), self.track(flat[at[1] : at[1] + b])

    def add(self, backend: int, in_flight: int, queued_prefill: int = 0) -> None:
        """Change this worker's counts for ``backend`` (negative to release)."""
        row = self._row
        if row is None:
            raise RuntimeError("the parent's view of the table has no row to write")
        row[IN_FLIGHT, backend] += in_flight
        row[QUEUED_PREFILL, backend] += queued_prefill

    def metric_row(self) -> tuple[memoryview, memoryview]:
        """This worker's metric cells (ints, floats), written in place: ``row[i] += 1`` is one
        aligned word store in shared memory, ~3x a list's ``+= 1`` and no lock."""
        if self.worker is None:
            raise RuntimeError("the parent's view of the table has no row to write")
        num_ints, num_floats = self.metric_cells
        ints_at = self._ints_at + self.worker * num_ints * 8
        floats_at = self._floats_at + self.worker * num_floats * 8
        return self._views_of(ints_at, num_ints * 8, "q"), self._views_of(
            floats_at, num_floats * 8, "d"
        )

    def _views_of(self, at: int, nbytes: int, fmt: str) -> memoryview:
        """Bytes ``at .. at + nbytes`` of the block as a flat array of ``fmt`` (tracked)."""
        return self.track(self.track(self._shm.buf[at : at + nbytes]).cast(fmt))

    def track(self, view: memoryview) -> memoryview:
        """Remember a view derived from :meth:`metric_row` so that :meth:`close` releases it."""
        self._views.append(view)
        return view

    # ---- whole-gateway reads ------------------------------------------------------------------
    def in_flight(self) -> np.ndarray:
        """In-flight requests per backend, summed over the workers."""
        return self.table[IN_FLIGHT].sum(axis=0)

    def queued_prefill(self) -> np.ndarray:
        """Queued prefill tokens per backend, summed over the workers."""
        return self.table[QUEUED_PREFILL].sum(axis=0)

    def metric_sums(self) -> tuple[list[int], list[float]]:
        """Every metric cell summed over the workers (the whole gateway's counts)."""
        return self._metric_ints.sum(axis=0).tolist(), self._metric_floats.sum(axis=0).tolist()

    def metric_rows(self) -> list[tuple[list[int], list[float]]]:
        """Each worker's metric cells, by worker."""
        return list(zip(self._metric_ints.tolist(), self._metric_floats.tolist(), strict=True))

    def clear_row(self, worker: int) -> None:
        """Forget a dead worker's load (the parent, before a replacement starts on that row); its
        metric counts stay, for the replacement to go on from."""
        self.table[:, worker, :] = 0

    def close(self) -> None:
        self._row = None
        for view in reversed(self._views):  # derived views first: a view with exports cannot go
            view.release()
        self._views.clear()
        del self.table, self._metric_ints, self._metric_floats
        self._shm.close()
        if self._owner:
            self._shm.unlink()
