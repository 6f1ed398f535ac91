"""The shared load table across real processes: counted once per backend, visible to every worker."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from wildserve.gateway.shared_load import SharedLoadTable

_CTX = mp.get_context("spawn")  # what a fresh worker process sees: nothing inherited but the name


def _hold(name, workers, backends, worker, opened, ready, release, done, crash):
    """A worker: open ``opened[b]`` requests on each backend, wait, then release them (or die)."""
    table = SharedLoadTable.attach(name, workers, backends, worker)
    for b, n in enumerate(opened):
        for _ in range(n):
            table.add(b, 1, 100)  # dispatch: one in flight, 100 prompt tokens queued
    ready.set()
    release.wait(30)
    if crash:
        import os

        os._exit(3)  # dies holding its requests, as a crashed worker would
    for b, n in enumerate(opened):
        for _ in range(n):
            table.add(b, 0, -100)  # first token: prefill done
            table.add(b, -1)  # finish
    table.close()
    done.set()


def _start(table, worker, opened, crash=False):
    ready, release, done = _CTX.Event(), _CTX.Event(), _CTX.Event()
    args = (table.name, table.num_workers, table.num_backends, worker, opened, ready, release, done)
    proc = _CTX.Process(target=_hold, args=(*args, crash))
    proc.start()
    assert ready.wait(60), "worker did not start"
    return proc, release, done


def _pick(name, workers, backends, worker, out):
    """A worker's routing decision: the backend with the fewest in-flight requests gateway-wide."""
    table = SharedLoadTable.attach(name, workers, backends, worker)
    out.put(int(np.argmin(table.in_flight())))
    table.close()


@pytest.fixture
def table():
    t = SharedLoadTable.create(2, 3)
    yield t
    t.close()


def test_requests_of_both_workers_are_counted_once_per_backend(table):
    procs = [_start(table, 0, [2, 1, 0]), _start(table, 1, [1, 0, 3])]
    assert table.in_flight().tolist() == [3, 1, 3]  # the open requests, not 2x nor half
    assert table.queued_prefill().tolist() == [300, 100, 300]
    for proc, release, done in procs:
        release.set()
        assert done.wait(30)
        proc.join(30)
        assert proc.exitcode == 0
    assert table.in_flight().tolist() == [0, 0, 0]
    assert table.queued_prefill().tolist() == [0, 0, 0]


def test_a_decision_sees_the_other_workers_load(table):
    # worker 0 holds two requests on backend 0 and one on backend 2; worker 1 holds none itself,
    # so with private per-worker counts it would see all zeros and pick backend 0
    proc, release, done = _start(table, 0, [2, 0, 1])
    out = _CTX.Queue()
    picker = _CTX.Process(target=_pick, args=(table.name, 2, 3, 1, out))
    picker.start()
    assert out.get(timeout=60) == 1
    picker.join(30)
    release.set()
    assert done.wait(30)
    proc.join(30)


def test_a_crashed_workers_row_is_cleared_and_the_block_survives_its_exit(table):
    proc, release, _ = _start(table, 1, [1, 2, 0], crash=True)
    release.set()
    proc.join(30)
    assert proc.exitcode == 3
    assert table.in_flight().tolist() == [1, 2, 0]  # phantom load until the parent clears it
    table.clear_row(1)
    assert table.in_flight().tolist() == [0, 0, 0]
    # the worker's exit did not unlink the block: a replacement attaches to the same name
    again = SharedLoadTable.attach(table.name, 2, 3, 1)
    again.add(2, 1)
    assert table.in_flight().tolist() == [0, 0, 1]
    again.close()


def test_the_parent_has_no_row_and_bad_shapes_fail():
    with pytest.raises(ValueError):
        SharedLoadTable.create(0, 2)
    t = SharedLoadTable.create(1, 1)
    try:
        with pytest.raises(RuntimeError):
            t.add(0, 1)
        with pytest.raises(ValueError):
            SharedLoadTable.attach(t.name, 1, 1, 1)
    finally:
        t.close()


@pytest.fixture
def pair(table):
    """Two workers' router-local views on one table (as two gateway processes would hold them)."""
    from wildserve.routing.local import RouterLocalViews

    views = []
    for w in range(2):
        v = RouterLocalViews(3, 16)
        v.share_load(SharedLoadTable.attach(table.name, 2, 3, w))
        views.append(v)
    yield views
    for v in views:
        v.shared.close()  # its counts are views of the block: released before the block goes


@pytest.mark.parametrize("policy", ["least-requests", "lmetric"])
def test_a_workers_policy_sees_the_other_workers_in_flight_requests(table, pair, policy):
    from wildserve.routing import make_policy
    from wildserve.routing.view import RouteRequest

    a, b = pair
    for rid in range(4):  # worker a holds four requests on backend 0
        a.on_dispatch(0, RouteRequest(rid, 160, [100 + rid], 16))
    req = RouteRequest(9, 160, [7], 16)
    views = b.views(req)
    assert [v.num_running for v in views] == [4, 0, 0]
    assert [v.queued_prefill_tokens for v in views] == [640, 0, 0]
    assert make_policy(policy).choose(req, views) != 0  # private per-worker counts would tie at 0
    b.on_dispatch(1, req)
    assert table.in_flight().tolist() == [4, 1, 0]
    a.on_first_token(0)
    assert table.queued_prefill().tolist() == [480, 160, 0]
    for rid in range(4):
        a.on_finish(rid)
    b.on_finish(9)
    b.on_finish(9)  # a second release (a retry's cleanup) changes nothing
    assert table.in_flight().tolist() == [0, 0, 0]
    assert table.queued_prefill().tolist() == [0, 0, 0]
    assert list(a.in_flight) == [0, 0, 0] and list(b.in_flight) == [0, 0, 0]


def test_a_backends_in_flight_and_the_metrics_gauge_read_the_whole_gateway(table, pair):
    from wildserve.gateway.backends import Backend

    a, b = pair
    a.on_dispatch(2, _req(1))
    b.on_dispatch(2, _req(2))
    backend = Backend(2, "http://b2", b.load)
    assert b.in_flight[2] == 1  # this worker's own count
    assert backend.in_flight == 2  # the gauge /metrics reports: both workers' requests


def test_a_workers_counts_are_its_row_of_the_table_not_a_copy(table, pair):
    from wildserve.routing.local import RouterLocalViews

    a, b = pair
    a.on_dispatch(1, _req(1))
    a.on_dispatch(1, _req(2))
    b.on_dispatch(0, _req(3))
    # one source: the table's rows are the routers' counts (nothing mirrored that could drift)
    assert (
        table.table[0].tolist() == [list(a.in_flight), list(b.in_flight)] == [[0, 2, 0], [1, 0, 0]]
    )
    assert table.table[1].tolist() == [list(a.queued_prefill_tokens), list(b.queued_prefill_tokens)]
    late = RouterLocalViews(3, 16)
    late.on_dispatch(0, _req(4))
    with pytest.raises(RuntimeError, match="after requests"):
        late.share_load(b.shared)


def _req(rid):
    from wildserve.routing.view import RouteRequest

    return RouteRequest(rid, 32, [rid], 16)


def test_kv_event_views_route_on_every_workers_in_flight_requests(table, pair):
    from wildserve.routing.kv_index import KVEventIndex, KVEventViews

    a, b = pair
    kv_b = KVEventViews(KVEventIndex(3, 16), b)
    for rid in range(3):
        a.on_dispatch(1, _req(rid))  # worker a's requests on backend 1
    views = kv_b.views(_req(7))  # worker b's KV-events views, nothing polled yet
    assert [v.num_waiting for v in views] == [0, 3, 0]
    assert [v.queued_prefill_tokens for v in views] == [0, 96, 0]


def _metrics_text(shared, urls=("http://b0", "http://b1")):
    from types import SimpleNamespace

    from wildserve.gateway.gateway_metrics import GatewayMetrics
    from wildserve.routing import make_policy

    backends = [SimpleNamespace(url=u, in_flight=0, healthy=True) for u in urls]
    gw = SimpleNamespace(backends=backends, policy=make_policy("round-robin"), subscribers=[])
    return GatewayMetrics(gw, shared)


def test_metric_counts_of_every_worker_are_summed_in_each_scrape():
    from wildserve.gateway.gateway_metrics import MetricCounts

    cells = MetricCounts.cells_needed(2)
    parent = SharedLoadTable.create(2, 2, cells)
    rows = [SharedLoadTable.attach(parent.name, 2, 2, w, cells) for w in range(2)]
    alone = _metrics_text(None)
    try:
        metrics = [_metrics_text(row) for row in rows]
        for m in (metrics[0], metrics[0], metrics[1], alone, alone, alone):
            m.sent(1)
            m.first_token(1, 0.02)
            m.finished(1, 0.3)
        for m in (metrics[1], alone):
            m.error(0, "http_500")
            m.error(0, "http_999")  # outside the status range: one "other" cell
            m.rejected(413)
            m.rejected(404, "model_not_found")
            m.decision.observe(4e-5)
        # whichever worker answers, it reports the three requests and one of each failure, and
        # the text is the one a single process that saw all of it renders, plus each worker's share
        texts = [m.render()[0].decode() for m in metrics]
        per_worker = "wildserve_gateway_worker_requests"
        assert 'wildserve_gateway_worker_requests_total{worker="0"} 2.0' in texts[0]
        assert 'wildserve_gateway_worker_requests_total{worker="1"} 1.0' in texts[0]
        same = ["\n".join(x for x in t.splitlines() if per_worker not in x) for t in texts]
        assert same[0] == same[1] == alone.render()[0].decode().rstrip("\n")
        assert per_worker not in alone.render()[0].decode()  # one process: no per-worker family
        assert 'wildserve_gateway_requests_total{backend="http://b1"} 3.0' in texts[0]
        assert 'kind="http_other"} 1.0' in texts[0]
        assert 'wildserve_gateway_rejected_total{reason="too_large"} 1.0' in texts[0]
        # a dead worker's row is cleared of load only: its counts stay for its replacement
        parent.clear_row(0)
        again = _metrics_text(SharedLoadTable.attach(parent.name, 2, 2, 0, cells))
        assert 'wildserve_gateway_requests_total{backend="http://b1"} 3.0' in (
            again.render()[0].decode()
        )
        again.shared.close()
    finally:
        for row in rows:
            row.close()
        parent.close()


def test_a_table_without_room_for_the_metrics_is_refused():
    table = SharedLoadTable.create(1, 2)
    row = SharedLoadTable.attach(table.name, 1, 2, 0)
    try:
        with pytest.raises(ValueError, match="metric cells"):
            _metrics_text(row)
    finally:
        row.close()
        table.close()
