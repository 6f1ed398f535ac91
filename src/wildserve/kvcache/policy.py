"""The eviction-policy interface over evictable cached blocks, the array-backed base and vLLM's LRU.

A policy only ever sees blocks that hold a reusable prefix and have no running request using them
(reference count 0). The block pool tells it when a block becomes evictable (``push``), when a cache
hit takes it back (``remove``) and asks it for a victim (``pop``); ``on_access`` reports every hit or
fill so frequency- or workload-aware policies can learn. Time is passed in, never read.

Every concrete policy is an ``ArrayPolicy``: its state lives in numpy arrays and its decisions in the
jitted hooks of ``_core``, which the offline replay (``kvcache.sim``) calls too. A spec such as
``"wa:leaf"`` picks the structural variant: ``any`` (default, vLLM: any evictable block may go) or
``leaf`` (SGLang: only leaves of the prefix tree may go, so the cache stays prefix-closed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numba as nb
import numpy as np

from wildserve.errors import ConfigError
from wildserve.kvcache import _core
from wildserve.registry import Registry

_EMPTY_HINTS = np.zeros((3, 0), np.float64)
_NO_IDS = np.zeros(0, np.int64)


class EvictionPolicy(ABC):
    """Chooses which evictable cached block to drop when the pool needs a free block."""

    name: ClassVar[str]
    tracks_access: ClassVar[bool] = True  # False: the pool may skip on_access calls (a hot path)
    # True when a cached block can never outlive every copy of its parent (prefix lookups may then
    # binary-search instead of walking)
    prefix_closed: bool = False
    offline_only: ClassVar[bool] = False  # needs the future (next-use hints): not for a live engine
    # which hints the caller should pass to on_access_many: None, "next_use" or "history"
    hint_kind: ClassVar[str | None] = None
    history_s: float = 0.0  # for "history": how old an earlier access may be and still count

    def on_access(self, block_id: int, now: float, depth: int, category: int) -> None:  # noqa: B027
        """A cached block was hit or filled at ``now``; ``depth`` is its index in the prefix."""

    def on_access_many(
        self,
        block_ids: Sequence[int],
        now: float,
        depth0: int,
        category: int,
        parent: int = -1,
        hints: np.ndarray | Sequence[float] | None = None,
    ) -> None:
        """Consecutive blocks of one request (depths ``depth0``..); ``parent`` precedes the first.

        ``hints``, shape (3, len(block_ids)), are what ``hint_kind`` asks for: next uses (row 0;
        known only offline) or the access history (row 0: seconds since the block's content was
        last accessed, inf if unknown; row 1: that access's category; row 2: how many accesses of
        the content came before). A 1-D sequence is row 0.
        """
        for i, b in enumerate(block_ids):
            self.on_access(b, now, depth0 + i, category)

    def resize(self, num_blocks: int) -> None:  # noqa: B027
        """The pool now has ``num_blocks`` blocks (ids below it); array-backed policies grow."""

    @abstractmethod
    def push(self, block_id: int, now: float) -> None:
        """The block's last user released it: it is now a candidate for eviction."""

    @abstractmethod
    def remove(self, block_id: int) -> None:
        """A cache hit took the block back into use: it is no longer a candidate."""

    @abstractmethod
    def pop(self, now: float) -> int:
        """Remove and return the block to evict; only called when ``len(self) > 0``."""

    @abstractmethod
    def __len__(self) -> int: ...

    def push_many(self, block_ids: list[int], now: float) -> None:
        """``push`` each block in order; policies override this with a bulk operation."""
        for b in block_ids:
            self.push(b, now)

    def remove_many(self, block_ids: list[int]) -> None:
        for b in block_ids:
            self.remove(b)

    def pop_many(self, num: int, now: float) -> list[int]:
        """``pop`` ``num`` victims in eviction order."""
        return [self.pop(now) for _ in range(num)]


EVICTION_POLICIES: Registry[type[EvictionPolicy]] = Registry("eviction policy")
VARIANTS = ("any", "leaf")


def _as_ids(block_ids: Sequence[int]) -> np.ndarray:
    if isinstance(block_ids, np.ndarray):
        return block_ids.astype(np.int64, copy=False)
    return np.fromiter(block_ids, np.int64, len(block_ids))


class ArrayPolicy(EvictionPolicy):
    """A policy whose state is one arena array (see ``_core``) and whose logic is ``_core`` hooks.

    Subclasses set ``kernels = (ops, replay)``: two jitted wrappers that hand the policy's hooks to
    ``_core.run_op`` and ``_core.replay``; ``slot_defaults`` gives the initial word of each of the
    policy's own per-block fields, and ``_region`` its per-category tables.
    """

    kernels: ClassVar[tuple]  # (ops, replay)
    slot_defaults: ClassVar[tuple[int, ...]] = ()
    classes_per_category: ClassVar[int] = 1  # per-category tables the policy keeps per category

    def __init__(self, leaf_only: bool = False, num_categories: int = 1) -> None:
        self.leaf_only = leaf_only
        self.prefix_closed = leaf_only or type(self).prefix_closed
        self._num_slots = 0
        self._num_classes = max(1, num_categories) * self.classes_per_category
        self._a = _core.new_arena(
            0, self._defaults, self._region(self._num_classes), leaf_only, self._num_classes
        )
        self._init_header(self._a)

    # ---- state -------------------------------------------------------------------------------
    @property
    def _defaults(self) -> tuple[int, ...]:
        return _core.GENERIC_DEFAULTS + self.slot_defaults

    def _region(self, num_classes: int) -> np.ndarray:
        """The policy region for this many classes (none by default)."""
        return np.zeros(0, np.int64)

    def _init_header(self, a: np.ndarray) -> None:
        """Write the policy's scalars into header words ``H_PAR``..."""

    def resize(self, num_blocks: int) -> None:
        if num_blocks > self._num_slots:
            self._a = _core.grow_arena(self._a, num_blocks, self._defaults)
            self._num_slots = num_blocks

    def _fit(self, ids: np.ndarray) -> np.ndarray:
        if len(ids) and int(ids.max()) >= self._num_slots:
            self.resize(max(int(ids.max()) + 1, 2 * self._num_slots))
        return ids

    def __len__(self) -> int:
        return int(self._a[_core.H_NEVICT])

    # ---- operations (each one call into the shared kernels) ----------------------------------
    def push(self, block_id: int, now: float) -> None:
        self.push_many([block_id], now)

    def push_many(self, block_ids: Sequence[int], now: float) -> None:
        self._op(_core.OP_PUSH, self._fit(_as_ids(block_ids)), 0, now)

    def remove(self, block_id: int) -> None:
        self.remove_many([block_id])

    def remove_many(self, block_ids: Sequence[int]) -> None:
        self._op(_core.OP_REMOVE, self._fit(_as_ids(block_ids)), 0, 0.0)

    def pop(self, now: float) -> int:
        return self.pop_many(1, now)[0]

    def pop_many(self, num: int, now: float) -> list[int]:
        if num > len(self):
            raise RuntimeError(f"pop_many({num}) with only {len(self)} evictable blocks")
        return self._op(_core.OP_POP, _NO_IDS, num, now).tolist()

    def on_access(self, block_id: int, now: float, depth: int, category: int) -> None:
        self.on_access_many([block_id], now, depth, category)

    def on_access_many(
        self,
        block_ids: Sequence[int],
        now: float,
        depth0: int,
        category: int,
        parent: int = -1,
        hints: np.ndarray | Sequence[float] | None = None,
    ) -> None:
        ids = self._fit(_as_ids(block_ids))
        h = _EMPTY_HINTS if hints is None else np.asarray(hints, np.float64)
        if h.ndim == 1:
            h = np.stack([h, np.full(len(h), -1.0), np.zeros(len(h))])
        if (category + 1) * self.classes_per_category > self._num_classes:
            self.ensure_categories(category + 1)
        self._op(_core.OP_ACCESS, ids, 0, now, depth0, category, parent, h)

    def _op(
        self,
        op: int,
        ids: np.ndarray,
        num: int,
        now: float,
        depth0: int = 0,
        category: int = 0,
        parent: int = -1,
        hints: np.ndarray = _EMPTY_HINTS,
    ) -> np.ndarray:
        return self.kernels[0](op, self._a, ids, num, float(now), depth0, category, parent, hints)

    def ensure_categories(self, num_categories: int) -> None:
        """Category ids below ``num_categories`` may be passed to ``on_access``."""
        cpc = self.classes_per_category
        if num_categories * cpc <= self._num_classes:
            return
        n = cpc * max(num_categories, 2 * self._num_classes // cpc)
        self._a = self._widen_region(self._a, self._num_classes, n)
        self._a[_core.H_NCAT] = n
        self._num_classes = n

    def _widen_region(self, a: np.ndarray, old: int, new: int) -> np.ndarray:
        """Copy of arena ``a`` with per-class tables for ``new`` classes (none by default)."""
        return a

    def replay_kernel(self):
        """The jitted offline replay bound to this policy's hooks (``kvcache.sim`` calls it)."""
        return self.kernels[1]

    @property
    def arena(self) -> np.ndarray:
        """The state array, for the replay and for tests."""
        return self._a


# ---- LRU: vLLM v1's free-block queue -------------------------------------------------------------
_NXT, _PRV = _core.NUM_GENERIC, _core.NUM_GENERIC + 1


@nb.njit(cache=True)
def _nop_push(a, s, now):
    pass


@nb.njit(cache=True)
def _nop_access(a, s, now, depth, cat, h0, h1, h2, fill):
    pass


@nb.njit(cache=True)
def _nop_evict(a, s):
    pass


@nb.njit(cache=True)
def _lru_insert(a, s):
    _core.list_insert(a, _NXT, _PRV, _core.H_HEAD, _core.H_TAIL, s)


@nb.njit(cache=True)
def _lru_delete(a, s):
    _core.list_unlink(a, _NXT, _PRV, _core.H_HEAD, _core.H_TAIL, s)


@nb.njit(cache=True)
def _lru_peek(a, now):
    return a[_core.H_HEAD]


@nb.njit(cache=True)
def _lru_ops(op, a, ids, num, now, depth0, cat, parent0, hints):
    return _core.run_op(_nop_push, _nop_access, _lru_insert, _lru_delete, _lru_peek, _nop_evict,
                        op, a, ids, num, now, depth0, cat, parent0, hints)  # fmt: skip


@nb.njit(cache=True)
def _lru_replay(a, req_start, blocks, times, cats, hints, num_dense, capacity, log):
    return _core.replay(_nop_push, _nop_access, _lru_insert, _lru_delete, _lru_peek, _nop_evict,
                        False, a, req_start, blocks, times, cats, hints, num_dense, capacity,
                        log)  # fmt: skip


@EVICTION_POLICIES.register("lru")
class LRUPolicy(ArrayPolicy):
    """vLLM v1's free-block queue: evict the block released longest ago.

    The pool pushes a finished request's blocks tail first, so among blocks released together the
    deepest (least shareable) go first, as vLLM's reversed free order does.
    """

    name = "lru"
    tracks_access = False
    # Each request releases its blocks tail first, so a parent copy always sits behind its child in
    # the queue (or is in use): children go first, and the leaf-only variant is the same policy.
    prefix_closed = True
    kernels = (_lru_ops, _lru_replay)
    slot_defaults = (-1, -1)


def parse_policy_spec(spec: str) -> tuple[str, bool]:
    """``NAME`` or ``NAME:VARIANT`` -> (registry name, leaf_only)."""
    name, _, variant = spec.partition(":")
    variant = variant or "any"
    if variant not in VARIANTS:
        raise ConfigError(
            f"eviction policy '{spec}': unknown variant '{variant}'; choose one of: "
            f"{', '.join(VARIANTS)}"
        )
    EVICTION_POLICIES.get(name)
    return name, variant == "leaf"


def make_eviction_policy(spec: str, **kwargs: object) -> EvictionPolicy:
    """Build a policy from ``NAME[:any|:leaf]`` plus keyword settings of its class."""
    name, leaf_only = parse_policy_spec(spec)
    cls = EVICTION_POLICIES.get(name)
    if issubclass(cls, ArrayPolicy):
        return cls(leaf_only=leaf_only, **kwargs)  # type: ignore[call-arg]
    if leaf_only:
        raise ConfigError(f"eviction policy '{name}' has no leaf-only variant")
    return cls(**kwargs)  # type: ignore[call-arg]
