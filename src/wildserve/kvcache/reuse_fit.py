"""The per-class exponential reuse model that WA, RWA and WA-paper fit online (``WindowedFitPolicy``).

Per class ``c`` the next reuse of a block last used by a ``c`` access is modelled as: it happens
with probability ``p_c``, after an exponential time with rate ``lam_c``. The fit counts, in a window
of ``window_s`` seconds split into ``refit_s``-second buckets, the accesses of each class and the
reuses credited to the class of the *previous* access, with their reuse times: ``p_c`` = reuses /
accesses and ``lam_c`` = reuses / summed reuse time (the exponential MLE). It is refreshed once per
bucket (the background refit), or, with ``fit_once``, once at the end of the first window and then
frozen (a warm-up fit). Reuses closer than ``min_gap_s`` to the previous access are left out of the
fit altogether (neither an access nor a reuse: the same use, e.g. two requests racing on a prefix).

A class with fewer than ``min_obs`` accesses in the window uses the model pooled over all classes;
with too little pooled data every class gets ``p = 1`` and the initial rate, so every policy built
on this model orders blocks by age alone (tail first, then least recently released).

The history comes as hints (``hint_kind = "history"``): the block pool and the offline replay
remember when each block hash was last accessed and by which category, for ``window_s``, so a block
that was evicted and comes back still counts as a reuse. Without hints the model learns only from
what the cache itself sees (hits on blocks still cached), which under-counts reuses of everything
it evicts. All times are seconds.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from wildserve.errors import ConfigError
from wildserve.kvcache import _core
from wildserve.kvcache._core import at, getf, putf, tab
from wildserve.kvcache.aged import CLS, H_AGED, LAST, NUM_TABLES, AgeKeyedPolicy, invalidate_scores
from wildserve.kvcache.policy import Table

# per-class tables after the lists: p, lam, window sums (accesses, reuses, summed reuse time) and
# the same sums per bucket (3 words per bucket); floats
P, LAM, WIN, BKT = range(NUM_TABLES, NUM_TABLES + 4)
FIT_TABLES = NUM_TABLES + 4  # a subclass numbers its own tables from here
# header scalars (floats unless noted): refit period, min_obs, end of the current bucket, bucket
# (int), buckets (int), minimum reuse gap, fit once (int), frozen (int)
_REFIT, _MIN_OBS, _BUCKET_END, _BUCKET, _NUM_BUCKETS, _MIN_GAP, _ONCE, _FROZEN, _RATE0 = range(
    H_AGED, H_AGED + 9
)
H_FIT = H_AGED + 9  # a subclass's own scalars start here


@nb.njit(cache=True)
def _refit(a):
    invalidate_scores(a)  # the scores read the fit
    ncat = a[_core.H_NCAT]
    min_obs = getf(a, _MIN_OBS)
    rate0 = getf(a, _RATE0)
    tot_a = tot_r = tot_s = 0.0
    for c in range(ncat):
        w = tab(a, WIN, c)
        tot_a += getf(a, w)
        tot_r += getf(a, w + 1)
        tot_s += getf(a, w + 2)
    if tot_a >= min_obs and tot_a > 0:
        p0 = min(1.0, tot_r / tot_a)
        lam0 = tot_r / max(tot_s, 1e-9) if tot_r > 0 else rate0
    else:
        p0 = 1.0
        lam0 = rate0
    for c in range(ncat):
        w = tab(a, WIN, c)
        acc, r, s = getf(a, w), getf(a, w + 1), getf(a, w + 2)
        if acc >= min_obs and acc > 0:
            putf(a, tab(a, P, c), min(1.0, r / acc))
            putf(a, tab(a, LAM, c), r / max(s, 1e-9) if r > 0 else lam0)
        else:
            putf(a, tab(a, P, c), p0)
            putf(a, tab(a, LAM, c), lam0)


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
        if a[_ONCE] != 0:  # the warm-up fit is done: keep it
            a[_FROZEN] = 1
            return
        b = (a[_BUCKET] + 1) % k
        a[_BUCKET] = b
        for c in range(ncat):
            w = tab(a, WIN, c)
            i = tab(a, BKT, c) + 3 * b
            for j in range(3):
                putf(a, w + j, getf(a, w + j) - getf(a, i + j))
                a[i + j] = 0  # the bits of 0.0
        end = getf(a, _BUCKET_END) + refit
        steps += 1
        if steps > k and now >= end:  # an idle gap longer than the window
            end += math.floor((now - end) / refit) * refit
        putf(a, _BUCKET_END, end)


@nb.njit(cache=True)
def refresh(a, now):
    """Refit if a bucket ended by ``now`` (the ``refresh`` hook of policies on this model)."""
    if a[_FROZEN] == 0 and now >= getf(a, _BUCKET_END):
        _advance(a, now)


@nb.njit(cache=True, inline="always")
def _add(a, i, x):
    putf(a, i, getf(a, i) + x)


@nb.njit(cache=True)
def record(a, now, cls, prev_cls, r):
    """An access of class ``cls``; if ``prev_cls`` >= 0, a reuse ``r`` seconds after an access of
    class ``prev_cls`` (credited to that class)."""
    if a[_FROZEN] != 0:
        return
    if now >= getf(a, _BUCKET_END):
        _advance(a, now)
        if a[_FROZEN] != 0:
            return
    if prev_cls >= 0 and r < getf(a, _MIN_GAP):
        return  # the same use as the previous access: not evidence of a reuse
    b = 3 * a[_BUCKET]
    if 0 <= prev_cls < a[_core.H_NCAT]:
        i = tab(a, BKT, prev_cls) + b
        w = tab(a, WIN, prev_cls)
        _add(a, i + 1, 1.0)
        _add(a, i + 2, r)
        _add(a, w + 1, 1.0)
        _add(a, w + 2, r)
    _add(a, tab(a, BKT, cls) + b, 1.0)
    _add(a, tab(a, WIN, cls), 1.0)


@nb.njit(cache=True)
def observe_category(a, s, now, depth, cat, hint, fill):
    """Record an access of class ``cat`` (the request category) and its reuse, if any; returns
    ``cat``. The reuse comes from the history hints, or without them from the cache's own view."""
    if math.isnan(hint.age_s):  # no access history: learn from what the cache itself sees
        if fill:
            record(a, now, cat, -1, 0.0)
        else:
            record(a, now, cat, a[at(a, CLS, s)], now - getf(a, at(a, LAST, s)))
    elif hint.age_s < math.inf:  # the history knows the content's previous access
        record(a, now, cat, hint.prev_category, hint.age_s)
    else:
        record(a, now, cat, -1, 0.0)
    return cat


@nb.njit(cache=True, inline="always")
def fitted(a, c):
    """(p, lam) of class ``c`` as of the last refit."""
    return getf(a, tab(a, P, c)), getf(a, tab(a, LAM, c))


class WindowedFitPolicy(AgeKeyedPolicy):
    """An ``AgeKeyedPolicy`` whose score reads this module's fitted (p, lam) per class."""

    hint_kind = "history"
    observe = observe_category
    refresh = refresh

    def __init__(
        self,
        leaf_only: bool = False,
        num_categories: int = 1,
        *,
        window_s: float,
        refit_s: float,
        min_obs: int,
        initial_rate: float,
        min_gap_s: float = 0.0,
        fit_once: bool = False,
    ) -> None:
        name = type(self).name
        if not (refit_s > 0 and window_s >= refit_s):
            raise ConfigError(
                f"{name}: need refit_s > 0 and window_s >= refit_s "
                f"(got window_s={window_s}, refit_s={refit_s})"
            )
        if min_obs < 1:
            raise ConfigError(f"{name}: min_obs must be >= 1, got {min_obs}")
        if min_gap_s < 0:
            raise ConfigError(f"{name}: the minimum reuse gap must be >= 0, got {min_gap_s}")
        self.window_s, self.refit_s, self.min_obs = window_s, refit_s, min_obs
        self.history_s = window_s
        self._fit_settings = (initial_rate, min_gap_s, fit_once)
        self._num_buckets = 1 if fit_once else max(1, math.ceil(window_s / refit_s))
        super().__init__(leaf_only, num_categories)

    def tables(self) -> tuple[Table, ...]:
        rate0 = self._fit_settings[0]
        return (
            *super().tables(),
            Table(1, _core.float_bits(1.0)),  # P: until the first fit, every block ties
            Table(1, _core.float_bits(rate0)),  # LAM
            Table(3),  # WIN
            Table(3 * self._num_buckets),  # BKT
        )

    def _init_header(self, a: np.ndarray) -> None:
        super()._init_header(a)
        rate0, min_gap_s, fit_once = self._fit_settings
        a[_REFIT] = _core.float_bits(self.window_s if fit_once else self.refit_s)
        a[_MIN_OBS] = _core.float_bits(float(self.min_obs))
        a[_BUCKET_END] = _core.float_bits(-np.inf)  # the first access opens the first bucket
        a[_BUCKET] = 0
        a[_NUM_BUCKETS] = self._num_buckets
        a[_MIN_GAP] = _core.float_bits(min_gap_s)
        a[_ONCE] = int(fit_once)
        a[_FROZEN] = 0
        a[_RATE0] = _core.float_bits(rate0)

    def model(self) -> dict[str, np.ndarray]:
        """The fitted (p, lam) per class as of the last refit."""
        a = self._a
        c = self._num_classes
        rows = [[_core.tab_index(a, t, k) for k in range(c)] for t in (P, LAM)]
        return {
            "p": a[rows[0]].view(np.float64).copy(),
            "lam": a[rows[1]].view(np.float64).copy(),
        }
