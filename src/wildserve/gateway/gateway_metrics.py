"""The gateway's Prometheus metrics, in a registry of its own (no process-global state)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from wildserve.gateway.proxy import Gateway

_DECISION_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1)
_E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# failure counters a routing policy may report in ``stats()`` (0 for policies that do not)
_POLICY_COUNTERS = {
    "zero_score_decisions": "decisions whose best policy score was 0 (load ignored)",
    "costly_switch_decisions": "decisions that left the instance holding the longest cached prefix "
    "for a re-prefill larger than the queued prefill it avoided",
}


class _LiveState:
    """Read at scrape time: in-flight, health, the policy's failure counters, KV-event batches."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def collect(self):
        gw = self.gw
        in_flight = GaugeMetricFamily(
            "wildserve_gateway_in_flight",
            "requests dispatched and not finished",
            labels=["backend"],
        )
        healthy = GaugeMetricFamily(
            "wildserve_gateway_backend_healthy", "1 if the backend is admitted", labels=["backend"]
        )
        for b in gw.backends:
            in_flight.add_metric([b.url], b.in_flight)
            healthy.add_metric([b.url], 1.0 if b.healthy else 0.0)
        yield in_flight
        yield healthy
        stats_of = getattr(gw.policy, "stats", None)
        stats = stats_of() if stats_of is not None else {}
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
    """Counters and histograms the proxy updates on its hot path (label children bound once)."""

    def __init__(self, gateway: Gateway) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        urls = [b.url for b in gateway.backends]
        requests = Counter(
            "wildserve_gateway_requests", "requests sent to each backend", ["backend"], registry=r
        )
        self._errors = Counter(
            "wildserve_gateway_errors",
            "failures by backend and kind",
            ["backend", "kind"],
            registry=r,
        )
        self._rejected = Counter(
            "wildserve_gateway_rejected",
            "requests answered by the gateway itself",
            ["reason"],
            registry=r,
        )
        self._decision = Histogram(
            "wildserve_gateway_routing_decision_seconds",
            "time to build views and run the policy",
            buckets=_DECISION_BUCKETS,
            registry=r,
        )
        self._e2e = Histogram(
            "wildserve_gateway_request_seconds",
            "end-to-end time of a proxied request in the gateway",
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        r.register(_LiveState(gateway))
        self._urls = urls
        self._requests = [requests.labels(u) for u in urls]

    def sent(self, backend: int) -> None:
        self._requests[backend].inc()

    def error(self, backend: int, kind: str) -> None:
        self._errors.labels(self._urls[backend], kind).inc()

    def rejected(self, reason: str) -> None:
        self._rejected.labels(reason).inc()

    def decision(self, seconds: float) -> None:
        self._decision.observe(seconds)

    def finished(self, seconds: float) -> None:
        self._e2e.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
