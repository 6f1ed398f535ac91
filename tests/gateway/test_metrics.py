"""The gateway's /metrics export the routing policy's failure counters as they stand."""

from __future__ import annotations

from types import SimpleNamespace

from tests.routing.conftest import req, view
from wildserve.gateway.gateway_metrics import GatewayMetrics
from wildserve.routing import make_policy


def _value(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.rsplit(" ", 1)[1])


def test_costly_switch_and_zero_score_counters_follow_the_policy():
    policy = make_policy("lmetric")
    backends = [SimpleNamespace(url=f"http://b{i}", in_flight=0, healthy=True) for i in range(2)]
    gw = SimpleNamespace(backends=backends, policy=policy, subscribers=[])
    metrics = GatewayMetrics(gw)
    text = metrics.render()[0].decode()
    assert _value(text, "wildserve_gateway_costly_switch_decisions_total") == 0
    r = req(prompt=160, blocks=10)
    # a move off the cache holder that re-prefills 144 tokens to avoid 100 of backlog
    policy.choose(r, [view(0, run=9, queued=1000, match=9), view(1, queued=900)])
    # a fully cached request on an idle holder: score 0
    policy.choose(r, [view(0, match=10), view(1)])
    text = metrics.render()[0].decode()
    assert _value(text, "wildserve_gateway_costly_switch_decisions_total") == 1
    assert _value(text, "wildserve_gateway_zero_score_decisions_total") == 1


def test_policies_without_counters_export_zero():
    backends = [SimpleNamespace(url="http://b0", in_flight=0, healthy=True)]
    gw = SimpleNamespace(backends=backends, policy=make_policy("round-robin"), subscribers=[])
    text = GatewayMetrics(gw).render()[0].decode()
    assert _value(text, "wildserve_gateway_costly_switch_decisions_total") == 0
