"""The gateway's Prometheus metrics, in a registry of its own (no process-global state).

The proxy's hot path only bumps plain ints and bucket counts (``GatewayMetrics`` methods); families
are built at scrape time by a collector, so a request pays no locks or label lookups.

With ``--workers N`` the counts live in each worker's row of the gateway's shared table and a scrape
reports their sums, whichever worker answers it. Not prometheus_client's multiprocess mode: it does
not run custom collectors (this one builds every family at scrape time), and its ``inc()`` takes a
lock and writes an mmapped file (~1.2 us a counter, ~1.8 us a histogram here, against ~0.1 us for
a shared-memory cell's ``+= 1``: about 5 us more per request). Summed: requests, errors, rejections,
TTFT, latency and routing-decision histograms, and the in-flight gauge; ``worker_requests`` gives
each worker's share of the requests. The answering worker's own:
backend health (each worker checks on its own), the policy's decision counters and KV-event counts
(every worker applies every event stream).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from wildserve.gateway.proxy import Gateway
    from wildserve.gateway.shared_load import SharedLoadTable

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


# a backend failure's kind: how the exchange broke, or the non-2xx status it answered with
# (sorted: the order they are exported in)
ERROR_KINDS = tuple(
    sorted(
        ["connect", "timeout", "reset", "client_gone", "mid_stream", "http_other"]
        + [f"http_{status}" for status in range(100, 600)]
    )
)
_ERROR_SLOT = {kind: i for i, kind in enumerate(ERROR_KINDS)}
REJECT_REASONS = tuple(
    sorted(
        {*_REJECT_REASONS.values(), "model_not_found"}
        | {s.phrase.lower().replace(" ", "_") for s in HTTPStatus}
    )
)
_REJECT_SLOT = {reason: i for i, reason in enumerate(REJECT_REASONS)}


class ListCells:
    """A counter's cells in one process: plain lists (the cheapest ``+= 1``); counts what it made."""

    def __init__(self) -> None:
        self.num_ints = 0
        self.num_floats = 0

    def ints(self, n: int) -> list[int]:
        self.num_ints += n
        return [0] * n

    def floats(self, n: int) -> list[float]:
        self.num_floats += n
        return [0.0] * n


class SliceCells:
    """Cells as consecutive slices of two flat sequences: a worker's row of the shared table
    (memoryviews: writes land in shared memory) or the workers' sums (lists, to read)."""

    def __init__(self, ints, floats, track: Callable[[memoryview], memoryview] | None = None):
        self._ints, self._floats = ints, floats
        self._next_int = self._next_float = 0
        self._track = track

    def _take(self, flat, at: int, n: int):
        piece = flat[at : at + n]
        return piece if self._track is None else self._track(piece)

    def ints(self, n: int):
        piece = self._take(self._ints, self._next_int, n)
        self._next_int += n
        return piece

    def floats(self, n: int):
        piece = self._take(self._floats, self._next_float, n)
        self._next_float += n
        return piece


class Histogram:
    """Bucket counts and a sum; ``observe`` is one bisect and two additions."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...], cells: ListCells | SliceCells) -> None:
        self.bounds = bounds
        self.counts = cells.ints(len(bounds) + 1)  # the last one is +Inf
        self.sum = cells.floats(1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum[0] += value

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        cumulative, buckets = 0, []
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += n
            buckets.append((_le(bound), cumulative))
        family.add_metric(labels, buckets, self.sum[0])


class MetricCounts:
    """Every count ``/metrics`` reports, in cells; the same layout in every process, so a worker's
    row and the sums over all rows line up cell for cell."""

    def __init__(self, num_backends: int, cells: ListCells | SliceCells) -> None:
        self.requests = cells.ints(num_backends)
        self.errors = [cells.ints(len(ERROR_KINDS)) for _ in range(num_backends)]
        self.rejections = cells.ints(len(REJECT_REASONS))
        self.ttft = [Histogram(_LATENCY_BUCKETS, cells) for _ in range(num_backends)]
        self.latency = [Histogram(_LATENCY_BUCKETS, cells) for _ in range(num_backends)]
        self.decision = Histogram(_DECISION_BUCKETS, cells)

    @staticmethod
    def cells_needed(num_backends: int) -> tuple[int, int]:
        """(ints, floats) one process's counts take: the shared table's row size."""
        cells = ListCells()
        MetricCounts(num_backends, cells)
        return cells.num_ints, cells.num_floats


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _Collector:
    """Builds every family from the gateway's live state and ``GatewayMetrics``' plain counts."""

    def __init__(self, gateway: Gateway, metrics: GatewayMetrics) -> None:
        self.gw = gateway
        self.m = metrics

    def collect(self):
        gw, urls = self.gw, self.m.urls
        m = self.m.totals()
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
        workers = self.m.by_worker()
        if workers:
            by_worker = CounterMetricFamily(
                "wildserve_gateway_worker_requests",
                "requests each gateway worker sent to the backends (how evenly the workers take "
                "connections)",
                labels=["worker"],
            )
            for w, counts in enumerate(workers):
                by_worker.add_metric([str(w)], sum(counts.requests))
            yield by_worker
        errors = CounterMetricFamily(
            "wildserve_gateway_errors", "failures by backend and kind", labels=["backend", "kind"]
        )
        for i, counts in enumerate(m.errors):
            for kind, n in zip(ERROR_KINDS, counts, strict=True):
                if n:
                    errors.add_metric([urls[i], kind], n)
        yield errors
        rejected = CounterMetricFamily(
            "wildserve_gateway_rejected",
            "requests answered by the gateway itself, by reason",
            labels=["reason"],
        )
        for reason, n in zip(REJECT_REASONS, m.rejections, strict=True):
            if n:
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


class GatewayMetrics(MetricCounts):
    """Counts and histograms the proxy updates on its hot path."""

    def __init__(self, gateway: Gateway, shared: SharedLoadTable | None = None) -> None:
        """``shared``: the table of a ``--workers`` gateway: counts go to this worker's row."""
        n = len(gateway.backends)
        self.urls = [b.url for b in gateway.backends]
        self.shared = shared
        if shared is None:
            super().__init__(n, ListCells())
        else:
            if shared.metric_cells != MetricCounts.cells_needed(n):
                raise ValueError(
                    f"the shared table holds {shared.metric_cells} metric cells a worker, "
                    f"{n} backends' metrics need {MetricCounts.cells_needed(n)}"
                )
            ints, floats = shared.metric_row()
            super().__init__(n, SliceCells(ints, floats, shared.track))
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(gateway, self))

    def totals(self) -> MetricCounts:
        """The whole gateway's counts: this process's own, or the sums over every worker's row."""
        if self.shared is None:
            return self
        return MetricCounts(len(self.urls), SliceCells(*self.shared.metric_sums()))

    def by_worker(self) -> list[MetricCounts]:
        """Each worker's own counts (empty for a single process)."""
        if self.shared is None:
            return []
        n = len(self.urls)
        return [MetricCounts(n, SliceCells(*row)) for row in self.shared.metric_rows()]

    def sent(self, backend: int) -> None:
        self.requests[backend] += 1

    def error(self, backend: int, kind: str) -> None:
        self.errors[backend][_ERROR_SLOT.get(kind, _ERROR_SLOT["http_other"])] += 1

    def rejected(self, status: int, reason: str | None = None) -> None:
        """A request the gateway answered itself with ``status`` (every such answer counts)."""
        if reason is None:
            reason = _REJECT_REASONS.get(status) or HTTPStatus(status).phrase.lower().replace(
                " ", "_"
            )
        self.rejections[_REJECT_SLOT[reason]] += 1

    def first_token(self, backend: int, seconds: float) -> None:
        self.ttft[backend].observe(seconds)

    def finished(self, backend: int, seconds: float) -> None:
        self.latency[backend].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
