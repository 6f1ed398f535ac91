"""The README's real-vLLM laptop recipe runs exactly what ``make test-vllm`` runs and passes.

``tests/integration_vllm`` starts its engines with ``VLLMEngine.command()`` and its gateway with
``gateway_args``; this checks, without vLLM, that the README's commands say the same.
"""

from __future__ import annotations

import json
import re
import shlex

from tests.integration_vllm.fleet import REPO, gateway_args
from wildserve.gateway.vllm_cpu import VLLMEngine

MARKER = "<!-- vllm-laptop-recipe"


def _recipe() -> list[str]:
    """The recipe's shell lines, continuations joined."""
    text = (REPO / "README.md").read_text()
    block = text[text.index(MARKER) :].split("```bash\n", 1)[1].split("```", 1)[0]
    return block.replace("\\\n", " ").splitlines()


def _expand(line: str, **values: str) -> list[str]:
    for name, value in values.items():
        line = line.replace(f"${name}", value)
    return shlex.split(line)


def _split_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while "=" in words[0] and not words[0].startswith("-"):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    return env, words


def test_engine_commands_are_the_harness_commands():
    lines = _recipe()
    model = _expand(lines[0])[0].split("=", 1)[1]
    engine_line = next(x for x in lines if "vllm.entrypoints.openai.api_server" in x)
    for i in (0, 1):
        env, words = _split_env(_expand(engine_line.rstrip(" &"), M=model, i=str(i)))
        ours = VLLMEngine(model, 8100 + i, 5550 + i, 5560 + i, core=i, max_model_len=2048)
        expected = ours.command(".venv-vllm/bin/python")
        k = expected.index("--kv-events-config")
        assert words[: k + 1] == expected[: k + 1] and words[k + 2 :] == expected[k + 2 :]
        assert json.loads(words[k + 1]) == json.loads(expected[k + 1])
        assert env.items() <= ours.env().items()
        assert set(env) == {"VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "HF_HUB_OFFLINE"}


def test_gateway_command_is_the_harness_gateway():
    lines = _recipe()
    model = _expand(lines[0])[0].split("=", 1)[1]
    words = _expand(next(x for x in lines if "wildserve gateway" in x).rstrip(" &"), M=model)
    assert words[0] == ".venv-vllm/bin/wildserve"
    engines = [VLLMEngine(model, 8100 + i, 5550 + i) for i in (0, 1)]
    ours = gateway_args(engines, 8000, model)
    assert words[1:] == ours[: len(words) - 1]
    assert all(re.match(r"--(health|unhealthy|log)", w) for w in ours[len(words) - 1 :: 2])
