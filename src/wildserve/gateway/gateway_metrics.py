"""The gateway's Prometheus metrics, in a registry of its own (no process-global state).

The proxy's hot path only bumps plain ints and bucket counts (``GatewayMetrics`` methods); families
are built at scrape time by a collector, so a request pays no locks or label lookups.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from http import HTTPStatus
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from wildserve.gateway.proxy import Gateway

_DECISION_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                    60, 120, 300, 600)  # fmt: skip
# failure counters a routing policy may report in ``stats()`` (0 for policies that do not)
_POLICY_COUNTERS = {
    "zero_score_decisions": "decisions whose best policy score was 0 (load ignored)",
    "costly_switch_decisions": "decisions that left the instance holding the longest cached prefix "
    "for a re-prefill larger than the queued prefill it avoided",
}
# why the gateway answered a request itself, by the status it answered with
_REJECT_REASONS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    502: "backends_failed",
    503: "no_backend",
    504: "backend_timeout",
}


class Histogram:
    """Bucket counts and a sum; ``observe`` is one bisect and two additions."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        cumulative, buckets = 0, []
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += n
            buckets.append((_le(bound), cumulative))
        family.add_metric(labels, buckets, self.total)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _Collector:
    """Builds every family from the gateway's live state and ``GatewayMetrics``' plain counts."""

    def __init__(self, gateway: Gateway, metrics: GatewayMetrics) -> None:
        self.gw = gateway
        self.m = metrics

    def collect(self):
        gw, m = self.gw, self.m
        urls = m.urls
        requests = CounterMetricFamily(
            "wildserve_gateway_requests", "requests sent to each backend", labels=["backend"]
        )
        in_flight = GaugeMetricFamily(
            "wildserve_gateway_in_flight",
            "requests dispatched and not finished",
            labels=["backend"],
        )
        healthy = GaugeMetricFamily(
            "wildserve_gateway_backend_healthy", "1 if the backend is admitted", labels=["backend"]
        )
        ttft = HistogramMetricFamily(
            "wildserve_gateway_ttft_seconds",
            "time from a request's arrival to its first token (the whole answer if not streamed)",
            labels=["backend"],
        )
        latency = HistogramMetricFamily(
            "wildserve_gateway_request_seconds",
            "end-to-end time of a proxied request in the gateway",
            labels=["backend"],
        )
        for i, b in enumerate(gw.backends):
            requests.add_metric([urls[i]], m.requests[i])
            in_flight.add_metric([b.url], b.in_flight)
            healthy.add_metric([b.url], 1.0 if b.healthy else 0.0)
            m.ttft[i].add_to(ttft, [urls[i]])
            m.latency[i].add_to(latency, [urls[i]])
        yield from (requests, in_flight, healthy, ttft, latency)
        errors = CounterMetricFamily(
            "wildserve_gateway_errors", "failures by backend and kind", labels=["backend", "kind"]
        )
        for (i, kind), n in sorted(m.errors.items()):
            errors.add_metric([urls[i], kind], n)
        yield errors
        rejected = CounterMetricFamily(
            "wildserve_gateway_rejected",
            "requests answered by the gateway itself, by reason",
            labels=["reason"],
        )
        for reason, n in sorted(m.rejections.items()):
            rejected.add_metric([reason], n)
        yield rejected
        decision = HistogramMetricFamily(
            "wildserve_gateway_routing_decision_seconds", "time to build views and run the policy"
        )
        m.decision.add_to(decision, [])
        yield decision
        stats = gw.policy.stats()
        for key, doc in _POLICY_COUNTERS.items():
            yield CounterMetricFamily(f"wildserve_gateway_{key}", doc, value=stats.get(key, 0))
        if gw.subscribers:
            batches = CounterMetricFamily(
                "wildserve_gateway_kv_event_batches", "KV event batches applied", labels=["backend"]
            )
            blocks = GaugeMetricFamily(
                "wildserve_gateway_kv_index_blocks",
                "router blocks the KV-event index holds for the backend",
                labels=["backend"],
            )
            replayed = CounterMetricFamily(
                "wildserve_gateway_kv_event_replayed_batches",
                "KV event batches applied from the engine's replay endpoint",
                labels=["backend"],
            )
            for sub in gw.subscribers:
                url = gw.backends[sub.instance].url
                batches.add_metric([url], sub.num_batches)
                replayed.add_metric([url], sub.num_replayed)
                blocks.add_metric([url], sub.index.num_blocks(sub.instance))
            yield batches
            yield replayed
            yield blocks


class GatewayMetrics:
    """Counts and histograms the proxy updates on its hot path."""

    def __init__(self, gateway: Gateway) -> None:
        n = len(gateway.backends)
        self.urls = [b.url for b in gateway.backends]
        self.requests = [0] * n
        self.errors: defaultdict[tuple[int, str], int] = defaultdict(int)
        self.rejections: defaultdict[str, int] = defaultdict(int)
        self.ttft = [Histogram(_LATENCY_BUCKETS) for _ in range(n)]
        self.latency = [Histogram(_LATENCY_BUCKETS) for _ in range(n)]
        self.decision = Histogram(_DECISION_BUCKETS)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(gateway, self))

    def sent(self, backend: int) -> None:
        self.requests[backend] += 1

    def error(self, backend: int, kind: str) -> None:
        self.errors[(backend, kind)] += 1

    def rejected(self, status: int, reason: str | None = None) -> None:
        """A request the gateway answered itself with ``status`` (every such answer counts)."""
        if reason is None:
            reason = _REJECT_REASONS.get(status) or HTTPStatus(status).phrase.lower().replace(
                " ", "_"
            )
        self.rejections[reason] += 1

    def first_token(self, backend: int, seconds: float) -> None:
        self.ttft[backend].observe(seconds)

    def finished(self, backend: int, seconds: float) -> None:
        self.latency[backend].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
