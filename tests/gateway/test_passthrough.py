"""/tokenize, /detokenize, /version and /v1/models through the gateway, as vLLM answers them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai

from tests.gateway.conftest import start_engines, start_gateway
from wildserve.gateway.tokens import ByteTokenizer, prompt_token_ids

PROMPT = "the system prompt every follow-up of this session shares, " * 8


def _call(url: str, path: str, body: dict | None = None) -> tuple[int, dict, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), resp.headers.get("x-wildserve-backend")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers.get("x-wildserve-backend")


def test_tokenize_goes_where_the_prompt_would_be_routed(loop_thread):
    urls, events = start_engines(loop_thread, 2, speed=1e6, kv=True)
    gw_url, gw = start_gateway(loop_thread, urls, kv_events=events, kv_replay=False)
    client = openai.OpenAI(base_url=f"{gw_url}/v1", api_key="x", max_retries=0, timeout=30)
    first = client.with_raw_response.completions.create(
        model="qwen2.5-7b", prompt=PROMPT, max_tokens=2
    )
    holder = first.headers["x-wildserve-backend"]
    status, body, backend = _call(gw_url, "/tokenize", {"prompt": PROMPT + "next?"})
    assert status == 200 and backend == holder  # the engine holding the prefix tokenizes it
    assert body["tokens"] == list(
        prompt_token_ids({"prompt": PROMPT + "next?"}, False, gw.tokenizer)
    )
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    status, body, _ = _call(gw_url, "/tokenize", chat)
    assert status == 200 and body["tokens"] == list(prompt_token_ids(chat, True, ByteTokenizer()))
    status, body, _ = _call(gw_url, "/detokenize", {"tokens": list(b"hello")})
    assert status == 200 and body == {"prompt": "hello"}
    status, body, _ = _call(gw_url, "/detokenize", {"tokens": "x"})
    assert status == 400 and "tokens" in body["error"]["message"]  # the engine's own error


def test_side_routes_skip_a_dead_backend_and_spread_over_healthy_ones(loop_thread):
    urls, _ = start_engines(loop_thread, 2, speed=1e6)
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    gw_url, gw = start_gateway(loop_thread, [dead, *urls], health_interval_s=60)
    seen = set()
    for _ in range(4):
        status, body, backend = _call(gw_url, "/version")
        assert status == 200 and body["version"].startswith("wildserve-")
        seen.add(backend)
    assert seen == {"1", "2"}  # the dead one fails to connect and the next answers
    status, body, _ = _call(gw_url, "/v1/models")
    assert status == 200 and body["data"][0]["id"] == "qwen2.5-7b"
    for b in gw.backends:
        b.healthy = False
    status, body, _ = _call(gw_url, "/version")
    assert status == 503 and body["error"]["type"] == "service_unavailable"
