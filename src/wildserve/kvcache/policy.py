"""The eviction-policy interface over evictable cached blocks, the array-backed base and vLLM's LRU.

A policy only ever sees blocks that hold a reusable prefix and have no running request using them
(reference count 0). The block pool tells it when a block becomes evictable (``push``), when a cache
hit takes it back (``remove``) and asks it for a victim (``pop``); ``on_access`` reports every hit or
fill so frequency- or workload-aware policies can learn. Time is passed in, never read.

Every concrete policy is an ``ArrayPolicy``: its state lives in one numpy arena and its decisions in
six jitted hooks (``Hooks``) that ``_core``'s drivers call, for the pool's per-operation API and for
the offline replay (``kvcache.replay``) alike; the two kernels that bind them are generated per class
(``_codegen``). A spec such as ``"wa:leaf@life_s=30"`` picks the structural variant, ``any`` (default,
vLLM: any evictable block may go) or ``leaf`` (SGLang: only leaves of the prefix tree may go, so the
cache stays prefix-closed), and keyword settings of the policy's class.
"""

from __future__ import annotations

import ast
import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from wildserve.errors import ConfigError
from wildserve.kvcache import _codegen, _core
from wildserve.kvcache._core import NO_HINTS, AccessHints
from wildserve.kvcache.hooks import (
    list_delete,
    list_insert,
    list_peek,
    nop_access,
    nop_evict,
    nop_push,
)
from wildserve.registry import Registry

_NO_IDS = np.zeros(0, np.int64)


class Hooks(NamedTuple):
    """The six jitted hooks of a policy (signatures in ``_core``'s docstring)."""

    on_push: Any
    on_access: Any
    insert: Any
    delete: Any
    peek: Any
    on_evict: Any


@dataclass(frozen=True)
class Table:
    """A per-class table of the arena: ``width`` words per class, each starting as ``fill``."""

    width: int
    fill: int = 0


class EvictionPolicy(ABC):
    """Chooses which evictable cached block to drop when the pool needs a free block."""

    name: ClassVar[str]
    tracks_access: ClassVar[bool] = True  # False: the pool may skip on_access calls (a hot path)
    # True when a cached block can never outlive every copy of its parent (prefix lookups may then
    # binary-search instead of walking)
    prefix_closed: bool = False
    offline_only: ClassVar[bool] = False  # needs the future (next-use hints): not for a live engine
    # which ``AccessHints`` the caller should fill: None, "next_use" or "history" (age_s,
    # prev_category, prior_accesses)
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
        hints: AccessHints | None = None,
    ) -> None:
        """Consecutive blocks of one request (depths ``depth0``..); ``parent`` precedes the first.

        ``hints`` carry, per block, what ``hint_kind`` asks for (see ``AccessHints``).
        """
        self._access_many(block_ids, now, depth0, category, parent, hints)

    def _access_many(self, block_ids, now, depth0, category, parent, hints) -> None:
        """What ``on_access_many`` does (its arguments); default: ``on_access`` per block."""
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
    """A policy whose state is one arena array (see ``_core``) and whose logic is six jitted hooks.

    A subclass gives its hooks by overriding ``make_hooks`` (or inherits a base that builds them from
    a key function, as ``KeyedPolicy`` and ``AgeKeyedPolicy`` do); its two kernels are generated when
    the class is defined. ``block_fields`` are the initial words of the policy's own per-block fields
    (numbered from ``_core.NUM_GENERIC`` on), ``tables()`` its per-class tables and ``_init_header``
    writes its scalars into header words ``_core.H_PAR``...
    """

    kernels: ClassVar[tuple[Any, Any]]  # (ops, replay), generated
    block_fields: ClassVar[tuple[int, ...]] = ()
    classes_per_category: ClassVar[int] = 1  # classes the policy keeps per request category

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hooks = cls.make_hooks()
        if hooks is None:  # an abstract base: no hooks yet
            return
        parent = next((b for b in cls.__mro__[1:] if "kernels" in vars(b)), None)
        if (
            parent is not None
            and vars(parent).get("_hooks") == hooks
            and (parent.tracks_access == cls.tracks_access)
        ):
            return  # same numba code as the parent (a Python-level subclass): share its kernels
        cls._hooks = hooks
        cls.kernels = _codegen.make_kernels(cls, hooks, cls.tracks_access)

    @classmethod
    def make_hooks(cls) -> Hooks | None:
        """The class's six hooks, or None while the class is abstract."""
        return None

    def __init__(self, leaf_only: bool = False, num_categories: int = 1) -> None:
        if not hasattr(type(self), "kernels"):
            raise TypeError(f"{type(self).__name__} is abstract: it has no hooks")
        self.leaf_only = leaf_only
        self.prefix_closed = leaf_only or type(self).prefix_closed
        self._num_slots = 0
        self._num_classes = max(1, num_categories) * self.classes_per_category
        self._a = _core.new_arena(0, self._defaults, self._table_spec(), leaf_only,
                                  self._num_classes)  # fmt: skip
        self._init_header(self._a)

    # ---- state -------------------------------------------------------------------------------
    @property
    def _defaults(self) -> tuple[int, ...]:
        return _core.GENERIC_DEFAULTS + self.block_fields

    def tables(self) -> tuple[Table, ...]:
        """The policy's per-class tables, in the order its hooks number them (none by default)."""
        return ()

    def _table_spec(self) -> list[tuple[int, int]]:
        return [(t.width, t.fill) for t in self.tables()]

    def _init_header(self, a: np.ndarray) -> None:
        """Write the policy's scalars into header words ``H_PAR``..."""

    def resize(self, num_blocks: int) -> None:
        if num_blocks > self._num_slots:
            self._a = _core.grow_arena(self._a, num_blocks, self._defaults, self._table_spec())
            self._num_slots = num_blocks

    def _fit(self, ids: np.ndarray) -> np.ndarray:
        if len(ids) and int(ids.max()) >= self._num_slots:
            self.resize(max(int(ids.max()) + 1, 2 * self._num_slots))
        return ids

    def __len__(self) -> int:
        return int(self._a[_core.H_NEVICT])

    # ---- operations (each one call into the generated kernel) ----------------------------------
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

    def _access_many(self, block_ids, now, depth0, category, parent, hints) -> None:
        ids = self._fit(_as_ids(block_ids))
        if (category + 1) * self.classes_per_category > self._num_classes:
            self.ensure_categories(category + 1)
        h = NO_HINTS if hints is None else hints
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
        hints: AccessHints = NO_HINTS,
    ) -> np.ndarray:
        return self.kernels[0](op, self._a, ids, num, float(now), depth0, category, parent, hints)

    def ensure_categories(self, num_categories: int) -> None:
        """Category ids below ``num_categories`` may be passed to ``on_access``."""
        cpc = self.classes_per_category
        if num_categories * cpc <= self._num_classes:
            return
        n = cpc * max(num_categories, 2 * self._num_classes // cpc)
        self._a = _core.grow_arena(self._a, self._num_slots, self._defaults, self._table_spec(), n)
        self._num_classes = n

    def replay_kernel(self) -> Any:
        """The jitted offline replay bound to this policy's hooks (``kvcache.replay`` calls it)."""
        return self.kernels[1]

    @property
    def arena(self) -> np.ndarray:
        """The state array, for the replay and for tests."""
        return self._a


# ---- LRU: vLLM v1's free-block queue -------------------------------------------------------------
@EVICTION_POLICIES.register("lru")
class LRUPolicy(ArrayPolicy):
    """vLLM v1's free-block queue: evict the block released longest ago.

    The pool pushes a finished request's blocks tail first, so among blocks released together the
    deepest (least shareable) go first, as vLLM's reversed free order does.
    """

    tracks_access = False
    # Each request releases its blocks tail first, so a parent copy always sits behind its child in
    # the queue (or is in use): children go first, and the leaf-only variant is the same policy.
    prefix_closed = True
    block_fields = (-1, -1)  # next and previous in the queue (hooks.LIST_NEXT, LIST_PREV)

    @classmethod
    def make_hooks(cls) -> Hooks:
        return Hooks(nop_push, nop_access, list_insert, list_delete, list_peek, nop_evict)


def _literal(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_policy_spec(spec: str) -> tuple[str, bool, dict[str, object]]:
    """``NAME[:VARIANT][@KEY=VALUE...]`` -> (registry name, leaf_only, keyword settings)."""
    head, *settings = spec.split("@")
    name, _, variant = head.partition(":")
    variant = variant or "any"
    if variant not in VARIANTS:
        raise ConfigError(
            f"eviction policy '{spec}': unknown variant '{variant}'; choose one of: "
            f"{', '.join(VARIANTS)}"
        )
    kwargs = parse_settings(f"eviction policy '{spec}'", settings)
    EVICTION_POLICIES.get(name)
    return name, variant == "leaf", kwargs


def parse_settings(
    what: str, items: Sequence[str], allowed: Sequence[str] | None = None
) -> dict[str, object]:
    """``KEY=VALUE`` items (Python literals, else strings) of a spec; keys checked against
    ``allowed`` when given. ``what`` names the spec in errors."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"{what}: setting '{item}' is not KEY=VALUE")
        if allowed is not None and key not in allowed:
            raise ConfigError(
                f"{what} has no setting {key}; its settings are: {', '.join(allowed)}"
            )
        out[key] = _literal(value)
    return out


def make_eviction_policy(spec: str, **kwargs: object) -> EvictionPolicy:
    """Build a policy from ``NAME[:any|:leaf][@KEY=VALUE...]``; ``kwargs`` override the spec's."""
    name, leaf_only, settings = parse_policy_spec(spec)
    cls = EVICTION_POLICIES.get(name)
    settings.update(kwargs)
    accepted = [p for p in inspect.signature(cls).parameters if p != "leaf_only"]
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise ConfigError(
            f"eviction policy '{spec}' has no setting {', '.join(unknown)}; "
            f"its settings are: {', '.join(accepted) or '(none)'}"
        )
    if issubclass(cls, ArrayPolicy):
        return cls(leaf_only=leaf_only, **settings)  # type: ignore[call-arg]
    if leaf_only:
        raise ConfigError(f"eviction policy '{name}' has no leaf-only variant")
    return cls(**settings)  # type: ignore[call-arg]
