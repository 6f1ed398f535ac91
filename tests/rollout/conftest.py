"""Tiny Llama-config models built in the test: real transformers code, random weights."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# tiny models gain nothing from a second thread, and OpenMP spin-waits on a busy 2-core machine
# made these tests several times slower
torch.set_num_threads(1)


def tiny_llama(seed: int, vocab: int = 32, layers: int = 2, hidden: int = 32, scale: float = 1.0):
    """A 2-layer Llama with a small vocabulary; ``scale`` sharpens its next-token distributions."""
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=0,
    )
    torch.manual_seed(seed)  # transformers initializes weights from torch's global RNG
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model


@pytest.fixture(scope="module")
def target_model():
    return tiny_llama(seed=1, scale=40.0)


@pytest.fixture(scope="module")
def draft_model():
    return tiny_llama(seed=2, layers=1, scale=40.0)
