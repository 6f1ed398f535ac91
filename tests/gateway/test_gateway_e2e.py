"""The official ``openai`` client through the gateway to three emulated engines on 127.0.0.1."""

from __future__ import annotations

import threading
import time

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


def _hold(client: openai.OpenAI, prompt: str, started: threading.Event, out: list) -> None:
    """A long streamed request that keeps its instance busy until it ends (1,000 tokens: ~1.5 s at
    speed 10; 60 lasted ~0.1 s, and on a loaded box the first hold was over before the probe)."""
    stream = client.completions.create(model=MODEL, prompt=prompt, max_tokens=1000, stream=True)
    for i, _ in enumerate(stream):
        if i == 0:
            started.set()
    out.append(True)


@pytest.mark.parametrize("view_source", ["router-local", "kv-events"])
def test_lmetric_sends_a_repeated_prefix_to_the_instance_that_holds_it(loop_thread, view_source):
    """Busy instances 0 and 1 push a long prompt onto instance 2; its follow-ups go back there,
    although instance 0 (the lowest index, LMetric's tie-break) is idle again by then."""
    urls, endpoints = start_engines(loop_thread, 3, speed=10, kv=view_source == "kv-events")
    url, gw = start_gateway(loop_thread, urls, kv_events=endpoints, policy="lmetric")
    client = _client(url)
    held: list = []
    threads = []
    for i in range(2):
        started = threading.Event()
        t = threading.Thread(target=_hold, args=(client, f"busy {i} " * 50, started, held))
        t.start()
        started.wait(10)
        threads.append(t)
    shared = "You are a careful assistant. Answer briefly. " * 40  # 1,800 bytes
    first = client.with_raw_response.completions.create(
        model=MODEL, prompt=shared + "Q0", max_tokens=2
    )
    assert first.headers["x-wildserve-backend"] == "2"
    for t in threads:
        t.join(30)
    assert len(held) == 2
    time.sleep(0.3)  # KV events and metrics polls catch up
    for q in range(1, 4):
        r = client.with_raw_response.completions.create(
            model=MODEL, prompt=shared + f"Q{q}", max_tokens=2
        )
        assert r.headers["x-wildserve-backend"] == "2"
        assert r.parse().usage.prompt_tokens_details.cached_tokens >= len(shared) // 16 * 16
    if gw.kv_index is not None:  # the engines' own events say instance 2 holds the prefix
        from wildserve.blocks import token_block_hashes

        hashes = token_block_hashes((shared + "Q9").encode(), 16)
        assert gw.kv_index.match_all(hashes) == [0, 0, len(shared) // 16]
    # an unrelated prompt on an idle cluster goes to the lowest index, as LMetric's tie-break says
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
