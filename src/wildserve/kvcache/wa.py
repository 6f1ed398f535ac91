"""Workload-aware (WA) eviction, our form: evict the block least likely to be reused within ``life_s``.

Per request category ``c`` the next reuse of a block last used by a ``c`` request happens with
probability ``p_c``, after an exponential time with rate ``lam_c`` (fitted online, see
``reuse_fit``). WA's key is the *conditional* probability of a reuse within the next ``L = life_s``
seconds given that the block has already been idle for ``a`` seconds:

    P_c(a) = p e^{-lam a} (1 - e^{-lam L}) / (1 - p + p e^{-lam a})

(Bayes: the block is in the "will be reused" branch with probability p e^{-lam a} / (1 - p +
p e^{-lam a}), and then the reuse falls in the next L seconds with probability 1 - e^{-lam L}).
It never increases with ``a``. The paper's score is the *unconditional* one, ``p_c (F_c(a + T) -
F_c(a))``; it is the policy ``wa-paper`` (``wa_paper.py``). The two differ in how fast an idle
block of a frequently reused category loses its priority: the conditional form discounts ``p`` as
evidence of abandonment accumulates, the unconditional one does not.

WA refits its model once per ``refit_s`` on a sliding ``window_s`` window of the access history.
Without history hints WA learns only from what the cache itself sees, which under-counts reuses of
everything it evicts: its own evictions then look right, and it evicts those categories even more
(see the report).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from wildserve.errors import ConfigError
from wildserve.kvcache._core import float_bits, getf
from wildserve.kvcache.policy import EVICTION_POLICIES
from wildserve.kvcache.reuse_fit import H_FIT, WindowedFitPolicy, fitted

_LIFE = H_FIT  # life_s (float)


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
def wa_score(a, c, age):
    p, lam = fitted(a, c)
    return reuse_probability(p, lam, age, getf(a, _LIFE))


@EVICTION_POLICIES.register("wa")
class WAPolicy(WindowedFitPolicy):
    """Workload-aware eviction (see the module docstring for the model and its fit)."""

    score = wa_score

    def __init__(
        self,
        leaf_only: bool = False,
        life_s: float = 60.0,
        window_s: float = 1800.0,
        refit_s: float = 60.0,
        min_obs: int = 32,
        num_categories: int = 1,
    ) -> None:
        if not life_s > 0:
            raise ConfigError(f"wa: need life_s > 0 (got life_s={life_s})")
        self.life_s = life_s
        super().__init__(leaf_only, num_categories, window_s=window_s, refit_s=refit_s,
                         min_obs=min_obs, initial_rate=1.0 / life_s)  # fmt: skip

    def _init_header(self, a: np.ndarray) -> None:
        super()._init_header(a)
        a[_LIFE] = float_bits(self.life_s)
