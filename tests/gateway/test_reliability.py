"""Failure modes a new user met (issue 22), each reproduced first: resetting backends, engines
killed while streams queue, model names, error events, rejections, histograms, bad shapes.
After every one the gateway's in-flight counts are back to zero."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import urllib.error
import urllib.request

import openai
import pytest

from tests.gateway.conftest import eventually, start_engines, start_gateway

MODEL = "qwen2.5-7b"


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


def _released(gw) -> bool:
    return gw.local.num_tracked == 0 and all(b.in_flight == 0 for b in gw.backends)


def _metrics(url: str) -> str:
    return urllib.request.urlopen(f"{url}/metrics").read().decode()


def _sample(text: str, prefix: str) -> float:
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(prefix))


def _request(url: str, data: bytes | None = None, method: str | None = None):
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


class ResettingBackend:
    """Answers GETs like an engine (health, models) and resets every POST (SO_LINGER 0)."""

    def __init__(self, lt) -> None:
        self.num_resets = 0
        self.server = lt.run(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        lt.runners.append(self)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"POST"):
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.num_resets += 1
                writer.transport.abort()
                return
            body = b"{}"
            if b"/v1/models" in head.split(b"\r\n", 1)[0]:
                body = json.dumps({"object": "list", "data": [{"id": MODEL}]}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            await writer.drain()

    async def cleanup(self) -> None:
        self.server.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_resetting_backend_is_retried_on_the_next_one_and_counted(loop_thread, stream):
    bad = ResettingBackend(loop_thread)
    urls, _ = start_engines(loop_thread, 1)
    url, gw = start_gateway(loop_thread, [bad.url, *urls], health_interval_s=60)
    assert eventually(lambda: all(b.models is not None for b in gw.backends))
    client = _client(url)
    r = client.with_raw_response.completions.create(
        model=MODEL, prompt="hello " * 40, max_tokens=3, stream=stream
    )
    assert r.headers["x-wildserve-backend"] == "1"  # backend 0 (idle, lowest index) reset
    if stream:
        assert sum(1 for c in r.parse() if c.choices) == 3
    else:
        assert r.parse().usage.completion_tokens == 3
    assert bad.num_resets == 1
    text = _metrics(url)
    assert _sample(text, f'wildserve_gateway_errors_total{{backend="{bad.url}",kind="reset"}}') == 1
    assert not gw.backends[0].healthy  # ejected until a health check re-admits it
    assert eventually(lambda: _released(gw))


def test_a_retry_is_recorded_in_the_policy_state_of_the_backend_it_went_to(loop_thread):
    """sglang-cache-aware keys its prefix trees by backend id: the retry's dispatch lands in the
    tree of the backend that answered, not in the tree at that backend's position among the
    candidates (by position it went into backend 0's tree, the one that reset)."""
    bad = ResettingBackend(loop_thread)
    urls, _ = start_engines(loop_thread, 2)
    url, gw = start_gateway(
        loop_thread, [bad.url, *urls], policy="sglang-cache-aware", health_interval_s=60
    )
    assert eventually(lambda: all(b.models is not None for b in gw.backends))
    client = _client(url)
    prompt = "a shared system prompt " * 20
    r = client.with_raw_response.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    assert r.headers["x-wildserve-backend"] == "1"  # 0 (idle, lowest index) reset
    assert bad.num_resets == 1 and not gw.backends[0].healthy
    hashes = gw.route_request({"prompt": prompt}, chat=False).block_hashes
    trees = gw.policy.trees
    assert trees[1].match(hashes) == len(hashes) > 0  # the retry went to 1 and is recorded there
    assert trees[0].match(hashes) == len(hashes)  # the failed attempt, on 0
    assert 2 not in trees or trees[2].match(hashes) == 0
    # with 0 still ejected, the prefix follows backend 1 although 2 is just as idle
    r = client.with_raw_response.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    assert r.headers["x-wildserve-backend"] == "1"
    assert eventually(lambda: _released(gw))


def test_engine_killed_while_streams_queue_retries_those_with_no_token(loop_thread, processes):
    """Three one-sequence engines, three streams each: killing one leaves one stream mid-way (an
    error event, then [DONE]) and two queued ones, which finish on the others."""
    args = ["engine", "--speed", "0.5", "--num-gpu-blocks", "4096", "--max-num-seqs", "1"]
    engines = [processes(args) for _ in range(3)]
    url, gw = start_gateway(
        loop_thread, [e.url for e in engines], policy="round-robin", health_interval_s=0.2
    )
    client = _client(url)
    progress = [0] * 9  # tokens received so far, per request
    errors: list[str | None] = [None] * 9

    def one(i: int) -> None:
        try:
            for chunk in client.completions.create(
                model=MODEL, prompt=f"request {i} " * 30, max_tokens=40, stream=True
            ):
                progress[i] += sum(1 for c in chunk.choices if c.text)
        except openai.APIError as exc:
            errors[i] = str(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(9)]
    for i, t in enumerate(threads):  # in order: round-robin puts requests 0, 3, 6 on engine 0
        t.start()  # the next starts once this one is sent upstream (a fixed sleep raced under load)
        assert eventually(lambda n=i + 1: len(gw.active) == n, timeout=10)
    assert eventually(lambda: all(b.in_flight == 3 for b in gw.backends), timeout=10)
    assert eventually(lambda: progress[0] > 0, timeout=10)  # engine 0 streams request 0 ...
    engines[0].kill()
    assert progress[3] == progress[6] == 0  # ... while 3 and 6 wait behind it, no token yet
    for t in threads:
        t.join(60)
    results = list(zip(progress, errors, strict=True))
    assert errors[0] is not None and "mid-stream" in errors[0], results
    assert all(err is None and n == 40 for n, err in results[1:]), results  # 3, 6 retried
    assert eventually(lambda: _released(gw), timeout=10)


def test_error_event_is_followed_by_done(loop_thread, processes):
    eng = processes(["engine", "--speed", "1", "--num-gpu-blocks", "4096"])
    url, gw = start_gateway(loop_thread, [eng.url], health_interval_s=60)
    body = json.dumps({"model": MODEL, "prompt": "x" * 100, "max_tokens": 2000, "stream": True})
    req = urllib.request.Request(f"{url}/v1/completions", data=body.encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    lines = []
    with urllib.request.urlopen(req, timeout=30) as resp:
        for line in resp:
            lines.append(line.strip())
            if len(lines) == 6:
                eng.kill()
    events = [x for x in lines if x.startswith(b"data: ")]
    assert b'"error"' in events[-2] and events[-1] == b"data: [DONE]"
    assert eventually(lambda: _released(gw))


def test_model_names_are_checked_like_openai(loop_thread):
    urls, _ = start_engines(loop_thread, 2)
    url, gw = start_gateway(loop_thread, urls, health_interval_s=60)
    assert eventually(lambda: all(b.models == {MODEL} for b in gw.backends))
    client = _client(url)
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="gpt-4o", prompt="hi", max_tokens=1)
    assert err.value.body["code"] == "model_not_found" and "gpt-4o" in err.value.body["message"]
    status, _, raw = _request(f"{url}/v1/completions", b'{"prompt": "hi", "max_tokens": 1}')
    assert status == 400 and json.loads(raw)["error"]["param"] == "model"
    # the engines themselves: unknown -> 404 as well; absent -> their served model (as vLLM)
    status, _, raw = _request(f"{urls[0]}/v1/completions", b'{"model": "x", "prompt": "hi"}')
    assert status == 404 and json.loads(raw)["error"]["code"] == "model_not_found"
    status, _, _ = _request(f"{urls[0]}/v1/completions", b'{"prompt": "hi", "max_tokens": 1}')
    assert status == 200
    text = _metrics(url)
    assert _sample(text, 'wildserve_gateway_rejected_total{reason="model_not_found"}') == 1
    assert _sample(text, 'wildserve_gateway_rejected_total{reason="bad_request"}') == 1
    assert _sample(text, "wildserve_gateway_requests_total") == 0  # neither reached a backend
    assert _released(gw)


def test_every_rejection_is_counted_and_answered_in_json(loop_thread):
    urls, _ = start_engines(loop_thread, 1)
    url, gw = start_gateway(loop_thread, urls, max_body_bytes=4096, health_interval_s=60)
    cases = [
        ("POST", "/v1/completions", b"{not json", 400),
        ("POST", "/v1/completions", json.dumps({"model": MODEL, "prompt": "x" * 9000}), 413),
        ("POST", "/v1/completions", json.dumps({"model": MODEL, "prompt": "x", "n": 2}), 400),
        ("POST", "/v1/completions", json.dumps({"model": MODEL, "prompt": ["a", "b"]}), 400),
        ("GET", "/v1/nothing", None, 404),
        ("GET", "/v1/completions", None, 405),
    ]
    for base in (url, urls[0]):  # the gateway and the emulated engine answer alike
        for method, path, data, status in cases:
            if base != url and status == 413:
                continue  # the engine's own limit is 64 MiB
            raw = data.encode() if isinstance(data, str) else data
            code, headers, body = _request(base + path, raw, method)
            assert code == status, (base, path, data)
            assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}
            if status == 405:
                assert "POST" in headers["Allow"]
    status, _, body = _request(f"{url}/v1/completions", json.dumps(
        {"model": MODEL, "prompt": "x", "n": 2}).encode())  # fmt: skip
    assert b"'n' must be 1" in body
    status, _, body = _request(f"{url}/v1/completions", json.dumps(
        {"model": MODEL, "prompt": ["a", "b"], "max_tokens": 1}).encode())  # fmt: skip
    assert b"batch of 2 prompts" in body
    for prompt in (["one prompt"], [[1, 2, 3, 4]], [5, 6, 7]):  # a batch of one, token ids
        status, _, body = _request(f"{url}/v1/completions", json.dumps(
            {"model": MODEL, "prompt": prompt, "max_tokens": 1}).encode())  # fmt: skip
        assert status == 200, body
    text = _metrics(url)
    reasons = {"bad_request": 3, "too_large": 1, "not_found": 1, "method_not_allowed": 1}
    for reason, n in reasons.items():
        assert _sample(text, f'wildserve_gateway_rejected_total{{reason="{reason}"}}') == n + (
            2 if reason == "bad_request" else 0  # the two messages checked above
        ), reason
    assert _released(gw)


def test_per_backend_ttft_and_latency_histograms(loop_thread):
    urls, _ = start_engines(loop_thread, 2)
    url, gw = start_gateway(loop_thread, urls, policy="round-robin", health_interval_s=60)
    client = _client(url)
    for i in range(4):
        list(client.completions.create(model=MODEL, prompt=f"p{i} " * 20, max_tokens=3,
                                       stream=bool(i % 2)))  # fmt: skip
    text = _metrics(url)
    for u in urls:
        for name in ("wildserve_gateway_ttft_seconds", "wildserve_gateway_request_seconds"):
            assert _sample(text, f'{name}_count{{backend="{u}"}}') == 2
            assert _sample(text, f'{name}_bucket{{backend="{u}",le="+Inf"}}') == 2
            assert _sample(text, f'{name}_sum{{backend="{u}"}}') > 0
    assert _released(gw)
