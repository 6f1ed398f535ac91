"""The block pool's prefix index: int64 block hash -> block id, an open-addressing table in numpy.

A Mooncake prompt is ~750 blocks and every one of them is registered, looked up and evicted once or
more per request, 16 pools at a time: as a Python dict that is one probe through an int object per
block per event, and it was 40% of the simulator's time. Here the keys sit inline in one ``(capacity,
2)`` int64 array (hash, block id; block id -1 marks an empty slot) with linear probing and
backward-shift deletion (no tombstones, so a probe never walks past deleted entries), and the bulk
operations the pool needs are numba loops over it. Slots come from the hash's top bits after a
Fibonacci multiply, so keys that differ only in low bits still spread. The table doubles before an
insertion could take it past half full.

``tests/engine/test_hash_index.py`` runs random streams of inserts, lookups and deletions through
it and a dict and requires the same answers after every operation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numba as nb
import numpy as np

_EMPTY = -1
_FIB = np.uint64(0x9E3779B97F4A7C15)
_MIN_BITS = 10


@nb.njit(cache=True, inline="always")
def _home(h, bits):
    """The slot a key probes first."""
    return np.int64((np.uint64(h) * _FIB) >> np.uint64(64 - bits))


@nb.njit(cache=True, inline="always")
def _find(tab, bits, h):
    """The key's slot, or ``-1 - s`` where ``s`` is the empty slot that ends its probe."""
    mask = (np.int64(1) << bits) - 1
    s = _home(h, bits)
    while True:
        if tab[s, 1] == _EMPTY:
            return -1 - s
        if tab[s, 0] == h:
            return s
        s = (s + 1) & mask


@nb.njit(cache=True)
def _get(tab, bits, h):
    s = _find(tab, bits, h)
    return tab[s, 1] if s >= 0 else _EMPTY


@nb.njit(cache=True)
def _set(tab, meta, h, b):
    s = _find(tab, meta[1], h)
    if s < 0:
        s = -1 - s
        tab[s, 0] = h
        meta[0] += 1
    tab[s, 1] = b


@nb.njit(cache=True, inline="always")
def _delete_at(tab, meta, s):
    """Empty slot ``s``, shifting later keys of its probe run back so every probe still ends right."""
    bits = meta[1]
    mask = (np.int64(1) << bits) - 1
    i = s
    j = s
    while True:
        j = (j + 1) & mask
        if tab[j, 1] == _EMPTY:
            break
        k = _home(tab[j, 0], bits)
        # the key at j may move to i only if its home is not cyclically within (i, j]
        if (i <= j and i < k <= j) or (i > j and (k > i or k <= j)):
            continue
        tab[i, 0] = tab[j, 0]
        tab[i, 1] = tab[j, 1]
        i = j
    tab[i, 1] = _EMPTY
    meta[0] -= 1


@nb.njit(cache=True)
def _delete(tab, meta, h):
    s = _find(tab, meta[1], h)
    if s < 0:
        return False
    _delete_at(tab, meta, s)
    return True


@nb.njit(cache=True)
def _delete_many(tab, meta, hashes):
    """Delete every key of ``hashes`` (each must be present); False, at the first absent one."""
    for i in range(len(hashes)):
        s = _find(tab, meta[1], hashes[i])
        if s < 0:
            return False
        _delete_at(tab, meta, s)
    return True


@nb.njit(cache=True)
def _setdefault_many(tab, meta, hashes, blocks, holders):
    """``holders[i] = dict.setdefault(hashes[i], blocks[i])``, in order; returns how many differ."""
    bits = meta[1]
    num_held = 0
    for i in range(len(hashes)):
        h = hashes[i]
        s = _find(tab, bits, h)
        if s >= 0:
            holders[i] = tab[s, 1]
            if tab[s, 1] != blocks[i]:
                num_held += 1
        else:
            s = -1 - s
            tab[s, 0] = h
            tab[s, 1] = blocks[i]
            meta[0] += 1
            holders[i] = blocks[i]
    return num_held


@nb.njit(cache=True)
def _match_prefix(tab, bits, hashes, out):
    """Block ids of the longest prefix of ``hashes`` present, into ``out``; returns its length."""
    for i in range(len(hashes)):
        s = _find(tab, bits, hashes[i])
        if s < 0:
            return i
        out[i] = tab[s, 1]
    return len(hashes)


@nb.njit(cache=True)
def _num_matched(tab, bits, hashes, gallop):
    """Length of the longest present prefix; with ``gallop`` (presence is monotone along the chain,
    as in a prefix-closed cache) a galloping then binary search, O(log n) probes."""
    n = len(hashes)
    if n < 16 or not gallop:
        for i in range(n):
            if _find(tab, bits, hashes[i]) < 0:
                return i
        return n
    if _find(tab, bits, hashes[0]) < 0:
        return 0
    lo = 1  # hashes[:lo] are all present
    step = 1
    hi = n - 1
    while True:
        probe = lo + step - 1
        if probe >= n - 1:
            if _find(tab, bits, hashes[n - 1]) >= 0:
                return n
            hi = n - 1
            break
        if _find(tab, bits, hashes[probe]) < 0:
            hi = probe  # hashes[hi] is absent
            break
        lo = probe + 1
        step *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if _find(tab, bits, hashes[mid]) >= 0:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(cache=True)
def _rehash(old, new, bits):
    for s in range(old.shape[0]):
        if old[s, 1] != _EMPTY:
            t = _find(new, bits, old[s, 0])
            t = -1 - t
            new[t, 0] = old[s, 0]
            new[t, 1] = old[s, 1]


def _new_table(bits: int) -> np.ndarray:
    tab = np.zeros((1 << bits, 2), np.int64)
    tab[:, 1] = _EMPTY
    return tab


def as_hashes(block_hashes: object) -> np.ndarray:
    """Block hashes as the contiguous int64 array the kernels take (no copy if they already are)."""
    if type(block_hashes) is np.ndarray and block_hashes.dtype == np.int64:
        return block_hashes
    return np.array(block_hashes, np.int64)


class BlockHashIndex:
    """A map from block hash to the block that holds it, for lookups by chains of hashes.

    Values are non-negative block ids. Single-key methods serve the rare paths; the ``*_many``
    methods and the prefix queries are one compiled loop each, taking int64 arrays (``as_hashes``).
    """

    def __init__(self, expected: int = 0) -> None:
        bits = _MIN_BITS
        while (1 << bits) < 2 * expected:
            bits += 1
        self._tab = _new_table(bits)
        self._meta = np.array([0, bits], np.int64)  # number of keys, log2 of the capacity

    def __len__(self) -> int:
        return int(self._meta[0])

    @property
    def capacity(self) -> int:
        return len(self._tab)

    def reserve(self, num_more: int) -> None:
        """Make room for ``num_more`` new keys (the table stays at most half full)."""
        need = 2 * (int(self._meta[0]) + num_more)
        bits = int(self._meta[1])
        if need <= (1 << bits):
            return
        while (1 << bits) < need:
            bits += 1
        new = _new_table(bits)
        _rehash(self._tab, new, bits)
        self._tab = new
        self._meta[1] = bits

    # ---- single keys ------------------------------------------------------------------------
    def get(self, h: int) -> int:
        """The block holding ``h``, or -1."""
        return int(_get(self._tab, self._meta[1], h))

    def __contains__(self, h: int) -> bool:
        return _get(self._tab, self._meta[1], h) != _EMPTY

    def __getitem__(self, h: int) -> int:
        b = self.get(h)
        if b == _EMPTY:
            raise KeyError(h)
        return b

    def __setitem__(self, h: int, block_id: int) -> None:
        if block_id < 0:
            raise ValueError(f"block id must be non-negative, got {block_id}")
        self.reserve(1)
        _set(self._tab, self._meta, h, block_id)

    def __delitem__(self, h: int) -> None:
        if not _delete(self._tab, self._meta, h):
            raise KeyError(h)

    # ---- bulk -------------------------------------------------------------------------------
    def setdefault_many(self, hashes: np.ndarray, block_ids: np.ndarray) -> tuple[np.ndarray, int]:
        """``dict.setdefault`` per pair in order: the holder of each hash, and how many were held
        by another block already (earlier pairs of the same call included)."""
        self.reserve(len(hashes))
        holders = np.empty(len(hashes), np.int64)
        num_held = _setdefault_many(self._tab, self._meta, hashes, block_ids, holders)
        return holders, int(num_held)

    def delete_many(self, hashes: np.ndarray) -> None:
        """Delete each hash in order; KeyError (the earlier ones deleted) if one is absent."""
        if not _delete_many(self._tab, self._meta, hashes):
            raise KeyError("a hash to delete is not in the index")

    def match_prefix(self, hashes: np.ndarray) -> np.ndarray:
        """Block ids of the longest prefix of ``hashes`` in the index."""
        out = np.empty(len(hashes), np.int64)
        return out[: _match_prefix(self._tab, self._meta[1], hashes, out)]

    def num_matched(self, hashes: np.ndarray, gallop: bool) -> int:
        """Length of the longest prefix of ``hashes`` in the index (see ``_num_matched``)."""
        return int(_num_matched(self._tab, self._meta[1], hashes, gallop))

    # ---- inspection -------------------------------------------------------------------------
    def items(self) -> Iterator[tuple[int, int]]:
        """(hash, block id) pairs, in table order."""
        full = self._tab[self._tab[:, 1] != _EMPTY]
        return zip(full[:, 0].tolist(), full[:, 1].tolist(), strict=True)

    def __iter__(self) -> Iterator[int]:
        return iter(self._tab[self._tab[:, 1] != _EMPTY, 0].tolist())

    def to_dict(self) -> dict[int, int]:
        return dict(self.items())
