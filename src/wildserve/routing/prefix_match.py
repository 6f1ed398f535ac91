"""Longest cached prefix on every instance at once, from one index: block hash -> holder bit mask.

When each instance's cache is prefix-closed (a block is cached only with all its ancestors, as under
LRU with tail-first release), "instance i holds block j of this prompt" is true exactly for j < P_i. A
parallel galloping search then finds every P_i with O(log n) lookups per distinct match length, instead
of walking the prompt once per instance: the cost of routing a 100k-token prompt no longer grows with
its length or with the number of instances holding short prefixes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence


def match_lengths(
    holders: Mapping[int, int], block_hashes: Sequence[int], num_instances: int
) -> list[int]:
    """Per instance, the number of leading ``block_hashes`` it holds (``holders[h]``: bit i = instance i)."""
    out = [0] * num_instances
    n = len(block_hashes)
    if n == 0:
        return out
    get = holders.get
    alive = get(block_hashes[0], 0)
    if not alive:
        return out
    pending: list[tuple[int, int, int]] = []  # (lo, hi, S): every instance in S has lo <= P <= hi
    prev = 0  # every instance in ``alive`` holds block_hashes[: prev + 1]
    step = 1
    while alive:
        probe = prev + step
        if probe >= n - 1:
            probe = n - 1
        held = get(block_hashes[probe], 0) & alive
        dead = alive ^ held  # held is a subset of alive
        if dead:
            pending.append((prev + 1, probe, dead))
        alive = held
        if probe == n - 1:
            break
        prev = probe
        step *= 2
    if alive:
        _assign(out, alive, n)
    while pending:
        lo, hi, group = pending.pop()
        if lo == hi:
            _assign(out, group, lo)
            continue
        mid = (lo + hi) // 2
        held = get(block_hashes[mid], 0) & group
        if held:
            pending.append((mid + 1, hi, held))
        missed = group ^ held  # held is a subset of group
        if missed:
            pending.append((lo, mid, missed))
    return out


def _assign(out: list[int], group: int, value: int) -> None:
    bits = bin(group)[:1:-1]  # least significant bit first
    i = bits.find("1")
    while i >= 0:
        out[i] = value
        i = bits.find("1", i + 1)


class ClusterPrefixIndex:
    """Block hash -> bit mask of the instances holding it, kept current from per-instance events.

    A hash is ``stored`` on an instance when its first copy is cached there and ``removed`` when its
    last copy leaves (the engines' KV events, applied by the view source that listens to them).
    """

    def __init__(self, num_instances: int) -> None:
        self.num_instances = num_instances
        self.holders: dict[int, int] = {}

    def stored(self, instance: int, block_hashes: Sequence[int]) -> None:
        bit = 1 << instance
        holders = self.holders
        for h in block_hashes:
            holders[h] = holders.get(h, 0) | bit

    def removed(self, instance: int, block_hashes: Sequence[int]) -> None:
        clear = ~(1 << instance)
        holders = self.holders
        for h in block_hashes:
            rest = holders.get(h, 0) & clear
            if rest:
                holders[h] = rest
            else:
                holders.pop(h, None)

    def match_lengths(self, block_hashes: Sequence[int]) -> list[int]:
        return match_lengths(self.holders, block_hashes, self.num_instances)


class LazyPrefixMatch:
    """One decision's prefix match on every instance, computed on first use and then reused.

    Policies that ignore the cache never pay for it; those that ask once per instance pay once.
    """

    __slots__ = ("_compute", "_lengths", "hashes")

    def __init__(self, compute: Callable[[Sequence[int]], list[int]], hashes: Sequence[int]):
        self._compute = compute
        self.hashes = hashes
        self._lengths: list[int] | None = None

    def lengths(self) -> list[int]:
        if self._lengths is None:
            self._lengths = self._compute(self.hashes)
        return self._lengths

    def known(self, instance: int) -> int | None:
        """The match on ``instance`` if it was computed already, else None."""
        return None if self._lengths is None else self._lengths[instance]

    def for_instance(
        self, instance: int, fallback: Callable[[Sequence[int]], int]
    ) -> Callable[[Sequence[int]], int]:
        """A view's ``match_blocks``: this decision's hashes from here, any others from ``fallback``."""

        def match(block_hashes: Sequence[int]) -> int:
            if block_hashes is not self.hashes:
                return fallback(block_hashes)
            return self.lengths()[instance]

        return match
