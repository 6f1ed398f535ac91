"""WA-paper: workload-aware eviction with the paper's *unconditional* score (KV$ in the wild, §6).

Per category ``c`` the time to a block's next reuse is exponential, ``F_c(t) = 1 - e^{-lam_c t}``,
and a block is reused at all with probability ``p_c`` (both fitted as in ``reuse_fit``: ``p_c`` =
reuses / accesses, ``lam_c`` = reuses / summed reuse time). A block of category ``c`` idle for ``a``
seconds scores the probability that it is reused in the next ``T = horizon_s`` seconds, *not*
conditioned on its having survived ``a`` seconds unused:

    S_c(a) = p_c * (F_c(a + T) - F_c(a)) = p_c * e^{-lam_c a} * (1 - e^{-lam_c T})

and the block with the smallest score is evicted first. ``S_c`` never increases with ``a``. Compared
with the project's ``wa`` (``wa.py``: ``P_c(a) = p e^{-lam a} (1 - e^{-lam L}) / (1 - p +
p e^{-lam a})``, the probability conditioned on the idle time, with ``L = life_s = 60 s``), the
unconditional score keeps ``p_c`` as a fixed weight however long the block has been idle, so an old
block of a frequently reused category loses priority only through ``e^{-lam a}``; the conditional
form also discounts ``p`` as the idle time accumulates evidence of abandonment.

Two parts of the paper's fit are kept: reuses closer than ``min_gap_s`` (0.3 s) to the previous
access are dropped from the fit (concurrent requests racing on one prefix, not a reuse), and the
model is fitted once on a warm-up window (``window_s``, the first hour by default) and then frozen;
``refit_s > 0`` instead refits every ``refit_s`` seconds on a sliding ``window_s`` window (as ``wa``
does). Until the first fit every category has the same model, so blocks leave oldest first (LRU):
on a trace shorter than the warm-up window, WA-paper *is* LRU.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from wildserve.errors import ConfigError
from wildserve.kvcache._core import float_bits, getf
from wildserve.kvcache.policy import EVICTION_POLICIES
from wildserve.kvcache.reuse_fit import H_FIT, WindowedFitPolicy, fitted

_HORIZON = H_FIT  # horizon_s, the paper's T (float)


@nb.njit(cache=True)
def unconditional_reuse_probability(p, lam, age, horizon):
    """``p * (F(age + horizon) - F(age))`` with ``F(t) = 1 - exp(-lam t)``."""
    if p <= 0.0:
        return 0.0
    return p * math.exp(-lam * age) * (1.0 - math.exp(-lam * horizon))


@nb.njit(cache=True)
def wa_paper_score(a, c, age):
    p, lam = fitted(a, c)
    return unconditional_reuse_probability(p, lam, age, getf(a, _HORIZON))


@EVICTION_POLICIES.register("wa-paper")
class WAPaperPolicy(WindowedFitPolicy):
    """The paper's WA: unconditional reuse probability within ``horizon_s`` (module docstring)."""

    name = "wa-paper"
    score = wa_paper_score

    def __init__(
        self,
        leaf_only: bool = False,
        horizon_s: float = 5.0,
        min_gap_s: float = 0.3,
        window_s: float = 3600.0,
        refit_s: float = 0.0,
        min_obs: int = 32,
        num_categories: int = 1,
    ) -> None:
        if not horizon_s > 0:
            raise ConfigError(f"wa-paper: need horizon_s > 0 (got horizon_s={horizon_s})")
        if refit_s < 0:
            raise ConfigError(f"wa-paper: need refit_s >= 0 (0: fit once), got {refit_s}")
        self.horizon_s = horizon_s
        once = refit_s == 0
        super().__init__(leaf_only, num_categories, window_s=window_s,
                         refit_s=window_s if once else refit_s, min_obs=min_obs,
                         initial_rate=1.0 / horizon_s, min_gap_s=min_gap_s, fit_once=once)  # fmt: skip

    def _init_header(self, a: np.ndarray) -> None:
        super()._init_header(a)
        a[_HORIZON] = float_bits(self.horizon_s)

    def score_of(self, category: int, age_s: float) -> float:
        """The current score of a category-``category`` block idle for ``age_s`` seconds."""
        return float(wa_paper_score(self._a, category * self.classes_per_category, age_s))
