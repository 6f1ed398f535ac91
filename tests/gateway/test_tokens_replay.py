"""Prompt tokenization (bytes and a real HF tokenizer) and trace prompts that keep the prefix structure."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.gateway.conftest import engine_cfg
from wildserve.blocks import token_block_hashes
from wildserve.gateway.config import ReplayConfig
from wildserve.gateway.replay import PromptBuilder, replay, summarize_records
from wildserve.gateway.tokens import (
    ByteTokenizer,
    HFTokenizer,
    PromptError,
    make_tokenizer,
    plain_chat,
    prompt_token_ids,
)
from wildserve.workload.request import Request

WORDS = [f"w{a}{b}" for a in "abcdefghij" for b in "klmnopqrst"]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A real Hugging Face tokenizer (word level, trained here) with a chat template beside it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        [" ".join(WORDS)] * 3, trainers.WordLevelTrainer(special_tokens=["[UNK]"])
    )
    d = tmp_path_factory.mktemp("tok")
    tok.save(str(d / "tokenizer.json"))
    template = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}<assistant>"
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return d


def test_byte_tokens_and_request_shapes():
    t = ByteTokenizer()
    assert prompt_token_ids({"prompt": "héllo"}, False, t) == "héllo".encode()
    assert prompt_token_ids({"prompt": [5, 6, 7]}, False, t) == [5, 6, 7]
    assert prompt_token_ids({"prompt": ["one"]}, False, t) == b"one"
    chat = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert (
        prompt_token_ids(chat, True, t) == plain_chat([{"role": "user", "content": "hi"}]).encode()
    )
    for body, is_chat in (({}, False), ({"prompt": 3}, False), ({"messages": []}, True),
                          ({"messages": ["x"]}, True), ({"messages": [{"content": 5}]}, True)):  # fmt: skip
        with pytest.raises(PromptError):
            prompt_token_ids(body, is_chat, t)


def test_hf_tokenizer_and_chat_template(hf_dir):
    t = make_tokenizer(str(hf_dir))
    assert isinstance(t, HFTokenizer) and t.has_chat_template
    ids = t.encode("wak wbl wak")
    assert len(ids) == 3 and ids[0] == ids[2] != ids[1]
    rendered = t.render_chat([{"role": "user", "content": "wak"}])
    assert rendered == "<user> wak <assistant>"
    from wildserve.errors import ConfigError

    with pytest.raises(ConfigError, match="not found"):
        make_tokenizer(str(hf_dir / "missing.json"))


@pytest.mark.parametrize("kind", ["bytes", "hf"])
def test_trace_prompts_reproduce_the_block_structure(kind, hf_dir):
    tok = ByteTokenizer() if kind == "bytes" else HFTokenizer(hf_dir)
    builder = PromptBuilder(tok, seed=3)
    a = Request(0, 0.0, 100, 5, hash_ids=(1, 2, 3, 4), block_size=32)  # last block partial
    b = Request(1, 1.0, 96, 5, hash_ids=(1, 2, 9), block_size=32)
    c = Request(2, 2.0, 70, 5, hash_ids=(1,), block_size=32)  # beyond the ids: own filler
    ta, tb, tc = (list(tok.encode(builder.prompt(r))) for r in (a, b, c))
    assert (len(ta), len(tb), len(tc)) == (100, 96, 70)  # lengths match in tokens
    ha, hb, hc = (token_block_hashes(t, 32) for t in (ta, tb, tc))
    assert ha[:2] == hb[:2] and ha[2] != hb[2]  # shared ids 1, 2 then a different one
    assert hc[0] == ha[0] and hc[1] != ha[1]
    assert builder.prompt(a) == PromptBuilder(tok, seed=3).prompt(a)  # same hash, same text


def test_replay_against_an_engine_measures_client_side_latency(loop_thread):
    from wildserve.gateway.engine_server import make_engine_app

    port = loop_thread.serve(make_engine_app(engine_cfg(speed=50)))
    reqs = [
        Request(i, 0.05 * i, 300, 4, hash_ids=(7, 8, 100 + i), block_size=128) for i in range(8)
    ]
    cfg = ReplayConfig(url=f"http://127.0.0.1:{port}", timeout_s=30)
    records = asyncio.run(replay(reqs, cfg, PromptBuilder()))
    summary = summarize_records(records, ttft_slo_s=5, tpot_slo_s=0.1, wall_s=1.0)
    assert summary["finished"] == 8 and summary["errors"] == 0
    assert all(r.num_output_tokens == 4 for r in records)
    assert all(r.finish_s > r.first_token_s > r.arrival_s for r in records)
    assert records[-1].arrival_s >= 0.3  # sent on the trace's clock
    assert summary["hit_ratio"] > 0.5  # two shared 128-token blocks of 300 after the first request


def test_replay_cli_writes_the_simulate_json(loop_thread, tmp_path):
    from typer.testing import CliRunner

    from wildserve.cli import _register, app
    from wildserve.gateway.engine_server import make_engine_app

    _register()
    port = loop_thread.serve(make_engine_app(engine_cfg(speed=200)))
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, [
        "replay", "--url", f"http://127.0.0.1:{port}", "--max-requests", "6",
        "--rate-scale", "100", "--label", "direct", "--output-json", str(out),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    s = doc["policies"]["direct"]
    assert s["finished"] + s["errors"] == 6 and s["errors"] == 0
    assert {"ttft", "tpot", "e2e", "hit_ratio", "slo_attainment"} <= set(s)
