"""OMEGA's distance computations against LAET and DARTH refitted on a share of the training and
validation queries: where the equal-budget comparison's count turns.

The experiment refits each baseline at OMEGA's preprocessing *time*, so the share of the queries a
baseline gets, and with it the distance-computation comparison, depends on the host: DARTH's
preprocessing is mostly searches (memory-bound), OMEGA's mostly LightGBM and replays (compute-bound),
and a host on which a distance computation costs 2.9x as much buys DARTH-eq 392 instead of 861 of
1,000 training queries (runs 8 and 7 in docs/results/omega.md). At a given share the counts are
deterministic, so this table is the same on any machine: per baseline and share, whether it meets
each cell's target and in how many cells OMEGA's mean computations are <= its. No timing (the
preprocessing seconds printed beside are this host's).

    .venv/bin/python benchmarks/omega_budget.py --cache results/omega-glove/cache \
        --json docs/results/omega/budget-sweep.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from omega_setup import add_data_options, prepared


def main() -> None:
    from wildserve.config_cli import number_list
    from wildserve.errors import ConfigError
    from wildserve.vsearch.experiment import preprocessing_seconds, warm_up
    from wildserve.vsearch.methods import METHODS
    from wildserve.vsearch.search import recall_at_k

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_data_options(p)
    p.add_argument("--fractions", default="1.0,0.8,0.6,0.4,0.2", help="shares refitted at")
    p.add_argument("--methods", default="laet,darth")
    p.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = p.parse_args()
    try:
        fractions = number_list(args.fractions, "--fractions", gt=0, le=1)
    except ConfigError as exc:
        p.error(str(exc))
    names = tuple(n for n in args.methods.split(",") if n)
    unknown = [n for n in names if n not in ("laet", "darth")]
    if unknown:
        p.error(f"--methods: only laet and darth are refitted at a share, got {unknown}")
    cfg, _, prep, ctx = prepared(args)
    warm_up(ctx, ("omega", *names))  # so that no fit below is charged numba's compilation
    q, truth = prep.split.test, prep.truth["test"]
    cells = [(k, t) for k in cfg.ks for t in cfg.targets]

    def counts(method) -> dict[tuple[int, float], tuple[float, bool]]:
        out = {}
        for k, t in cells:
            res = prep.searcher.search(q, k, method.ef_for(k, t), method.rule(k, t))
            out[k, t] = (float(res.ndis.mean()), bool(recall_at_k(res.ids, truth, k).mean() >= t))
        return out

    omega = METHODS.get("omega")()
    omega.fit(ctx)
    om = counts(omega)
    print(f"omega: meets {sum(m for _, m in om.values())}/{len(cells)}, "
          f"preprocessing {preprocessing_seconds(prep, omega):.1f} s (this host)")  # fmt: skip
    print(f"{'method':>7} {'share':>5} {'train q':>7} {'val q':>5} {'prep s':>6} {'meets':>5} "
          f"{'omega ndis <=':>13} {'omega/it ndis (geo mean)':>24}")  # fmt: skip
    rows = []
    for name in names:
        for f in fractions:
            m = METHODS.get(name)(fraction=f)
            m.fit(ctx)
            c = counts(m)
            wins = sum(om[x][0] <= c[x][0] for x in cells)
            ratio = float(np.exp(np.mean([np.log(om[x][0] / c[x][0]) for x in cells])))
            met = sum(v[1] for v in c.values())
            row = {"method": name, "fraction": f, "train_queries": m.used_train,
                   "val_queries": m.used_val, "preprocessing_s": preprocessing_seconds(prep, m),
                   "meets": met, "omega_ndis_le": wins, "omega_ndis_ratio": ratio,
                   "ndis": {f"{k}@{t}": c[k, t][0] for k, t in cells}}  # fmt: skip
            rows.append(row)
            print(f"{name:>7} {f:5.2f} {m.used_train:7d} {m.used_val:5d} "
                  f"{row['preprocessing_s']:6.1f} {met:>2}/{len(cells)} "
                  f"{wins:>10}/{len(cells)} {ratio:24.3f}", flush=True)  # fmt: skip
    if args.json is not None:
        payload = {"omega_ndis": {f"{k}@{t}": om[k, t][0] for k, t in cells}, "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
