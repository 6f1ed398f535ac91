"""``wildserve gateway | engine | replay``: the router, an emulated vLLM server, a trace replayer."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from wildserve.config import field_default as _d
from wildserve.config import field_help as _h
from wildserve.engine import EngineConfig
from wildserve.gateway.config import EngineServerConfig, GatewayConfig, ReplayConfig

_GW = {f.name: f for f in fields(GatewayConfig)}
_EN = {f.name: f for f in fields(EngineServerConfig)}
_EC = {f.name: f for f in fields(EngineConfig)}
_RP = {f.name: f for f in fields(ReplayConfig)}


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def gateway(
    backend: Annotated[list[str], typer.Option(help="backend base URL (repeat per backend)")],
    kv_events: Annotated[
        list[str] | None, typer.Option(help="ZMQ KV-event endpoint per backend, in order")
    ] = None,
    policy: Annotated[str, typer.Option(help=_h(_GW, "policy"))] = _d(_GW, "policy"),
    host: Annotated[str, typer.Option(help=_h(_GW, "host"))] = _d(_GW, "host"),
    port: Annotated[int, typer.Option(help=_h(_GW, "port"))] = _d(_GW, "port"),
    tokenizer: Annotated[str | None, typer.Option(help=_h(_GW, "tokenizer"))] = None,
    block_size: Annotated[int, typer.Option(help=_h(_GW, "block_size"))] = _d(_GW, "block_size"),
    prefix_index_blocks: Annotated[int, typer.Option(help=_h(_GW, "prefix_index_blocks"))] = _d(
        _GW, "prefix_index_blocks"
    ),
    max_body_bytes: Annotated[int, typer.Option(help=_h(_GW, "max_body_bytes"))] = _d(
        _GW, "max_body_bytes"
    ),
    connect_timeout: Annotated[float, typer.Option(help=_h(_GW, "connect_timeout_s"))] = _d(
        _GW, "connect_timeout_s"
    ),
    read_timeout: Annotated[float, typer.Option(help=_h(_GW, "read_timeout_s"))] = _d(
        _GW, "read_timeout_s"
    ),
    upstream_keepalive: Annotated[float, typer.Option(help=_h(_GW, "upstream_keepalive_s"))] = _d(
        _GW, "upstream_keepalive_s"
    ),
    max_attempts: Annotated[int, typer.Option(help=_h(_GW, "max_attempts"))] = _d(
        _GW, "max_attempts"
    ),
    health_interval: Annotated[float, typer.Option(help=_h(_GW, "health_interval_s"))] = _d(
        _GW, "health_interval_s"
    ),
    health_timeout: Annotated[float, typer.Option(help=_h(_GW, "health_timeout_s"))] = _d(
        _GW, "health_timeout_s"
    ),
    unhealthy_after: Annotated[int, typer.Option(help=_h(_GW, "unhealthy_after"))] = _d(
        _GW, "unhealthy_after"
    ),
    metrics_poll: Annotated[float, typer.Option(help=_h(_GW, "metrics_poll_s"))] = _d(
        _GW, "metrics_poll_s"
    ),
    kv_events_topic: Annotated[str, typer.Option(help=_h(_GW, "kv_events_topic"))] = _d(
        _GW, "kv_events_topic"
    ),
    kv_replay: Annotated[bool, typer.Option(help=_h(_GW, "kv_replay"))] = _d(_GW, "kv_replay"),
    log_level: Annotated[str, typer.Option(help="logging level")] = "warning",
) -> None:
    """Route OpenAI requests across backends with a routing policy (LMetric by default)."""
    from wildserve.gateway.proxy import make_gateway_app
    from wildserve.gateway.serve import run_forever
    from wildserve.routing import ROUTING_POLICIES

    _logging(log_level)
    ROUTING_POLICIES.get(policy)  # fail on a typo before binding
    cfg = GatewayConfig(
        backends=list(backend),
        kv_events=list(kv_events or []),
        policy=policy,
        host=host,
        port=port,
        tokenizer=tokenizer,
        block_size=block_size,
        prefix_index_blocks=prefix_index_blocks,
        max_body_bytes=max_body_bytes,
        connect_timeout_s=connect_timeout,
        read_timeout_s=read_timeout,
        upstream_keepalive_s=upstream_keepalive,
        max_attempts=max_attempts,
        health_interval_s=health_interval,
        health_timeout_s=health_timeout,
        unhealthy_after=unhealthy_after,
        metrics_poll_s=metrics_poll,
        kv_events_topic=kv_events_topic,
        kv_replay=kv_replay,
    )

    def ready(bound: int) -> None:
        logging.getLogger("wildserve.gateway").warning(
            "gateway on http://%s:%d, policy %s, views %s, %d backends",
            host, bound, policy, cfg.view_source, len(cfg.backends),
        )  # fmt: skip

    run_forever(lambda: make_gateway_app(cfg), host, port, ready)


def engine(
    model: Annotated[str, typer.Option(help=_h(_EN, "model"))] = _d(_EN, "model"),
    gpu: Annotated[str, typer.Option(help=_h(_EN, "gpu"))] = _d(_EN, "gpu"),
    tp: Annotated[int, typer.Option(help=_h(_EN, "tp"))] = _d(_EN, "tp"),
    cost_model: Annotated[str, typer.Option(help=_h(_EN, "cost_model"))] = _d(_EN, "cost_model"),
    speed: Annotated[float, typer.Option(help=_h(_EN, "speed"))] = _d(_EN, "speed"),
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free one)")] = 8001,
    served_model_name: Annotated[
        str | None, typer.Option(help=_h(_EN, "served_model_name"))
    ] = None,
    tokenizer: Annotated[str | None, typer.Option(help=_h(_EN, "tokenizer"))] = None,
    kv_events_port: Annotated[
        int | None, typer.Option(help="publish vLLM KV events on tcp://HOST:PORT (ZMQ PUB)")
    ] = None,
    kv_events_topic: Annotated[str, typer.Option(help=_h(_EN, "kv_events_topic"))] = _d(
        _EN, "kv_events_topic"
    ),
    kv_events_replay_port: Annotated[
        int | None,
        typer.Option(help="answer vLLM KV-event replay requests on tcp://HOST:PORT (ZMQ ROUTER)"),
    ] = None,
    block_size: Annotated[int, typer.Option(help=_h(_EC, "block_size"))] = _d(_EC, "block_size"),
    max_num_seqs: Annotated[int, typer.Option(help=_h(_EC, "max_num_seqs"))] = _d(
        _EC, "max_num_seqs"
    ),
    max_num_batched_tokens: Annotated[
        int, typer.Option(help=_h(_EC, "max_num_batched_tokens"))
    ] = _d(_EC, "max_num_batched_tokens"),
    num_gpu_blocks: Annotated[int | None, typer.Option(help=_h(_EC, "num_gpu_blocks"))] = None,
    log_level: Annotated[str, typer.Option(help="logging level")] = "warning",
) -> None:
    """Serve an emulated vLLM instance: the simulator's engine on the wall clock, OpenAI API."""
    from wildserve.gateway.engine_server import build_engine, make_engine_app
    from wildserve.gateway.serve import run_forever

    _logging(log_level)
    cfg = EngineServerConfig(
        model=model,
        gpu=gpu,
        tp=tp,
        cost_model=cost_model,
        speed=speed,
        served_model_name=served_model_name,
        tokenizer=tokenizer,
        kv_events_endpoint=None if kv_events_port is None else f"tcp://{host}:{kv_events_port}",
        kv_events_topic=kv_events_topic,
        kv_events_replay_endpoint=None
        if kv_events_replay_port is None
        else f"tcp://{host}:{kv_events_replay_port}",
        engine=EngineConfig(
            block_size=block_size,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            num_gpu_blocks=num_gpu_blocks,
            max_fast_forward_steps=0,
        ),
    )
    eng = build_engine(cfg)  # fail on a bad model or GPU before binding

    def ready(bound: int) -> None:
        logging.getLogger("wildserve.gateway").warning(
            "emulated %s on %s (x%s speed, %d KV blocks) on http://%s:%d",
            model, gpu, speed, eng.num_kv_blocks, host, bound,
        )  # fmt: skip

    run_forever(lambda: make_engine_app(cfg, eng), host, port, ready)


def replay(
    trace: Annotated[str, typer.Option(help="trace spec: builtin:NAME, FORMAT:PATH or a path")] = (
        "builtin:mooncake-conversation"
    ),
    url: Annotated[str, typer.Option(help=_h(_RP, "url"))] = _d(_RP, "url"),
    rate_scale: Annotated[float, typer.Option(help="multiply the arrival rate")] = 1.0,
    max_requests: Annotated[int, typer.Option(help="send at most N requests (0: all)")] = 0,
    max_seconds: Annotated[float, typer.Option(help=_h(_RP, "max_seconds"))] = _d(
        _RP, "max_seconds"
    ),
    endpoint: Annotated[str, typer.Option(help=_h(_RP, "endpoint"))] = _d(_RP, "endpoint"),
    model: Annotated[str | None, typer.Option(help=_h(_RP, "model"))] = None,
    tokenizer: Annotated[str | None, typer.Option(help=_h(_RP, "tokenizer"))] = None,
    timeout: Annotated[float, typer.Option(help=_h(_RP, "timeout_s"))] = _d(_RP, "timeout_s"),
    label: Annotated[
        str | None, typer.Option(help="name of this run in the table (default: URL)")
    ] = None,
    ttft_slo: Annotated[float, typer.Option(help="TTFT objective (s) for SLO attainment")] = 5.0,
    tpot_slo: Annotated[float, typer.Option(help="TPOT objective (s) for SLO attainment")] = 0.1,
    output_json: Annotated[Path | None, typer.Option(help="write results JSON here")] = None,
    seed: Annotated[int, typer.Option(help=_h(_RP, "seed"))] = _d(_RP, "seed"),
) -> None:
    """Replay a trace against a gateway or server and report client-side TTFT/TPOT/E2E."""
    import asyncio

    from wildserve.console import make_console, make_progress
    from wildserve.errors import ConfigError
    from wildserve.gateway.replay import PromptBuilder, summarize_records
    from wildserve.gateway.replay import replay as run_replay
    from wildserve.gateway.tokens import make_tokenizer
    from wildserve.io import atomic_write_json
    from wildserve.report import results_table
    from wildserve.workload import load_trace
    from wildserve.workload.transforms import limit
    from wildserve.workload.transforms import rate_scale as scale_arrivals

    if endpoint not in ("completions", "chat"):
        raise ConfigError(f"--endpoint must be completions or chat, got '{endpoint}'")
    if not rate_scale > 0 or math.isinf(rate_scale):
        raise ConfigError(f"--rate-scale must be a positive number, got {rate_scale}")
    console = make_console()
    cfg = ReplayConfig(url=url, endpoint=endpoint, model=model, tokenizer=tokenizer,
                       timeout_s=timeout, max_seconds=max_seconds, seed=seed)  # fmt: skip
    requests = load_trace(trace)
    if max_requests:
        requests = list(limit(requests, max_requests))
    requests = list(scale_arrivals(requests, rate_scale))
    builder = PromptBuilder(make_tokenizer(tokenizer), seed)
    name = label or url
    console.print(f"[bold]{len(requests)}[/] requests from {trace} (rate x{rate_scale}) -> {url}")
    t0 = time.perf_counter()
    with make_progress(console) as bar:
        task = bar.add_task(name, total=len(requests))

        def on_progress(done: int, sent: int) -> None:
            bar.update(task, completed=done)

        records = asyncio.run(run_replay(requests, cfg, builder, on_progress))
    wall = time.perf_counter() - t0
    summary = summarize_records(records, ttft_slo, tpot_slo, wall)
    console.print(results_table({name: summary}, title=f"{trace} replayed on {url}"))
    if summary["errors"]:
        console.print(
            f"[red]{summary['errors']} requests failed[/], e.g. {summary['error_examples'][:2]}"
        )
    if output_json is not None:
        doc = {
            "policies": {name: summary},
            "wall_s": wall,
            "requests": len(records),
            "config": {"trace": trace, "url": url, "rate_scale": rate_scale, "endpoint": endpoint,
                       "max_requests": max_requests, "max_seconds": max_seconds},
        }  # fmt: skip
        atomic_write_json(output_json, doc)
        console.print(f"results: {output_json}")
    if summary["errors"]:  # a replay with failed requests is a failed replay (exit 1)
        raise typer.Exit(1)
