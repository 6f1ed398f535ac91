"""Policies whose key is a score of the block's class and idle time (``AgeKeyedPolicy``): WA's kind.

A block's class is what the policy's ``observe`` hook says when the block is accessed (WA: the
request's category). Its key at eviction time is ``score(arena, class, age)``, where ``age`` is the
time since the block's last use, and the smallest key is evicted first. The score must never
increase with age within a class; then each class keeps its evictable blocks in one list in order
of last use, only the list heads can be the minimum, and a pop costs O(classes). Ties go to the
deeper block (tail first), then to the older release.

Each class head's score is kept between evictions at the same moment: a request that needs k
victims scores every class once and then only the class whose head left, instead of k times every
class (the scores are the hot path of the replay: two ``exp`` per class per eviction). A kept score
is dropped when its class's list changes (insert, delete), on any access (``observe`` may change
what ``score`` reads), when ``now`` changes, and when ``invalidate_scores`` is called: a ``refresh``
or ``observe`` that changes the model must call it (``reuse_fit``'s refit does). The kept score is
the same float the call would return, so decisions do not change.

A subclass gives, all jitted:
  score(a, c, age) -> float                     the key of a class-``c`` block idle for ``age`` s
  observe(a, s, now, depth, cat, hint, fill) -> int   learn from an access; returns s's class
  refresh(a, now)                               optional: bring a fitted model up to ``now``
                                                (called before each eviction's scores)
The base owns the lists, the last-use times and the class of each block; the hooks and kernels are
generated from these three functions. A subclass's own header scalars start at ``H_AGED`` and its
tables at ``NUM_TABLES``; its ``_init_header`` and ``tables`` extend the base's.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numba as nb
import numpy as np

from wildserve.kvcache import _core
from wildserve.kvcache._codegen import specialize
from wildserve.kvcache._core import at, getf, putf, tab
from wildserve.kvcache.hooks import nop_evict
from wildserve.kvcache.policy import ArrayPolicy, Hooks, Table

# per-block fields after the generic ones: list links, class, last use (float)
NXT, PRV, CLS, LAST = range(_core.NUM_GENERIC, _core.NUM_GENERIC + 4)
# per-class tables: first and last block of each class's list; the kept score of the class head
# (float) and the generation it was computed in
HEAD, TAIL, KEPT = 0, 1, 2
NUM_TABLES = 3  # a subclass numbers its own tables from here
# header scalars: the score generation (int; kept scores of other generations are stale) and the
# moment of the last peek (float)
_GEN, _NOW = _core.H_PAR, _core.H_PAR + 1
H_AGED = _core.H_PAR + 2  # a subclass's own scalars start here


@nb.njit(cache=True)
def nop_refresh(a, now):
    pass


@nb.njit(cache=True)
def aged_push(a, s, now):
    putf(a, at(a, LAST, s), now)  # a release counts as a use


@nb.njit(cache=True, inline="always")
def invalidate_scores(a):
    """Drop every kept score (the model that ``score`` reads changed)."""
    a[_GEN] += 1


@nb.njit(cache=True)
def aged_insert(a, s):
    c = a[at(a, CLS, s)]
    _core.list_insert(a, NXT, PRV, tab(a, HEAD, c), tab(a, TAIL, c), s)
    a[tab(a, KEPT, c) + 1] = -1


@nb.njit(cache=True)
def aged_delete(a, s):
    c = a[at(a, CLS, s)]
    _core.list_unlink(a, NXT, PRV, tab(a, HEAD, c), tab(a, TAIL, c), s)
    a[tab(a, KEPT, c) + 1] = -1


def _aged_access(a, s, now, depth, cat, hint, fill):
    """The block's class is what OBSERVE (bound per policy) says; this access is its last use."""
    a[at(a, CLS, s)] = OBSERVE(a, s, now, depth, cat, hint, fill)  # noqa: F821
    putf(a, at(a, LAST, s), now)
    invalidate_scores(a)


def _aged_peek(a, now):
    """The class head with the smallest SCORE (bound per policy); ties: deeper, then older."""
    REFRESH(a, now)  # noqa: F821
    if now != getf(a, _NOW):
        putf(a, _NOW, now)
        invalidate_scores(a)
    gen = a[_GEN]
    best = -1
    best_pr = 0.0
    best_depth = 0
    best_seq = 0
    for c in range(a[_core.H_NCAT]):
        h = a[tab(a, HEAD, c)]
        if h < 0:
            continue
        k = tab(a, KEPT, c)
        if a[k + 1] == gen:
            pr = getf(a, k)
        else:
            pr = SCORE(a, c, now - getf(a, at(a, LAST, h)))  # noqa: F821
            putf(a, k, pr)
            a[k + 1] = gen
        depth = a[at(a, _core.F_DEPTH, h)]
        seq = a[at(a, _core.F_SEQ, h)]
        if (
            best < 0
            or pr < best_pr
            or (pr == best_pr and (depth > best_depth or (depth == best_depth and seq < best_seq)))
        ):
            best, best_pr, best_depth, best_seq = h, pr, depth, seq
    return best


class AgeKeyedPolicy(ArrayPolicy):
    """Evict the class head with the smallest ``score(class, age)`` (see the module docstring)."""

    score: ClassVar[Any]  # jitted (a, c, age) -> float, never increasing in age
    observe: ClassVar[Any]  # jitted (a, s, now, depth, cat, hint, fill) -> class of s
    refresh: ClassVar[Any] = nop_refresh  # jitted (a, now)
    block_fields: ClassVar[tuple[int, ...]] = (-1, -1, 0, 0)  # NXT, PRV, CLS, LAST

    @classmethod
    def make_hooks(cls) -> Hooks | None:
        if "score" not in dir(cls) or "observe" not in dir(cls):
            return None
        access = specialize(_aged_access, cls, "on_access", OBSERVE=cls.observe)
        peek = specialize(_aged_peek, cls, "peek", SCORE=cls.score, REFRESH=cls.refresh)
        return Hooks(aged_push, access, aged_insert, aged_delete, peek, nop_evict)

    def tables(self) -> tuple[Table, ...]:
        return (Table(1, -1), Table(1, -1), Table(2, -1))  # HEAD, TAIL: empty lists; KEPT: none

    def _init_header(self, a: np.ndarray) -> None:
        a[_GEN] = 0
        a[_NOW] = _core.float_bits(np.nan)  # no peek yet
