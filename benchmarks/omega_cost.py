"""Where a learned method's time goes, per (K, target) cell: the search itself or its checks.

For every method and cell the test queries are searched twice: with the method's rule, and with a rule
that only stops each query at the distance-computation count where the method stopped it (the same
trajectory, no features, no model). Deterministic counts first (distance computations, checks and model
calls per query), then CPU time: per distance computation of the bare trajectory, and the difference,
per check and per model call. A fixed small ef reaching about the same number of computations shows
what the ef=1000 beam itself costs per computation.

    .venv/bin/python benchmarks/omega_cost.py --base glove --n-base 100000 --cache DIR
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from numba import njit

from omega_setup import add_data_options, prepared
from wildserve.vsearch import kernel
from wildserve.vsearch.search import NEVER, StopRule


@njit(cache=True)
def stop_at_budget(tr, top_d, ring, q, cargs, pst):
    """Stop query i once it has made budget[i] distance computations (a replay of a stop)."""
    budget = cargs[0]
    return tr[kernel.T_NDIS] >= budget[int(tr[kernel.T_QI])]


#: the scratch slot where each method counts its checks
CHECKS_SLOT = {"omega": 3, "laet": 1, "darth": 1}


def cpu_us(searcher, queries, k, ef, rule, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t = time.process_time()
        searcher.search(queries, k, ef, rule)
        best = min(best, time.process_time() - t)
    return best / queries.shape[0] * 1e6


def fixed_ef_near(searcher, queries, k, ndis_goal: float) -> tuple[int, float]:
    """The smallest ef whose mean distance computations reach ndis_goal (binary search)."""
    lo, hi = k, 4096
    while lo < hi:
        mid = (lo + hi) // 2
        if searcher.search(queries, k, mid).ndis.mean() >= ndis_goal:
            hi = mid
        else:
            lo = mid + 1
    return lo, float(searcher.search(queries, k, lo).ndis.mean())


def main() -> None:
    from wildserve.vsearch.experiment import warm_up
    from wildserve.vsearch.methods import METHODS

    p = argparse.ArgumentParser(description=__doc__)
    add_data_options(p)
    p.add_argument("--ks", default="1,10,100")
    p.add_argument("--targets", default="0.9,0.95,0.99")
    p.add_argument("--methods", default="omega,laet,darth")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--dump", type=Path, default=None, help="save every search's ids, counts, scratch"
    )
    p.add_argument("--no-time", action="store_true", help="deterministic counts only")
    args = p.parse_args()
    ks = tuple(int(x) for x in args.ks.split(","))
    targets = tuple(float(x) for x in args.targets.split(","))
    names = tuple(args.methods.split(","))
    _, _, prep, ctx = prepared(args, ks=ks, k_weights=(1,) * len(ks), targets=targets)
    warm_up(ctx, names)
    fitted = {}
    for name in names:
        fitted[name] = METHODS.get(name)()
        fitted[name].fit(ctx)
    s, q = prep.searcher, prep.split.test
    s.search(q[:2], 1, 50, StopRule(stop_at_budget, (np.full(2, 1e9),), 1, 1))  # compile
    print(f"{args.base}: {prep.graph.num_vectors} x {prep.graph.vectors.shape[1]}, "
          f"{q.shape[0]} test queries, CPU µs, best of {args.repeats}")  # fmt: skip
    head = (f"{'method':>6} {'K':>4} {'tgt':>5} {'ndis':>6} {'checks':>6} {'calls':>6} "
            f"{'total':>7} {'bare':>7} {'ns/ndis':>7} {'check µs':>8} {'call µs':>7} "
            f"{'share':>6} {'ef~':>5} {'ns/ndis~':>8}")  # fmt: skip
    print(head)
    dumped: dict[str, np.ndarray] = {}
    for k in ks:
        for t in targets:
            for name, m in fitted.items():
                ef, rule = m.ef_for(k, t), m.rule(k, t)
                res = s.search(q, k, ef, rule)
                dumped[f"{name}-{k}-{t}"] = np.hstack([res.ids, res.tr, res.pst])
                ndis = res.ndis.astype(np.float64)
                checks = res.pst[:, CHECKS_SLOT[name]].mean()
                calls = res.pst[:, m.calls_slot].mean()
                bare_rule = StopRule(stop_at_budget, (ndis,), 1, rule.track)
                assert np.array_equal(s.search(q, k, ef, bare_rule).ndis, ndis)
                if args.no_time:
                    print(f"{name:>6} {k:>4} {t:>5.2f} {ndis.mean():>6.0f} {checks:>6.1f} "
                          f"{calls:>6.1f}", flush=True)  # fmt: skip
                    continue
                total = bare = np.inf
                for _ in range(args.repeats):  # interleaved, best of each
                    total = min(total, cpu_us(s, q, k, ef, rule, 1))
                    bare = min(bare, cpu_us(s, q, k, ef, bare_rule, 1))
                over = total - bare
                small_ef, small_ndis = fixed_ef_near(s, q, k, ndis.mean())
                small = min(cpu_us(s, q, k, small_ef, NEVER, 1) for _ in range(args.repeats))
                print(f"{name:>6} {k:>4} {t:>5.2f} {ndis.mean():>6.0f} {checks:>6.1f} "
                      f"{calls:>6.1f} {total:>7.1f} {bare:>7.1f} "
                      f"{bare / ndis.mean() * 1e3:>7.1f} {over / max(checks, 1e-9):>8.2f} "
                      f"{over / max(calls, 1e-9):>7.2f} {over / total:>6.1%} {small_ef:>5} "
                      f"{small / small_ndis * 1e3:>8.1f}", flush=True)  # fmt: skip

    if args.dump is not None:
        np.savez_compressed(args.dump, **dumped)


if __name__ == "__main__":
    main()
