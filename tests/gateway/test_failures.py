"""Failures: killed, hung and restarted engines, bad requests, no backend; nothing leaks."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request

import openai
import pytest

from tests.gateway.conftest import eventually, start_gateway

MODEL = "qwen2.5-7b"


def _client(url: str, timeout: float = 30) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=timeout)


def _released(gw) -> bool:
    return gw.local.num_tracked == 0 and all(b.in_flight == 0 for b in gw.backends)


def _engine_args(speed: float = 1.0) -> list[str]:
    return ["engine", "--speed", str(speed), "--num-gpu-blocks", "4096"]


def test_engine_killed_mid_stream_ends_the_stream_with_an_error(loop_thread, processes):
    eng = processes(_engine_args(speed=1.0))
    url, gw = start_gateway(loop_thread, [eng.url], health_interval_s=0.2)
    client = _client(url)
    stream = client.completions.create(model=MODEL, prompt="x" * 200, max_tokens=5000, stream=True)
    got = 0
    t0 = time.monotonic()
    with pytest.raises(openai.APIError, match="failed mid-stream"):
        for _ in stream:
            got += 1
            if got == 3:
                eng.kill()
    assert got >= 3 and time.monotonic() - t0 < 20  # an error event, never a hang
    assert eventually(lambda: _released(gw))
    assert eventually(lambda: not gw.backends[0].healthy)


def test_hung_engine_hits_the_read_timeout(loop_thread, processes):
    eng = processes(_engine_args(speed=1.0))
    url, gw = start_gateway(loop_thread, [eng.url], read_timeout_s=1.0, health_interval_s=60)
    client = _client(url)
    stream = client.completions.create(model=MODEL, prompt="y" * 200, max_tokens=5000, stream=True)
    t0 = time.monotonic()
    try:
        with pytest.raises(openai.APIError, match="TimeoutError"):
            for i, _ in enumerate(stream):
                if i == 1:
                    eng.proc.send_signal(signal.SIGSTOP)
        assert time.monotonic() - t0 < 15
    finally:
        eng.proc.send_signal(signal.SIGCONT)
    assert eventually(lambda: _released(gw))


def test_connect_failure_is_retried_once_on_the_next_best_backend(loop_thread, processes):
    a = processes(_engine_args(speed=20))
    b = processes(_engine_args(speed=20))
    url, gw = start_gateway(
        loop_thread, [a.url, b.url], health_interval_s=60
    )  # no ejection by checks
    client = _client(url)
    prompt = "shared prefix words " * 30
    first = client.with_raw_response.completions.create(model=MODEL, prompt=prompt, max_tokens=1)
    assert first.headers["x-wildserve-backend"] == "0"
    a.kill()
    again = client.with_raw_response.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    assert (
        again.headers["x-wildserve-backend"] == "1"
    )  # A (holding the prefix) refused: retried on B
    assert again.parse().usage.completion_tokens == 2
    assert not gw.backends[0].healthy  # the failed connection ejected A at once
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    assert f'wildserve_gateway_errors_total{{backend="{a.url}",kind="connect"}} 1.0' in text
    b.kill()
    with pytest.raises(openai.APIStatusError) as err:  # both gone: nothing left to try
        client.completions.create(model=MODEL, prompt=prompt, max_tokens=1)
    assert err.value.status_code in (502, 503)
    assert eventually(lambda: _released(gw))


def test_engine_restart_is_ejected_then_readmitted(loop_thread, processes):
    a = processes(_engine_args(speed=20))
    b = processes(_engine_args(speed=20))
    # a killed engine refuses connections at once; the generous timeout only keeps the survivor from
    # being ejected when a loaded CI machine answers its health check slowly
    url, gw = start_gateway(
        loop_thread, [a.url, b.url], health_interval_s=0.1, health_timeout_s=3.0, unhealthy_after=2
    )
    client = _client(url)
    a.kill()
    assert eventually(lambda: not gw.backends[0].healthy)
    for _ in range(3):  # traffic flows to the survivor meanwhile
        r = client.with_raw_response.completions.create(
            model=MODEL, prompt="abc " * 20, max_tokens=1
        )
        assert r.headers["x-wildserve-backend"] == "1"
    a.start()  # same port
    assert eventually(lambda: gw.backends[0].healthy, timeout=15)
    r = client.with_raw_response.completions.create(model=MODEL, prompt="new " * 20, max_tokens=1)
    assert r.headers["x-wildserve-backend"] == "0"  # idle and re-admitted: lowest index wins ties
    assert eventually(lambda: _released(gw))


def test_all_backends_down_gives_503(loop_thread):
    url, gw = start_gateway(
        loop_thread, ["http://127.0.0.1:9", "http://127.0.0.1:19"], health_interval_s=0.05,
        health_timeout_s=0.2, unhealthy_after=1,
    )  # fmt: skip
    assert eventually(lambda: not any(b.healthy for b in gw.backends))
    client = _client(url)
    with pytest.raises(openai.APIStatusError) as err:
        client.completions.create(model=MODEL, prompt="hello", max_tokens=1)
    assert err.value.status_code == 503
    assert err.value.body["type"] == "service_unavailable"
    health = urllib.request.Request(f"{url}/health")
    with pytest.raises(urllib.error.HTTPError) as h:
        urllib.request.urlopen(health)
    assert h.value.code == 503
    assert _released(gw)


def _post(url: str, data: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_requests_get_openai_errors_without_reaching_a_backend(loop_thread):
    url, gw = start_gateway(
        loop_thread, ["http://127.0.0.1:9"], max_body_bytes=4096, health_interval_s=60
    )
    cases = {
        b"{not json": 400,
        b"[1, 2]": 400,
        b'{"model": "m", "max_tokens": 3}': 400,
        b'{"model": "m", "prompt": 42}': 400,
        json.dumps({"model": "m", "prompt": "x" * 10_000}).encode(): 413,
    }
    for data, status in cases.items():
        code, body = _post(f"{url}/v1/completions", data)
        assert code == status, data[:40]
        assert set(body["error"]) == {"message", "type", "param", "code"}
    code, body = _post(f"{url}/v1/chat/completions", b'{"model": "m", "messages": []}')
    assert code == 400 and "messages" in body["error"]["message"]
    assert _released(gw) and gw.backends[0].healthy  # none of these touched the backend
