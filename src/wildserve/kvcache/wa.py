"""Workload-aware (WA) eviction: evict the block least likely to be reused within ``life_s`` seconds.

Per request category ``c`` the next reuse of a block last used by a ``c`` request is modelled as: it
happens with probability ``p_c``, after an exponential time with rate ``lam_c``. Given ``a`` seconds
since the last use, the chance of a reuse within the next ``L = life_s`` seconds is

    P_c(a) = p e^{-lam a} (1 - e^{-lam L}) / (1 - p + p e^{-lam a})

which never increases with ``a``. So each category keeps its evictable blocks in one list in order of
last use, only the list heads can be the minimum, and a pop costs O(categories). Ties go to the
deeper block (tail first), then to the older release.

The model is fitted from the block access history in a sliding window of ``window_s`` seconds,
split into ``refit_s``-second buckets: ``p_c`` = reuses / accesses of category ``c`` and ``lam_c`` =
reuses / summed reuse time (the exponential MLE), where a reuse of a block is credited to the
category of its previous access. The fit is refreshed once per bucket (the background refit). The
history comes as hints (``hint_kind = "history"``): the block pool and the offline replay remember
when each block hash was last accessed and by which category, for ``window_s``, so a block that was
evicted and comes back still counts as a reuse. Without hints, WA learns only from what the cache
itself sees (hits on blocks still cached), which under-counts reuses of everything it evicts: its
own evictions then look right, and it evicts those categories even more (see the report).

A category with fewer than ``min_obs`` accesses in the window uses the model pooled over all
categories; with too little pooled data, every block gets the same priority (``p = 1``), so the
order falls back to tail first, then least recently released. A block's category and last use are
updated on every access; its release also counts as a use. All times are seconds.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from wildserve.errors import ConfigError
from wildserve.kvcache import _core
from wildserve.kvcache._core import at, getf, putf
from wildserve.kvcache.policy import EVICTION_POLICIES, ArrayPolicy, _nop_evict

# per-block fields after the generic ones: list links, category, last use (float)
_NXT, _PRV, _CAT, _LAST = range(_core.NUM_GENERIC, _core.NUM_GENERIC + 4)
# header scalars: life, refit period, min_obs, end of the current bucket (floats); bucket, buckets
_LIFE, _REFIT, _MIN_OBS, _BUCKET_END, _BUCKET, _NUM_BUCKETS = range(_core.H_PAR, _core.H_PAR + 6)
# policy region, C categories and K buckets: head[C] tail[C] p[C] lam[C] win[C,3] bucket[K,C,3]
# (window and bucket sums per category: accesses, reuses, summed reuse time; floats)


@nb.njit(cache=True, inline="always")
def _head(a, c):
    return a[_core.H_EXTRA] + c


@nb.njit(cache=True, inline="always")
def _tail(a, c):
    return a[_core.H_EXTRA] + a[_core.H_NCAT] + c


@nb.njit(cache=True, inline="always")
def _p(a, c):
    return a[_core.H_EXTRA] + 2 * a[_core.H_NCAT] + c


@nb.njit(cache=True, inline="always")
def _lam(a, c):
    return a[_core.H_EXTRA] + 3 * a[_core.H_NCAT] + c


@nb.njit(cache=True, inline="always")
def _win(a, c, j):
    return a[_core.H_EXTRA] + 4 * a[_core.H_NCAT] + 3 * c + j


@nb.njit(cache=True, inline="always")
def _bkt(a, b, c, j):
    ncat = a[_core.H_NCAT]
    return a[_core.H_EXTRA] + 7 * ncat + 3 * (b * ncat + c) + j


def region_size(num_categories: int, num_buckets: int) -> int:
    return 7 * num_categories + 3 * num_buckets * num_categories


@nb.njit(cache=True)
def reuse_probability(p, lam, age, life):
    """P(reused within ``life`` | not reused for ``age``) under the category's exponential model."""
    if p <= 0.0:
        return 0.0
    horizon = 1.0 - math.exp(-lam * life)
    e = math.exp(-lam * age)
    den = 1.0 - p + p * e
    if den <= 0.0:
        return horizon
    return p * e * horizon / den


@nb.njit(cache=True)
def _refit(a):
    ncat = a[_core.H_NCAT]
    min_obs = getf(a, _MIN_OBS)
    life = getf(a, _LIFE)
    tot_a = tot_r = tot_s = 0.0
    for c in range(ncat):
        tot_a += getf(a, _win(a, c, 0))
        tot_r += getf(a, _win(a, c, 1))
        tot_s += getf(a, _win(a, c, 2))
    if tot_a >= min_obs and tot_a > 0:
        p0 = min(1.0, tot_r / tot_a)
        lam0 = tot_r / max(tot_s, 1e-9) if tot_r > 0 else 1.0 / life
    else:
        p0 = 1.0
        lam0 = 1.0 / life
    for c in range(ncat):
        acc, r, s = getf(a, _win(a, c, 0)), getf(a, _win(a, c, 1)), getf(a, _win(a, c, 2))
        if acc >= min_obs and acc > 0:
            putf(a, _p(a, c), min(1.0, r / acc))
            putf(a, _lam(a, c), r / max(s, 1e-9) if r > 0 else lam0)
        else:
            putf(a, _p(a, c), p0)
            putf(a, _lam(a, c), lam0)


@nb.njit(cache=True)
def _advance(a, now):
    """Close buckets that ended by ``now``: refit on the window, then drop the oldest bucket."""
    k = a[_NUM_BUCKETS]
    ncat = a[_core.H_NCAT]
    refit = getf(a, _REFIT)
    if getf(a, _BUCKET_END) == -np.inf:  # the first event opens the first bucket
        putf(a, _BUCKET_END, now + refit)
        return
    steps = 0
    while now >= getf(a, _BUCKET_END):
        _refit(a)
        b = (a[_BUCKET] + 1) % k
        a[_BUCKET] = b
        for c in range(ncat):
            for j in range(3):
                w = _win(a, c, j)
                i = _bkt(a, b, c, j)
                putf(a, w, getf(a, w) - getf(a, i))
                a[i] = 0  # the bits of 0.0
        end = getf(a, _BUCKET_END) + refit
        steps += 1
        if steps > k and now >= end:  # an idle gap longer than the window
            end += math.floor((now - end) / refit) * refit
        putf(a, _BUCKET_END, end)


@nb.njit(cache=True, inline="always")
def _add(a, i, x):
    putf(a, i, getf(a, i) + x)


@nb.njit(cache=True)
def _on_push(a, s, now):
    putf(a, at(a, _LAST, s), now)


@nb.njit(cache=True)
def _record(a, s, now, cls, prev_cls, r):
    """Block ``s`` accessed as class ``cls``; if ``prev_cls`` >= 0, a reuse ``r`` seconds after an
    access of class ``prev_cls`` (credited to that class)."""
    if now >= getf(a, _BUCKET_END):
        _advance(a, now)
    b = a[_BUCKET]
    if 0 <= prev_cls < a[_core.H_NCAT]:
        _add(a, _bkt(a, b, prev_cls, 1), 1.0)
        _add(a, _bkt(a, b, prev_cls, 2), r)
        _add(a, _win(a, prev_cls, 1), 1.0)
        _add(a, _win(a, prev_cls, 2), r)
    _add(a, _bkt(a, b, cls, 0), 1.0)
    _add(a, _win(a, cls, 0), 1.0)
    a[at(a, _CAT, s)] = cls
    putf(a, at(a, _LAST, s), now)


@nb.njit(cache=True)
def _on_access(a, s, now, depth, cat, h0, h1, h2, fill):
    if math.isnan(h0):  # no access history: learn from what the cache itself sees
        if fill:
            _record(a, s, now, cat, -1, 0.0)
        else:
            _record(a, s, now, cat, a[at(a, _CAT, s)], now - getf(a, at(a, _LAST, s)))
    elif h0 < math.inf:  # the history knows the content's previous access
        _record(a, s, now, cat, int(h1), h0)
    else:
        _record(a, s, now, cat, -1, 0.0)


@nb.njit(cache=True)
def _insert(a, s):
    c = a[at(a, _CAT, s)]
    _core.list_insert(a, _NXT, _PRV, _head(a, c), _tail(a, c), s)


@nb.njit(cache=True)
def _delete(a, s):
    c = a[at(a, _CAT, s)]
    _core.list_unlink(a, _NXT, _PRV, _head(a, c), _tail(a, c), s)


@nb.njit(cache=True)
def _peek(a, now):
    if now >= getf(a, _BUCKET_END):
        _advance(a, now)
    life = getf(a, _LIFE)
    best = -1
    best_pr = 0.0
    best_depth = 0
    best_seq = 0
    for c in range(a[_core.H_NCAT]):
        h = a[_head(a, c)]
        if h < 0:
            continue
        age = now - getf(a, at(a, _LAST, h))
        pr = reuse_probability(getf(a, _p(a, c)), getf(a, _lam(a, c)), age, life)
        depth = a[at(a, _core.F_DEPTH, h)]
        seq = a[at(a, _core.F_SEQ, h)]
        if (
            best < 0
            or pr < best_pr
            or (pr == best_pr and (depth > best_depth or (depth == best_depth and seq < best_seq)))
        ):
            best, best_pr, best_depth, best_seq = h, pr, depth, seq
    return best


@nb.njit(cache=True)
def _wa_ops(op, a, ids, num, now, depth0, cat, parent0, hints):
    return _core.run_op(_on_push, _on_access, _insert, _delete, _peek, _nop_evict,
                        op, a, ids, num, now, depth0, cat, parent0, hints)  # fmt: skip


@nb.njit(cache=True)
def _wa_replay(a, req_start, blocks, times, cats, hints, num_dense, capacity, log):
    return _core.replay(_on_push, _on_access, _insert, _delete, _peek, _nop_evict, True,
                        a, req_start, blocks, times, cats, hints, num_dense, capacity, log)  # fmt: skip


@EVICTION_POLICIES.register("wa")
class WAPolicy(ArrayPolicy):
    """Workload-aware eviction (see the module docstring for the model and its fit)."""

    name = "wa"
    kernels = (_wa_ops, _wa_replay)
    hint_kind = "history"
    slot_defaults = (-1, -1, 0, 0)

    def __init__(
        self,
        leaf_only: bool = False,
        life_s: float = 60.0,
        window_s: float = 1800.0,
        refit_s: float = 60.0,
        min_obs: int = 32,
        num_categories: int = 1,
    ) -> None:
        if not (life_s > 0 and refit_s > 0 and window_s >= refit_s):
            raise ConfigError(
                f"wa: need life_s > 0, refit_s > 0 and window_s >= refit_s "
                f"(got life_s={life_s}, window_s={window_s}, refit_s={refit_s})"
            )
        if min_obs < 1:
            raise ConfigError(f"wa: min_obs must be >= 1, got {min_obs}")
        self.life_s, self.window_s, self.refit_s, self.min_obs = life_s, window_s, refit_s, min_obs
        self.history_s = window_s
        self._num_buckets = max(1, math.ceil(window_s / refit_s))
        super().__init__(leaf_only, num_categories)

    def _region(self, num_categories: int) -> np.ndarray:
        c = num_categories
        r = np.zeros(region_size(c, self._num_buckets), np.int64)
        r[: 2 * c] = -1  # empty lists
        r[2 * c : 3 * c] = _core.float_bits(1.0)  # p: until the first fit, every block ties
        r[3 * c : 4 * c] = _core.float_bits(1.0 / self.life_s)
        return r

    def _init_header(self, a: np.ndarray) -> None:
        a[_LIFE] = _core.float_bits(self.life_s)
        a[_REFIT] = _core.float_bits(self.refit_s)
        a[_MIN_OBS] = _core.float_bits(float(self.min_obs))
        a[_BUCKET_END] = _core.float_bits(-np.inf)  # the first access opens the first bucket
        a[_BUCKET] = 0
        a[_NUM_BUCKETS] = self._num_buckets

    def _widen_region(self, a: np.ndarray, old: int, new: int) -> np.ndarray:
        k = self._num_buckets
        src = a[int(a[_core.H_EXTRA]) :]
        dst = self._region(new)
        for j in range(4):  # head, tail, p, lam
            dst[j * new : j * new + old] = src[j * old : (j + 1) * old]
        dst[4 * new : 4 * new + 3 * old] = src[4 * old : 7 * old]
        b_src = src[7 * old :].reshape(k, old, 3)
        dst[7 * new :].reshape(k, new, 3)[:, :old] = b_src
        return _core.grow_arena(a, self._num_slots, self._defaults, dst)

    def model(self) -> dict[str, np.ndarray]:
        """The fitted (p, lam) per category as of the last refit."""
        a = self._a
        c = self._num_classes
        base = int(a[_core.H_EXTRA])
        words = a[base + 2 * c : base + 4 * c].view(np.float64)
        return {"p": words[:c].copy(), "lam": words[c:].copy()}
