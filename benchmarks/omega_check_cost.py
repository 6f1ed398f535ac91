"""What one OMEGA check and one model call cost, in distance computations, measured in the search.

For each cell the same test queries are searched four ways, interleaved, best of N CPU time each:
  full      OMEGA's rule as fitted;
  bare      no checks, each query stopped at the computation OMEGA stopped it at (same trajectory),
            a trivial rule called after every expansion (benchmarks/omega_cost.py's bare);
  lean      the same stops, the rule called only at the stop (as OMEGA's is called only at checks);
  extra     OMEGA's rule plus X more masked questions (features + forest + isotonic map, ranks 1..X,
            distinct inputs) after every check, results discarded.
A call costs (extra - full) / (X x checks); a check, its calls taken out, (full - lean - calls x
call) / checks; both divided by the lean search's time per distance computation. The pooled figures
(sums over cells, call cost only from cells with K >= X so the extra questions are distinct) are
`OmegaConfig.check_cost` and `call_cost`'s defaults. Run it under the timing lock on a quiet machine:

    /work/coord/timed .venv/bin/python benchmarks/omega_check_cost.py --cache results/omega-glove/cache
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from numba import njit

from omega_cost import cpu_us, stop_at_budget
from omega_setup import add_data_options, prepared
from wildserve.vsearch import kernel, omega_rule
from wildserve.vsearch.search import StopRule

CELLS = ((1, 0.9), (1, 0.99), (4, 0.95), (10, 0.9), (10, 0.95), (10, 0.99), (20, 0.95),
         (50, 0.9), (50, 0.95), (100, 0.9), (100, 0.95), (100, 0.99))  # fmt: skip


@njit(cache=True)
def stop_at_budget_once(tr, top_d, ring, q, cargs, pst):
    """Stop query i at budget[i] computations, called by the kernel only then (pst[0], the count
    before which a policy has nothing to do), as OMEGA's rule is called only at its checks."""
    budget = cargs[0][int(tr[kernel.T_QI])]
    pst[0] = budget
    return tr[kernel.T_NDIS] >= budget


@njit(cache=True)
def check_plus_calls(tr, top_d, ring, q, cargs, pst):
    """OMEGA's check, then `extra[0]` more masked questions at ranks 1, 2, ... (mod K) after every
    check it made; their probabilities are summed into `sink` so they cannot be optimised away."""
    forest, cal_x, cal_y, cal_off, cum, edges, grid, sched, feats, pre1, pre2, extra, sink = cargs
    before = pst[omega_rule.P_CHECKS]
    ocargs = (forest, cal_x, cal_y, cal_off, cum, edges, grid, sched, feats, pre1, pre2)
    stop = omega_rule.omega_check(tr, top_d, ring, q, ocargs, pst)
    if pst[omega_rule.P_CHECKS] > before:
        k = int(tr[kernel.T_K])
        n = min(int(tr[kernel.T_RING]), kernel.RING)
        srt = pst[omega_rule.P_WIN : omega_rule.P_WIN + kernel.RING]
        oargs = (forest, cal_x, cal_y, cal_off, tr, top_d, srt, pre1, pre2, n, feats)
        table = cal_y.reshape(1, -1)
        total = 0.0
        for a in range(int(extra[0])):
            total += omega_rule.probe(table, -1, oargs, a % k + 1)
        sink[0] += total
    return stop


def main() -> None:
    from wildserve.vsearch.config import OmegaConfig
    from wildserve.vsearch.experiment import warm_up
    from wildserve.vsearch.methods import METHODS

    p = argparse.ArgumentParser(description=__doc__)
    add_data_options(p)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--extra", type=int, default=8, help="extra model calls per check")
    args = p.parse_args()
    # the base schedule only, so the measured costs do not depend on the costs the replay assumed
    base = OmegaConfig()
    base = dataclasses.replace(base, first_check_quantiles=base.first_check_quantiles[:1],
                               gap_scales=base.gap_scales[:1])  # fmt: skip
    _, tc, prep, ctx = prepared(args, base)
    warm_up(ctx, ("omega",))
    omega = METHODS.get("omega")()
    omega.fit(ctx)
    s, q = prep.searcher, prep.split.test
    extra = np.array([float(args.extra)])
    print(f"{args.base}: {q.shape[0]} test queries, CPU µs per query, best of {args.repeats}; "
          f"extra = {args.extra} more calls per check")  # fmt: skip
    print(f"{'K':>4} {'tgt':>5} {'ndis':>6} {'checks':>6} {'calls':>6} {'full':>8} {'bare':>8} "
          f"{'lean':>8} {'extra':>8} {'ns/ndis':>7} {'call µs':>7} {'check µs':>8}")  # fmt: skip
    rows = []
    for k, t in CELLS:
        rule = omega.rule(k, t)
        res = s.search(q, k, tc.ef, rule)
        ndis = res.ndis.astype(np.float64)
        bare = StopRule(stop_at_budget, (ndis,), 1, rule.track)
        plus = StopRule(check_plus_calls, rule.cargs + (extra, np.zeros(1)), rule.num_pst, k)
        lean = StopRule(stop_at_budget_once, (ndis,), 1, rule.track)
        variants = (("full", rule), ("bare", bare), ("lean", lean), ("extra", plus))
        for name, r in variants[1:]:
            same = np.array_equal(s.search(q, k, tc.ef, r).ndis, res.ndis)
            assert same, f"{name} did not stop where omega did"
        best = {name: np.inf for name, _ in variants}
        for _ in range(args.repeats):
            for name, r in variants:
                best[name] = min(best[name], cpu_us(s, q, k, tc.ef, r, 1))
        checks = res.pst[:, omega_rule.P_CHECKS].mean()
        calls = res.pst[:, omega_rule.P_CALLS].mean()
        call_us = (best["extra"] - best["full"]) / (args.extra * checks)
        check_us = (best["full"] - best["lean"] - calls * call_us) / checks
        rows.append((k, ndis.mean(), checks, calls, *(best[n] for n, _ in variants)))
        print(f"{k:>4} {t:>5.2f} {ndis.mean():>6.0f} {checks:>6.2f} {calls:>6.2f} "
              + " ".join(f"{best[n]:>8.1f}" for n, _ in variants)
              + f" {best['lean'] / ndis.mean() * 1e3:>7.1f} {call_us:>7.2f} {check_us:>8.2f}",
              flush=True)  # fmt: skip
    a = np.array(rows)
    nd, ck, ca, full, bare, lean, extra = (a[:, j] for j in range(1, 8))
    per_ndis = lean.sum() / nd.sum()
    wide = a[:, 0] >= args.extra
    call_us = (extra[wide] - full[wide]).sum() / (args.extra * ck[wide]).sum()
    check_us = (full - lean - ca * call_us).sum() / ck.sum()
    per_exp = (bare - lean).sum() / nd.sum()
    print(f"pooled: {per_ndis * 1e3:.1f} ns per distance computation (lean); one model call "
          f"{call_us:.2f} µs = {call_us / per_ndis:.1f} ndis; one check without its calls "
          f"{check_us:.2f} µs = {check_us / per_ndis:.1f} ndis; a trivial rule called after every "
          f"expansion (bare - lean) {per_exp * 1e3:+.1f} ns per computation")  # fmt: skip


if __name__ == "__main__":
    main()
