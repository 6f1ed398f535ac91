"""Two real vLLM CPU engines and the gateway in front (``start_fleet``), and the tests' helpers.

Imported only by the tests ``make test-vllm`` collects (``conftest.py``). Every process is started
in its own process group and stopped by that pid when the fleet closes, also when a test or the
start fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = Path(
    os.environ.get("WILDSERVE_VLLM_MODEL", REPO / ".venv-vllm/models/smollm2-135m-instruct")
)
LOG_DIR = Path(os.environ.get("WILDSERVE_VLLM_LOGS", REPO / "results/test-vllm"))
sys.path.insert(0, str(REPO / "benchmarks"))
import engine_vs_vllm  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

# the engines run with the fidelity benchmark's sizes and its recording scheduler, so its short
# form needs no third engine; a small KV budget (64 blocks) lets a few long prompts force evictions
SIZES = engine_vs_vllm.Sizes()
NUM_BLOCKS = SIZES.num_gpu_blocks
BLOCK_SIZE = SIZES.block_size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: dict | None = None, timeout: float = 120.0) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of a GET, or of a POST when ``body`` is given."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


_SAMPLE = re.compile(r"^([a-z_:]+)\{([^}]*)\}\s+(\S+)$", re.MULTILINE)


def metrics(url: str) -> dict[tuple[str, str], float]:
    """Prometheus samples as {(name, labels text): value} (labels in the server's order)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(m[1], m[2]): float(m[3]) for m in _SAMPLE.finditer(text)}


def metric(url: str, name: str, label: str = "") -> float:
    """Sum of ``name`` over the samples whose labels contain ``label``."""
    return sum(v for (n, labels), v in metrics(url).items() if n == name and label in labels)


def eventually(cond, timeout: float = 30.0, every: float = 0.2):
    """Poll ``cond`` until it returns something truthy; that value, or the last one at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


@dataclass
class Fleet:
    engines: list  # VLLMEngine
    model: str
    logs: Path
    traces: list[Path]  # each engine's scheduler trace (benchmarks/vllm_probe.py)
    gateways: list[subprocess.Popen] = field(default_factory=list)  # all stopped at the end
    gateway_url: str = ""

    def start_gateway(self, name: str, port: int | None = None) -> tuple[subprocess.Popen, str]:
        """Another gateway in front of the same engines (a process of its own)."""
        port = port or free_port()
        args = [
            sys.executable,
            "-m",
            "wildserve.cli",
            *gateway_args(self.engines, port, self.model),
        ]
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
            )  # fmt: skip
        self.gateways.append(proc)
        from wildserve.gateway.vllm_cpu import wait_healthy

        wait_healthy(f"http://127.0.0.1:{port}", proc, 60)
        return proc, f"http://127.0.0.1:{port}"


def gateway_args(engines: list, port: int, model: str) -> list[str]:
    """``wildserve gateway`` in front of ``engines`` (the README's laptop recipe, plus quick
    health checks so that the kill test does not wait long)."""
    args = ["gateway", "--policy", "lmetric", "--port", str(port), "--block-size", str(BLOCK_SIZE),
            "--tokenizer", model]  # fmt: skip
    for e in engines:
        args += ["--backend", e.url, "--kv-events", e.kv_events]
    return args + ["--health-interval", "0.5", "--health-timeout", "5", "--unhealthy-after", "2",
                   "--log-level", "info"]  # fmt: skip


@contextlib.contextmanager
def start_fleet():
    """Two probed engines (one core each) and a gateway; everything stopped on the way out."""
    from wildserve.gateway.vllm_cpu import stop_process_group

    if not (MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(f"{MODEL_DIR}: no converted model (make test-vllm converts it)")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    traces = [LOG_DIR / f"engine{i}-trace.jsonl" for i in range(2)]
    for t in traces:
        t.write_text("")
    ports = [
        {"port": free_port(), "kv_events_port": free_port(), "replay_port": free_port()}
        for _ in range(2)
    ]
    engines = [
        engine_vs_vllm.probe_engine(str(MODEL_DIR), SIZES, traces[i], core=i, **ports[i])
        for i in range(2)
    ]
    fleet = Fleet(engines, str(MODEL_DIR), LOG_DIR, traces)
    try:
        for i, e in enumerate(engines):
            e.start(LOG_DIR / f"engine{i}.log")
        for e in engines:
            e.wait_ready(600)
        fleet.gateway_url = fleet.start_gateway("gateway")[1]
        yield fleet
    finally:
        for p in fleet.gateways:
            stop_process_group(p, grace_s=5)
        for e in engines:
            e.stop()
