"""Candidate zero-knob rules over LMetric's indicators, closed loop, with a per-decision record.

    python benchmarks/lmetric_variant_rules.py --rules lmetric,marginal,reprefill \
        --points weka:1:0,weka:2:0,mooncake:2:0 [--out results/lmetric-rules.jsonl]

Each rule ranks the instances from the same three numbers per instance that LMetric multiplies:
``q`` (queued prefill tokens), ``n`` (this request's uncached tokens there) and ``r`` (running +
waiting requests). None has a knob. Rules (exploration for issue 20; not registered policies):

- ``lmetric``: ``(q + n) x (r + 1)`` (the paper's; the registered ``lmetric``, reimplemented here only
  so every rule logs the same record);
- ``marginal``: ``q + n x (r + 1)``, the request's own wait (``q + n``) plus the stall its prefill
  puts on the ``r`` requests already there; LMetric's product minus its ``q x r`` term;
- ``marginal-stay``: ``marginal`` with ``lmetric-stay``'s veto (no instance whose ``q + n`` exceeds
  the cache holder's);
- ``marginal-veto``: LMetric's product, but no instance whose marginal cost ``q + n x (r + 1)``
  exceeds the cache holder's (a switch must lower the request's wait plus the stall its prefill
  puts on the batch it joins, against staying);
- ``reprefill``: ``(q + n + (n - n_holder)) x (r + 1)``, a KV$ indicator that also counts the
  re-prefill the switch causes (the issue's first suggestion).

Per point (``workload:load:seed``) and rule it prints one JSON line (mean / p99 TTFT, mean TPOT,
hit ratio, follow-up switch rate, preemptions, costly switches, CPU s) and, from the per-decision
record of the decisions where some instance holds a longer prefix than the others, the switches'
median re-prefill, median backlog avoided and median holder backlog. Runs are not cached.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wildserve.engine.cluster import ClusterConfig
from wildserve.experiments.lmetric import DEFAULT_WORKLOADS, session_switch_rate
from wildserve.metrics import DEFAULT_SLO
from wildserve.routing.lmetric import cache_holder, is_costly_switch, prefill_terms
from wildserve.routing.policy import RoutingPolicy, argmin
from wildserve.routing.view import InstanceView, RouteRequest
from wildserve.sim.run import run_policy
from wildserve.workload.transforms import rate_scale


def rule_keys(rule: str, q: Sequence[int], n: Sequence[int], r: Sequence[int]) -> list[float]:
    """The rule's key per instance (lowest wins, ties to the lowest index)."""
    home = cache_holder(q, n)
    if rule == "lmetric":
        return [(qi + ni) * (ri + 1) for qi, ni, ri in zip(q, n, r, strict=True)]
    if rule in ("marginal", "marginal-stay"):
        keys = [qi + ni * (ri + 1) for qi, ni, ri in zip(q, n, r, strict=True)]
        if rule == "marginal-stay" and home is not None:
            limit = q[home] + n[home]
            keys = [
                k if qi + ni <= limit else float("inf")
                for k, qi, ni in zip(keys, q, n, strict=True)
            ]
        return keys
    if rule == "marginal-veto":
        keys = [(qi + ni) * (ri + 1) for qi, ni, ri in zip(q, n, r, strict=True)]
        if home is not None:
            limit = q[home] + n[home] * (r[home] + 1)
            keys = [
                k if qi + ni * (ri + 1) <= limit else float("inf")
                for k, qi, ni, ri in zip(keys, q, n, r, strict=True)
            ]
        return keys
    if rule == "reprefill":
        extra = [ni - n[home] if home is not None else 0 for ni in n]
        return [(qi + ni + e) * (ri + 1) for qi, ni, e, ri in zip(q, n, extra, r, strict=True)]
    raise SystemExit(f"unknown rule '{rule}'")


class RecordedRule(RoutingPolicy):
    """A rule of ``rule_keys`` that keeps one record per decision with a cache holder."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.name = rule
        self.costly = 0
        self.record: list[tuple[int, ...]] = []  # holder, chosen, q/n/r at holder and at chosen

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        q, n = prefill_terms(request, views)
        r = [v.num_running + v.num_waiting for v in views]
        chosen = argmin(rule_keys(self.rule, q, n, r))
        self.costly += is_costly_switch(q, n, chosen)
        home = cache_holder(q, n)
        if home is not None:
            c = chosen
            self.record.append((home, c, q[home], q[c], n[home], n[c], r[home], r[c]))
        return chosen


def decision_summary(record: list[tuple[int, ...]]) -> dict:
    """What the switches (holder != chosen) looked like, from the per-decision record."""
    if not record:
        return {}
    a = np.array(record, dtype=np.float64)
    home, chosen, qh, qc, nh, nc = a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5]
    sw = home != chosen
    if not sw.any():
        return {"holder_decisions": len(a), "switches": 0}
    return {
        "holder_decisions": len(a),
        "switches": int(sw.sum()),
        "switch_re_prefill_median": float(np.median(nc[sw] - nh[sw])),
        "switch_backlog_avoided_median": float(np.median(qh[sw] - qc[sw])),
        "switch_holder_backlog_median": float(np.median(qh[sw])),
    }


def run_point(workload: str, scale: float, seed: int, rule: str) -> dict:
    spec = next(w for w in DEFAULT_WORKLOADS if w.name == workload)
    requests = list(rate_scale(spec.load(seed), scale))
    cfg = ClusterConfig(model="qwen2.5-7b", gpu="h20", num_instances=16)
    policy = RecordedRule(rule)
    t0 = time.process_time()
    result = run_policy(requests, cfg, policy)
    s = result.metrics().summary(16, DEFAULT_SLO.ttft_slo, DEFAULT_SLO.tpot_slo)
    return {
        "workload": workload,
        "load": scale,
        "seed": seed,
        "rule": rule,
        "ttft_mean": s["ttft"]["mean"],
        "ttft_p99": s["ttft"]["p99"],
        "tpot_mean": s["tpot"]["mean"],
        "hit_ratio": s["hit_ratio"],
        "switch_rate": session_switch_rate(requests, result.instances),
        "preemptions": sum(e.num_preemptions for e in result.engines),
        "costly_switches": policy.costly,
        **decision_summary(policy.record),
        "cpu_s": time.process_time() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", default="lmetric,marginal,marginal-stay,reprefill")
    ap.add_argument("--points", default="weka:1:0,weka:2:0,mooncake:2:0")
    ap.add_argument("--out", type=Path, default=None, help="append the JSON lines here too")
    args = ap.parse_args()
    for point in args.points.split(","):
        workload, load, seed = point.split(":")
        for rule in args.rules.split(","):
            line = json.dumps(run_point(workload, float(load), int(seed), rule))
            print(line, flush=True)
            if args.out is not None:
                with args.out.open("a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
