"""Why OMEGA's CPU time per query can exceed LAET's at equal distance computations: an in-situ ablation.

Per (K, target) cell the same test queries are searched several ways, interleaved (the order rotates
every repeat, so no variant always follows the same one), best of N CPU time each:

  omega     OMEGA's rule as fitted;
  laet      LAET's rule (at OMEGA's preprocessing budget this is the full LAET: laet-eq);
  laet'     LAET's rule again, a second object: an A/A pair that shows the measurement's own noise;
  bare-o    no checks, each query stopped where OMEGA stopped it (same trajectory), a trivial rule
            called after every expansion;
  lean-o    the same stops, the trivial rule called only at the stop (OMEGA's is called only at its
            checks);
  fat-o     lean-o compiled with OMEGA's argument tuple and scratch size (its 11 arrays passed and
            unpacked, 108 scratch slots zeroed per query): what OMEGA's specialisation of the search
            loop costs by itself;
  bare-l    no checks, each query stopped where LAET stopped it.

So omega - laet = (omega - lean-o: OMEGA's checks) + (lean-o - bare-o) + (bare-o - bare-l: where the
two methods stop each query, at the same cost per expansion) + (bare-l - laet: LAET's own check).
Per-computation cost is bare / ndis; per-check cost is (omega - fat-o) / checks. Every variant is
first checked to stop each query exactly where its method did.

    /work/coord/timed .venv/bin/python benchmarks/omega_gap.py --cache results/omega-glove/cache
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit

from omega_setup import add_data_options, prepared
from wildserve.vsearch import kernel, omega_rule
from wildserve.vsearch.search import StopRule

CELLS = tuple((k, t) for t in (0.9, 0.95, 0.99) for k in (1, 2, 4, 5, 10, 20, 50, 100))


@njit(cache=True)
def stop_every(tr, top_d, ring, q, cargs, pst):
    """Stop query i at budget[i] computations, asked after every expansion."""
    return tr[kernel.T_NDIS] >= cargs[0][int(tr[kernel.T_QI])]


@njit(cache=True)
def stop_once(tr, top_d, ring, q, cargs, pst):
    """Stop query i at budget[i] computations; pst[0] tells the kernel not to ask before then."""
    budget = cargs[0][int(tr[kernel.T_QI])]
    pst[0] = budget
    return tr[kernel.T_NDIS] >= budget


@njit(cache=True)
def stop_once_fat(tr, top_d, ring, q, cargs, pst):
    """`stop_once` with OMEGA's argument tuple behind the budgets (unpacked, as OMEGA's check
    unpacks it, and one of its arrays read so the unpacking is not dropped)."""
    budget, _forest, _cx, _cy, _co, _cum, _edges, _grid, sched, _f, _p1, _p2 = cargs
    b = budget[int(tr[kernel.T_QI])] + 0.0 * sched[omega_rule.S_THETA]
    pst[0] = b
    return tr[kernel.T_NDIS] >= b


@njit(cache=True)
def stop_once_dead(tr, top_d, ring, q, cargs, pst):
    """`stop_once_fat` with OMEGA's whole check compiled in behind a flag that is off at run time:
    the search loop is specialised (and LLVM may inline) exactly as for OMEGA, but no check runs."""
    budget, flag = cargs[0], cargs[1]
    if flag[0] > 0.0:
        return omega_rule.omega_check(tr, top_d, ring, q, cargs[2:], pst)
    b = budget[int(tr[kernel.T_QI])]
    pst[0] = b
    return tr[kernel.T_NDIS] >= b


def cpu_seconds(searcher, queries, k, ef, rule) -> float:
    t = time.process_time()
    searcher.search(queries, k, ef, rule)
    return time.process_time() - t


NAMES = ("omega", "laet", "laet'", "bare-o", "lean-o", "fat-o", "dead-o", "bare-l")


def variant_rules(o_rule: StopRule, l_rule: StopRule, o_nd, l_nd) -> dict[str, StopRule]:
    """Every variant's rule for one slice of the queries (o_nd/l_nd: where OMEGA/LAET stopped them)."""
    off = np.zeros(1)
    return {
        "omega": o_rule,
        "laet": l_rule,
        "laet'": StopRule(l_rule.check, l_rule.cargs, l_rule.num_pst, l_rule.track),
        "bare-o": StopRule(stop_every, (o_nd,), 1, o_rule.track),
        "lean-o": StopRule(stop_once, (o_nd,), 1, o_rule.track),
        "fat-o": StopRule(stop_once_fat, (o_nd,) + o_rule.cargs, o_rule.num_pst, o_rule.track),
        "dead-o": StopRule(
            stop_once_dead, (o_nd, off) + o_rule.cargs, o_rule.num_pst, o_rule.track
        ),
        "bare-l": StopRule(stop_every, (l_nd,), 1, l_rule.track),
    }


def step_cost(s, q, k: int, ef: int, repeats: int, groups: int = 5) -> tuple[float, float, float]:
    """(per query, per distance computation, per expansion) CPU µs of a bare search, fitted by least
    squares over query groups stopped at the same budgets: within one budget the groups differ only
    in how many expansions their queries needed for those computations (a query whose neighbours
    were mostly seen already needs more), which is what separates the two costs."""
    points, rules = [], []
    for budget in (400.0, 800.0, 1600.0, 3200.0, 6400.0):
        res = s.search(q, k, ef, StopRule(stop_every, (np.full(q.shape[0], budget),), 1, k))
        nd, hops = res.ndis, res.tr[:, kernel.T_HOPS]
        order = np.argsort(hops / nd)
        for part in np.array_split(order, groups):
            sub = q[part]
            rule = StopRule(stop_every, (np.full(part.size, budget),), 1, k)
            check = s.search(sub, k, ef, rule)
            assert np.array_equal(check.ndis, nd[part])
            points.append((nd[part].mean(), hops[part].mean(), part.size))
            rules.append((sub, rule))
    best = np.full(len(rules), np.inf)
    for r in range(repeats):
        for j in range(len(rules)):
            i = (j + r) % len(rules)
            best[i] = min(best[i], cpu_seconds(s, rules[i][0], k, ef, rules[i][1]))
    pts = np.array(points)
    us = best / pts[:, 2] * 1e6
    x = np.column_stack([np.ones(len(pts)), pts[:, 0], pts[:, 1]])
    coef, *_ = np.linalg.lstsq(x, us, rcond=None)
    resid = us - x @ coef
    print(f"bare search cost model (K={k}, {len(pts)} query groups x budgets, best of {repeats}): "
          f"{coef[0]:.2f} µs per query + {coef[1] * 1e3:.1f} ns per computation + "
          f"{coef[2] * 1e3:.1f} ns per expansion; rms residual {np.sqrt((resid**2).mean()):.2f} µs "
          f"on {us.min():.0f}-{us.max():.0f} µs")  # fmt: skip
    return float(coef[0]), float(coef[1]), float(coef[2])


def main() -> None:
    from wildserve.vsearch.experiment import warm_up
    from wildserve.vsearch.methods import METHODS

    p = argparse.ArgumentParser(description=__doc__)
    add_data_options(p)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--chunk", type=int, default=100, help="queries timed together")
    p.add_argument("--cells", default="", help="K@target,... (default: all 24)")
    p.add_argument(
        "--step-cost", action="store_true", help="also fit per-computation/expansion cost"
    )
    args = p.parse_args()
    cells = CELLS
    if args.cells:
        cells = tuple((int(a), float(b)) for a, b in (c.split("@") for c in args.cells.split(",")))
    _, tc, prep, ctx = prepared(args)
    warm_up(ctx, ("omega", "laet"))
    omega, laet = METHODS.get("omega")(), METHODS.get("laet")()
    omega.fit(ctx)
    laet.fit(ctx)
    s, q = prep.searcher, prep.split.test
    nq, ef = q.shape[0], tc.ef
    slices = [slice(a, min(a + args.chunk, nq)) for a in range(0, nq, args.chunk)]
    print(
        f"{args.base}: {nq} test queries in chunks of {args.chunk}; CPU µs per query = sum over "
        f"chunks of the best of {args.repeats} (variants interleaved per chunk, order rotated)"
    )
    print(f"{'K':>4} {'tgt':>5} {'ndis-o':>6} {'ndis-l':>6} {'chk':>4} {'calls':>5} "
          + " ".join(f"{n:>7}" for n in NAMES)
          + f" {'ns/nd-o':>7} {'ns/nd-l':>7} {'µs/chk':>6}")  # fmt: skip
    rows, hops = [], []
    for k, t in cells:
        o_rule, l_rule = omega.rule(k, t), laet.rule(k, t)
        o_res, l_res = s.search(q, k, ef, o_rule), s.search(q, k, ef, l_rule)
        o_nd = o_res.ndis.astype(np.float64)
        l_nd = l_res.ndis.astype(np.float64)
        per_slice = [variant_rules(o_rule, l_rule, o_nd[sl], l_nd[sl]) for sl in slices]
        for name, rule in variant_rules(o_rule, l_rule, o_nd, l_nd).items():
            res = s.search(q, k, ef, rule)  # compiles, and each must stop where its method did
            want = l_res if name in ("laet", "laet'", "bare-l") else o_res
            assert np.array_equal(res.ndis, want.ndis), f"{name} did not stop where it should"
            assert np.array_equal(res.ids, want.ids), f"{name} returned other ids"
        best = np.full((len(NAMES), len(slices)), np.inf)
        for r in range(args.repeats):
            for c, sl in enumerate(slices):
                for j in range(len(NAMES)):
                    v = (j + r + c) % len(NAMES)
                    secs = cpu_seconds(s, q[sl], k, ef, per_slice[c][NAMES[v]])
                    best[v, c] = min(best[v, c], secs)
        us = dict(zip(NAMES, best.sum(axis=1) / nq * 1e6, strict=True))
        checks = float(o_res.pst[:, omega_rule.P_CHECKS].mean())
        calls = float(o_res.pst[:, omega_rule.P_CALLS].mean())
        per_chk = (us["omega"] - us["dead-o"]) / max(checks, 1e-9)
        rows.append((k, t, o_nd.mean(), l_nd.mean(), checks, calls, *(us[n] for n in NAMES)))
        hops.append((o_res.tr[:, kernel.T_HOPS].mean(), l_res.tr[:, kernel.T_HOPS].mean()))
        print(f"{k:>4} {t:>5.2f} {o_nd.mean():>6.0f} {l_nd.mean():>6.0f} {checks:>4.1f} "
              f"{calls:>5.1f} " + " ".join(f"{us[n]:>7.1f}" for n in NAMES)
              + f" {us['bare-o'] / o_nd.mean() * 1e3:>7.1f} {us['bare-l'] / l_nd.mean() * 1e3:>7.1f}"
              f" {per_chk:>6.2f}", flush=True)  # fmt: skip
    a = np.array(rows)
    col = {n: a[:, 6 + j] for j, n in enumerate(NAMES)}
    nd_o, nd_l, ck = a[:, 2], a[:, 3], a[:, 4]
    aa = col["laet'"] / col["laet"]
    print(f"cells where omega <= laet: {(col['omega'] <= col['laet']).sum()}/{len(a)}, "
          f"<= laet': {(col['omega'] <= col[NAMES[2]]).sum()}/{len(a)}; laet'/laet (A/A): "
          f"mean {aa.mean():.3f}, range {aa.min():.3f}-{aa.max():.3f}")  # fmt: skip
    print(
        "pooled ns per computation: "
        + ", ".join(
            f"{n} {col[n].sum() / (nd_l if n.endswith('l') else nd_o).sum() * 1e3:.1f}"
            for n in ("bare-o", "lean-o", "fat-o", "dead-o", "bare-l")
        )
        + f"; per check (omega - dead-o) {(col['omega'] - col['dead-o']).sum() / ck.sum():.2f} µs"
    )
    gap = col["omega"] - col["laet"]
    parts = {
        "checks (omega - dead-o)": col["omega"] - col["dead-o"],
        "check compiled in (dead-o - fat-o)": col["dead-o"] - col["fat-o"],
        "args+scratch (fat-o - lean-o)": col["fat-o"] - col["lean-o"],
        "per-expansion call (lean-o - bare-o)": col["lean-o"] - col["bare-o"],
        "stops (bare-o - bare-l)": col["bare-o"] - col["bare-l"],
        "laet's check (bare-l - laet)": col["bare-l"] - col["laet"],
    }
    h = np.array(hops)
    print(
        "expansions per query omega / laet: "
        + ", ".join(
            f"{int(r[0])}@{r[1]:g} {ho:.0f}/{hl:.0f}" for r, (ho, hl) in zip(a, h, strict=True)
        )
    )
    if args.step_cost:
        _, per_nd, per_hop = step_cost(s, q, 10, ef, args.repeats)
        pred = per_nd * (nd_o - nd_l) + per_hop * (h[:, 0] - h[:, 1])
        print(
            "stops (bare-o - bare-l) measured vs the cost model's prediction, µs: "
            + ", ".join(
                f"{int(r[0])}@{r[1]:g} {m:+.1f}/{p_:+.1f}"
                for r, m, p_ in zip(a, col["bare-o"] - col["bare-l"], pred, strict=True)
            )
        )
    print(
        f"mean over cells, µs per query: omega - laet {gap.mean():+.1f} =\n  "
        + "\n  ".join(f"{name} {v.mean():+.1f}" for name, v in parts.items())
    )


if __name__ == "__main__":
    main()
