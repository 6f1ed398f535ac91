"""The official ``openai`` client through the gateway to three emulated engines on 127.0.0.1."""

from __future__ import annotations

import openai
import pytest

from tests.gateway.conftest import eventually, start_engines, start_gateway

MODEL = "qwen2.5-7b"


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.mark.parametrize("view_source", ["router-local", "kv-events"])
def test_openai_client_streaming_and_not_completions_and_chat(loop_thread, view_source):
    urls, endpoints = start_engines(loop_thread, 3, kv=view_source == "kv-events")
    url, gw = start_gateway(loop_thread, urls, kv_events=endpoints)
    client = _client(url)
    assert [m.id for m in client.models.list().data] == [MODEL]

    done = client.completions.create(model=MODEL, prompt="hello there " * 20, max_tokens=6)
    assert done.usage.completion_tokens == 6 and len(done.choices[0].text) == 6
    assert done.choices[0].finish_reason == "length"

    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi " * 30}], max_tokens=4
    )
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 4

    stream = client.completions.create(
        model=MODEL, prompt="stream me " * 20, max_tokens=5, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) == 5 and chunks[-1].usage.completion_tokens == 5

    cstream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "go " * 30}], max_tokens=3, stream=True
    )
    deltas = [c.choices[0].delta for c in cstream]
    assert deltas[0].role == "assistant" and sum(1 for d in deltas if d.content) == 3
    # every path released its in-flight state (the handler ends just after the last byte)
    assert eventually(
        lambda: gw.local.num_tracked == 0 and all(b.in_flight == 0 for b in gw.backends)
    )
    assert gw.cfg.view_source == view_source


def _hold(client: openai.OpenAI, prompt: str):
    """A streamed request that keeps its instance busy until the caller closes it: its first chunk
    has arrived (so the gateway has dispatched it), and 20,000 tokens take >= 30 s at speed 10, far
    longer than the test needs it (the test checks that it is still in flight after the probe)."""
    stream = client.completions.create(model=MODEL, prompt=prompt, max_tokens=20_000, stream=True)
    next(iter(stream))
    return stream


def _engines_idle(urls) -> bool:
    """Every engine's own /metrics says nothing runs or waits (the held streams were aborted)."""
    import urllib.request

    for u in urls:
        text = urllib.request.urlopen(f"{u}/metrics", timeout=5).read().decode()
        gauges = ("vllm:num_requests_running{", "vllm:num_requests_waiting{")
        if any(
            line.startswith(gauges) and float(line.rsplit(" ", 1)[1]) != 0
            for line in text.splitlines()
        ):
            return False
    return True


@pytest.mark.parametrize("view_source", ["router-local", "kv-events"])
def test_lmetric_sends_a_repeated_prefix_to_the_instance_that_holds_it(loop_thread, view_source):
    """Busy instances 0 and 1 push a long prompt onto instance 2; its follow-ups go back there,
    although instance 0 (the lowest index, LMetric's tie-break) is idle again by then.

    Each precondition is waited for, not timed: the holds are open until the probe has been routed
    (and are checked to be), and the follow-ups start once the gateway sees every instance idle
    and (with KV events) instance 2 holding the prefix. Under load the timed version (60-token
    holds, then a 0.3 s sleep) sent the probe to instance 0 when the holds ended first."""
    urls, endpoints = start_engines(loop_thread, 3, speed=10, kv=view_source == "kv-events")
    url, gw = start_gateway(loop_thread, urls, kv_events=endpoints, policy="lmetric")
    client = _client(url)
    holds = [_hold(client, f"busy {i} " * 50) for i in range(2)]
    assert [b.in_flight for b in gw.backends] == [1, 1, 0]
    shared = "You are a careful assistant. Answer briefly. " * 40  # 1,800 bytes
    first = client.with_raw_response.completions.create(
        model=MODEL, prompt=shared + "Q0", max_tokens=2
    )
    assert first.headers["x-wildserve-backend"] == "2"
    # the holds were in flight while the probe was routed: they still are
    assert [b.in_flight for b in gw.backends] == [1, 1, 0]
    for stream in holds:  # the client leaves; the gateway drops the upstream, the engine aborts
        stream.close()
    assert eventually(lambda: all(b.in_flight == 0 for b in gw.backends))
    assert eventually(lambda: _engines_idle(urls), timeout=10)
    from wildserve.blocks import token_block_hashes

    hashes = token_block_hashes((shared + "Q9").encode(), 16)
    if gw.kv_index is not None:  # the polled load and the engines' KV events have caught up
        assert eventually(
            lambda: (
                all(s.num_running == 0 and s.num_waiting == 0 for s in gw.views.loads)
                and gw.kv_index.match_all(hashes)[2] == len(shared) // 16
            ),
            timeout=10,
        )
    for q in range(1, 4):
        r = client.with_raw_response.completions.create(
            model=MODEL, prompt=shared + f"Q{q}", max_tokens=2
        )
        assert r.headers["x-wildserve-backend"] == "2"
        assert r.parse().usage.prompt_tokens_details.cached_tokens >= len(shared) // 16 * 16
    if gw.kv_index is not None:  # the engines' own events say instance 2 holds the prefix
        assert gw.kv_index.match_all(hashes) == [0, 0, len(shared) // 16]
    # an unrelated prompt on an idle cluster goes to the lowest index, as LMetric's tie-break says
    assert eventually(lambda: all(b.in_flight == 0 for b in gw.backends))
    other = client.with_raw_response.completions.create(model=MODEL, prompt="z" * 900, max_tokens=2)
    assert other.headers["x-wildserve-backend"] == "0"


def test_round_robin_ignores_the_prefix(loop_thread):
    urls, _ = start_engines(loop_thread, 3)
    url, _ = start_gateway(loop_thread, urls, policy="round-robin")
    client = _client(url)
    seen = [
        client.with_raw_response.completions.create(
            model=MODEL, prompt="same " * 50, max_tokens=1
        ).headers["x-wildserve-backend"]
        for _ in range(6)
    ]
    assert seen == ["0", "1", "2", "0", "1", "2"]


def test_gateway_metrics_count_requests_and_decisions(loop_thread):
    urls, _ = start_engines(loop_thread, 3)
    url, _ = start_gateway(loop_thread, urls)
    client = _client(url)
    for i in range(5):
        client.completions.create(model=MODEL, prompt=f"p{i} " * 20, max_tokens=1)
    import urllib.request

    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    sent = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("wildserve_gateway_requests_total{")
    )
    assert sent == 5
    assert "wildserve_gateway_routing_decision_seconds_count 5.0" in text
    assert "wildserve_gateway_in_flight{" in text
    assert "wildserve_gateway_zero_score_decisions_total" in text
