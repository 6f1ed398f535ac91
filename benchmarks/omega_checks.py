"""What one OMEGA check costs, and whether checking more often pays.

1. The window work of one check, in a tight numba loop: the old way (a fresh sort of the 100-entry
   window for every masked question asked) against the new one (the sorted window brought up to date
   incrementally once per check, prefix sums, then each masked question in O(1)).
2. OMEGA refitted (its stop levels replayed) with denser and sparser check schedules, on the same
   index and queries: distance computations, model calls, CPU time per query and recall.

    .venv/bin/python benchmarks/omega_checks.py --base glove --n-base 100000 --cache DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
from numba import njit

from wildserve.vsearch import kernel


@njit(cache=True)
def _old_way(rings, nrings, top_d, asks, out):
    tr = np.zeros(kernel.NUM_TR)
    tr[kernel.T_TOPN] = top_d.size
    total = 0.0
    for i in range(rings.shape[0]):
        tr[kernel.T_RING] = nrings[i]
        for a in range(asks):
            kernel.base_features(tr, top_d, rings[i], a + 1, out)  # sorts the window every time
            total += out[8]
    return total


@njit(cache=True)
def _previous_states(rings, prevs, srts, sids):
    """The sorted window each check starts from (what the previous check left), built untimed."""
    tmp = np.zeros(kernel.RING)
    tmpi = np.zeros(kernel.RING)
    for i in range(rings.shape[0]):
        kernel.window_update(rings[i], prevs[i], srts[i], sids[i], 0, tmp, tmpi)


@njit(cache=True)
def _new_way(rings, nrings, prevs, srts, sids, top_d, asks, out):
    tr = np.zeros(kernel.NUM_TR)
    tr[kernel.T_TOPN] = top_d.size
    tmp = np.zeros(kernel.RING)
    tmpi = np.zeros(kernel.RING)
    pre1 = np.zeros(kernel.RING + 1)
    pre2 = np.zeros(kernel.RING + 1)
    total = 0.0
    for i in range(rings.shape[0]):
        tr[kernel.T_RING] = nrings[i]
        n = kernel.window_update(rings[i], nrings[i], srts[i], sids[i], prevs[i], tmp, tmpi)
        kernel.prefix_sums(srts[i], n, pre1, pre2)
        for a in range(asks):
            kernel.window_features(tr, top_d, srts[i], pre1, pre2, n, a + 1, out)
            total += out[8]
    return total


def micro(reps: int = 20000) -> None:
    rng = np.random.default_rng(0)
    top_d = np.sort(rng.random(100)) * 0.1
    out = np.zeros(kernel.NUM_BASE_FEATURES)
    print("window work per check (µs, CPU), 100-entry window, best of 3:")
    print(
        f"{'new since last':>15} {'asks':>5} {'sort per ask':>13} {'incremental':>12} {'ratio':>6}"
    )
    for new in (16, 48, 200):
        for asks in (1, 4, 8):
            rings = rng.random((reps, kernel.RING))
            nrings = np.full(reps, 5000.0)
            prevs = nrings - new
            _old_way(rings[:2], nrings[:2], top_d, asks, out)
            best_old = best_new = np.inf
            for _ in range(3):
                srts, sids = np.zeros((reps, kernel.RING)), np.zeros((reps, kernel.RING))
                _previous_states(rings, prevs, srts, sids)
                _new_way(rings[:2], nrings[:2], prevs[:2], srts[:2].copy(), sids[:2].copy(),
                         top_d, asks, out)  # fmt: skip
                t = time.process_time()
                _old_way(rings, nrings, top_d, asks, out)
                best_old = min(best_old, (time.process_time() - t) / reps * 1e6)
                t = time.process_time()
                _new_way(rings, nrings, prevs, srts, sids, top_d, asks, out)
                best_new = min(best_new, (time.process_time() - t) / reps * 1e6)
            print(f"{new:>15} {asks:>5} {best_old:>13.2f} {best_new:>12.2f} "
                  f"{best_old / best_new:>6.1f}")  # fmt: skip


def schedules(args) -> None:
    from wildserve.vsearch.config import (
        BaselineConfig,
        ExperimentConfig,
        IndexConfig,
        OmegaConfig,
        TrainConfig,
    )
    from wildserve.vsearch.experiment import _context, evaluate_cells, prepare, warm_up
    from wildserve.vsearch.methods import METHODS

    cfg = ExperimentConfig(base=args.base, n_base=args.n_base, n_train=args.n_train, n_val=args.n_val,
                           n_test=args.n_test, ks=(1, 10, 100), k_weights=(1, 1, 1),
                           targets=(0.9, 0.95, 0.99))  # fmt: skip
    tc = TrainConfig()
    prep = prepare(cfg, IndexConfig(metric=args.metric), tc, np.random.default_rng(0), args.cache)
    base = OmegaConfig()
    variants = {
        "default": base,
        "denser (gaps 0.02-0.2)": dataclasses.replace(base, gap_min=0.02, gap_max=0.2),
        "densest (gaps 0.01-0.05, no jump)": dataclasses.replace(
            base, gap_min=0.01, gap_max=0.05, jump_to_statistics=False, min_check_gap=8
        ),
        "sparser (gaps 0.1-1.0)": dataclasses.replace(base, gap_min=0.1, gap_max=1.0),
    }
    warm_up(_context(prep, cfg, tc, base, BaselineConfig()), ("omega",))
    print(f"\n{'schedule':>34} {'K':>4} {'target':>6} {'recall':>7} {'ndis':>7} {'calls':>6} "
          f"{'checks':>6} {'CPU µs':>7}")  # fmt: skip
    for label, oc in variants.items():
        m = METHODS.get("omega")()
        m.fit(_context(prep, cfg, tc, oc, BaselineConfig()))
        for k in cfg.ks:
            for t in cfg.targets:
                (c,) = evaluate_cells(prep, {"omega": m}, k, t, 1)
                res = prep.searcher.search(prep.split.test, k, tc.ef, m.rule(k, t))
                checks = res.pst[:, 3].mean()
                print(f"{label:>34} {k:>4} {t:>6.2f} {c.recall:>7.4f} {c.mean_ndis:>7.0f} "
                      f"{c.model_calls:>6.1f} {checks:>6.1f} {c.cpu_us:>7.0f}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base", default="glove")
    p.add_argument("--metric", default="angular")
    p.add_argument("--n-base", type=int, default=100_000)
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-val", type=int, default=300)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--micro-only", action="store_true")
    args = p.parse_args()
    micro()
    if not args.micro_only:
        schedules(args)


if __name__ == "__main__":
    main()
