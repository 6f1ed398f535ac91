"""The gateway in front of two real vLLM CPU engines (SmolLM2-135M): answers, token ids, prefix
affinity from KV events, evictions, replay, and an engine killed and restarted. Run by make test-vllm."""

from __future__ import annotations

import random

import openai
import pytest

from tests.integration_vllm.fleet import BLOCK_SIZE, NUM_BLOCKS, eventually, http, metric
from wildserve.gateway.tokens import make_tokenizer, prompt_token_ids

MODEL = "smollm2"
WORDS = [
    "cache", "block", "prefix", "router", "engine", "token", "batch", "stream", "queue", "memory",
    "latency", "request", "answer", "model", "layer", "shard", "replica", "kernel", "vector",
    "index", "graph", "search", "query", "budget", "window", "policy",
]  # fmt: skip


def text(seed: int, n: int = 300) -> str:
    """``n`` words no other seed produces as a prefix: a prompt that shares nothing by chance."""
    rng = random.Random(seed)
    return f"Document {seed}: " + " ".join(rng.choice(WORDS) for _ in range(n))


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)


def complete(url: str, prompt: str, max_tokens: int = 4):
    """A raw completion (headers tell the backend); greedy and exactly ``max_tokens`` long."""
    return client(url).with_raw_response.completions.create(
        model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0,
        extra_body={"ignore_eos": True},
    )  # fmt: skip


def routed_to(fleet, body: dict) -> str:
    """Where the gateway would send this prompt now (its /tokenize goes there; nothing dispatched)."""
    status, _, headers = http(f"{fleet.gateway_url}/tokenize", body)
    assert status == 200
    return headers["x-wildserve-backend"]


def hits(engine) -> float:
    return metric(engine.url, "vllm:prefix_cache_hits_total")


def full_block_tokens(n_tokens: int) -> int:
    """Prefix tokens vLLM can reuse: whole blocks, the last token always recomputed."""
    return (n_tokens - 1) // BLOCK_SIZE * BLOCK_SIZE


def test_completions_and_chat_answer_streamed_and_not(fleet):
    c = client(fleet.gateway_url)
    prompt = "The three primary colors are"
    full = c.completions.create(
        model=MODEL, prompt=prompt, max_tokens=12, temperature=0, extra_body={"ignore_eos": True}
    )
    assert full.usage.completion_tokens == 12 and full.choices[0].text.strip()
    streamed = c.completions.create(
        model=MODEL, prompt=prompt, max_tokens=12, temperature=0, stream=True,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    pieces = [ch.choices[0].text for ch in streamed if ch.choices]
    assert len(pieces) >= 2 and "".join(pieces) == full.choices[0].text  # greedy: same text

    messages = [{"role": "user", "content": "Name one planet."}]
    chat = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content
    stream = c.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=10, temperature=0, stream=True
    )
    deltas = [ch.choices[0].delta.content or "" for ch in stream if ch.choices]
    assert "".join(deltas) == chat.choices[0].message.content


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "Hello world, how are you today?"},
        {"prompt": text(1, 40)},
        {"messages": [{"role": "user", "content": "Hello world"}]},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": [{"type": "text", "text": "a"},
                                                   {"type": "text", "text": "b"}]},
                      {"role": "assistant", "content": "ok"},
                      {"role": "user", "content": "and then?"}]},
    ],
)  # fmt: skip
def test_gateway_token_ids_equal_vllms_tokenize(fleet, body):
    chat = "messages" in body
    ours = list(prompt_token_ids(body, chat, make_tokenizer(fleet.model)))
    for url in (fleet.engines[0].url, fleet.gateway_url):
        status, answer, _ = http(f"{url}/tokenize", body)
        assert status == 200 and answer["tokens"] == ours
    if chat:
        r = client(fleet.gateway_url).chat.completions.create(
            model=MODEL, messages=body["messages"], max_tokens=1
        )
    else:
        r = client(fleet.gateway_url).completions.create(
            model=MODEL, prompt=body["prompt"], max_tokens=1
        )
    assert r.usage.prompt_tokens == len(ours)


@pytest.mark.parametrize("kind", ["completions", "chat"])
def test_shared_prefix_goes_to_the_engine_holding_it_and_hits_there(fleet, kind):
    seed = 10 if kind == "completions" else 11
    shared = text(seed)
    tok = make_tokenizer(fleet.model)

    def send(i: int):
        if kind == "completions":
            body = {"prompt": f"{shared}\nQuestion {i}: why?"}
            r = complete(fleet.gateway_url, body["prompt"])
        else:
            body = {"messages": [{"role": "system", "content": shared},
                                 {"role": "user", "content": f"Question {i}: why?"}]}  # fmt: skip
            r = client(fleet.gateway_url).chat.completions.with_raw_response.create(
                model=MODEL, messages=body["messages"], max_tokens=4, temperature=0
            )
        return int(r.headers["x-wildserve-backend"]), r.parse(), body

    holder, _, _ = send(0)  # cold everywhere: lands on either engine, which then holds it
    # the shared text's whole blocks, less one for where it meets the template or the question
    common = full_block_tokens(len(tok.encode(shared))) - BLOCK_SIZE
    before = [hits(e) for e in fleet.engines]
    for i in range(1, 4):
        backend, answer, body = send(i)
        assert backend == holder
        assert answer.usage.prompt_tokens_details.cached_tokens >= common
    after = [hits(e) for e in fleet.engines]
    assert after[1 - holder] == before[1 - holder]  # nothing went to the other engine
    assert after[holder] - before[holder] >= 3 * common > 0
    assert len(prompt_token_ids(body, kind == "chat", tok)) > common


def test_a_late_gateway_loads_vllms_blocks_from_the_replay_endpoint(fleet):
    prompt = text(20)
    r = complete(fleet.engines[1].url, prompt)  # straight to engine 1, before the new gateway
    assert r.parse().usage.completion_tokens == 4
    _, url = fleet.start_gateway("gateway-late")
    label = f'backend="{fleet.engines[1].url}"'
    replayed = "wildserve_gateway_kv_event_replayed_batches_total"
    assert eventually(lambda: metric(url, replayed, label))
    num_blocks = len(make_tokenizer(fleet.model).encode(prompt, True)) // BLOCK_SIZE
    assert metric(url, "wildserve_gateway_kv_index_blocks", label) >= num_blocks > 0
    status, _, headers = http(f"{url}/tokenize", {"prompt": prompt + " more"})
    assert status == 200 and headers["x-wildserve-backend"] == "1"


def test_routing_follows_block_removed_after_evictions(fleet):
    target = fleet.engines[1]
    prompt = text(30)
    complete(target.url, prompt)  # engine 1 caches it; the gateway hears it from KV events only
    probe = {"prompt": prompt + " and a follow-up"}
    assert eventually(lambda: routed_to(fleet, probe) == "1")
    evicting = 0
    seed = 1000
    while evicting < 2 * NUM_BLOCKS * BLOCK_SIZE:  # twice the engine's KV: every old block goes
        r = complete(target.url, text(seed), max_tokens=1).parse()
        evicting += r.usage.prompt_tokens
        seed += 1
    # the prefix is nowhere now: both engines idle and cold for it, the tie goes to the lowest index
    assert eventually(lambda: routed_to(fleet, probe) == "0")
    # over twice the engine's blocks were stored: without the removals the index would hold them all
    blocks = metric(fleet.gateway_url, "wildserve_gateway_kv_index_blocks", target.url)
    assert 0 < blocks <= NUM_BLOCKS


def test_a_killed_engine_is_ejected_and_cleared_and_readmitted_after_restart(fleet):
    victim = fleet.engines[1]
    prompt = text(40)
    complete(victim.url, prompt)
    label = f'backend="{victim.url}"'
    gw = fleet.gateway_url
    assert eventually(lambda: metric(gw, "wildserve_gateway_kv_index_blocks", label) > 0)
    victim.kill()
    assert eventually(lambda: metric(gw, "wildserve_gateway_backend_healthy", label) == 0.0)
    assert metric(gw, "wildserve_gateway_kv_index_blocks", label) == 0  # its index was cleared
    for i in range(2):  # traffic goes to the survivor meanwhile, also for the victim's prefix
        assert complete(gw, prompt + f" {i}").headers["x-wildserve-backend"] == "0"
    victim.start(fleet.logs / "engine1-restarted.log")
    victim.wait_ready(600)
    assert eventually(lambda: metric(gw, "wildserve_gateway_backend_healthy", label) == 1.0)
    fresh = text(41)
    complete(victim.url, fresh)  # the new process caches a prefix; the gateway learns it
    assert eventually(lambda: routed_to(fleet, {"prompt": fresh + " next"}) == "1")
    r = complete(gw, fresh + " next")
    assert r.headers["x-wildserve-backend"] == "1"
    assert r.parse().usage.prompt_tokens_details.cached_tokens > 0
