"""What one OMEGA check costs, and whether checking more often pays.

1. The window work of one check, in a numba loop over distinct windows: a fresh sort of the
   100-entry window for every masked question asked, against one sort per check (np.sort, or the
   branch-free rank sort OMEGA uses) with prefix sums and each masked question in O(1).
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
def _sort_once(rings, nrings, top_d, asks, out, branch_free):
    """What a check does now: sort the window once (np.sort, or the branch-free rank sort OMEGA
    uses), prefix sums, then each masked question in O(1)."""
    tr = np.zeros(kernel.NUM_TR)
    tr[kernel.T_TOPN] = top_d.size
    srt = np.zeros(kernel.RING)
    pre1 = np.zeros(kernel.RING + 1)
    pre2 = np.zeros(kernel.RING + 1)
    total = 0.0
    for i in range(rings.shape[0]):
        tr[kernel.T_RING] = nrings[i]
        n = kernel.RING
        if branch_free:
            kernel.rank_sort(rings[i], n, srt)
        else:
            srt[:] = np.sort(rings[i])
        kernel.prefix_sums(srt, n, pre1, pre2)
        for a in range(asks):
            kernel.window_features(tr, top_d, srt, pre1, pre2, n, a + 1, out)
            total += out[8]
    return total


def micro(reps: int = 20000) -> None:
    """Each check's window is a different one (as in a search): a loop over one repeated window
    would let the branch predictor learn the sort and understate np.sort about threefold."""
    rng = np.random.default_rng(0)
    top_d = np.sort(rng.random(100)) * 0.1
    out = np.zeros(kernel.NUM_BASE_FEATURES)
    print("window work per check (µs, CPU), 100-entry windows, each different, best of 3:")
    print(f"{'asks':>5} {'np.sort per ask':>16} {'np.sort once':>13} {'rank sort once':>15}")
    for asks in (1, 4, 8):
        rings = rng.random((reps, kernel.RING))
        nrings = np.full(reps, 5000.0)
        _old_way(rings[:2], nrings[:2], top_d, asks, out)
        _sort_once(rings[:2], nrings[:2], top_d, asks, out, False)
        _sort_once(rings[:2], nrings[:2], top_d, asks, out, True)
        best = [np.inf] * 3
        for _ in range(3):
            for j in range(3):
                t = time.process_time()
                if j == 0:
                    _old_way(rings, nrings, top_d, asks, out)
                else:
                    _sort_once(rings, nrings, top_d, asks, out, j == 2)
                best[j] = min(best[j], (time.process_time() - t) / reps * 1e6)
        print(f"{asks:>5} {best[0]:>16.2f} {best[1]:>13.2f} {best[2]:>15.2f}")


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
