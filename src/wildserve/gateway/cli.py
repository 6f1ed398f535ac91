"""``wildserve gateway | engine | replay``: the router, an emulated vLLM server, a trace replayer."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Annotated

import typer

from wildserve.config_cli import (
    Fields,
    OutputJson,
    ReaderOptions,
    bounded_option,
    config_options,
)
from wildserve.engine import EngineConfig
from wildserve.gateway.config import EngineServerConfig, GatewayConfig, ReplayConfig
from wildserve.metrics import SloConfig
from wildserve.workload.selection import TraceSelection

LogLevel = Annotated[str, typer.Option(help="logging level")]


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@config_options(
    cfg=Fields(
        GatewayConfig,
        flags={
            "backends": "backend",
            "connect_timeout_s": "connect-timeout",
            "read_timeout_s": "read-timeout",
            "upstream_keepalive_s": "upstream-keepalive",
            "health_interval_s": "health-interval",
            "health_timeout_s": "health-timeout",
            "metrics_poll_s": "metrics-poll",
            "worker_death_window_s": "worker-death-window",
        },
    )
)
def gateway(cfg: GatewayConfig, log_level: LogLevel = "warning") -> None:
    """Route OpenAI requests across backends with a routing policy (LMetric by default)."""
    from wildserve.gateway.proxy import make_gateway_app
    from wildserve.gateway.serve import run_forever
    from wildserve.routing import ROUTING_POLICIES

    _logging(log_level)
    ROUTING_POLICIES.get(cfg.policy)  # fail on a typo before binding
    host, port, policy = cfg.host, cfg.port, cfg.policy

    def ready(bound: int) -> None:
        logging.getLogger("wildserve.gateway").warning(
            "gateway on http://%s:%d, policy %s, views %s, %d backends",
            host, bound, policy, cfg.view_source, len(cfg.backends),
        )  # fmt: skip

    if cfg.workers > 1:
        from wildserve.gateway.workers import serve_workers

        serve_workers(cfg, cfg.workers, ready)
    else:
        run_forever(lambda: make_gateway_app(cfg), host, port, ready)


@config_options(
    server=Fields(EngineServerConfig, exclude=("kv_events_endpoint", "kv_events_replay_endpoint")),
    engine_cfg=Fields(
        EngineConfig,
        only=("block_size", "max_num_seqs", "max_num_batched_tokens", "num_gpu_blocks"),
        fixed={"max_fast_forward_steps": 0},  # a server answers step by step
    ),
)
def engine(
    server: EngineServerConfig,
    engine_cfg: EngineConfig,
    kv_events_port: Annotated[
        int | None,
        bounded_option(int, "publish vLLM KV events on tcp://HOST:PORT (ZMQ PUB)", ge=0, le=65535),
    ] = None,
    kv_events_replay_port: Annotated[
        int | None,
        bounded_option(
            int,
            "answer vLLM KV-event replay requests on tcp://HOST:PORT (ZMQ ROUTER)",
            ge=0,
            le=65535,
        ),
    ] = None,
    log_level: LogLevel = "warning",
) -> None:
    """Serve an emulated vLLM instance: the simulator's engine on the wall clock, OpenAI API."""
    from wildserve.gateway.engine_server import build_engine, make_engine_app
    from wildserve.gateway.serve import run_forever

    _logging(log_level)
    host, port = server.host, server.port
    cfg = dataclasses.replace(
        server,
        engine=engine_cfg,
        kv_events_endpoint=None if kv_events_port is None else f"tcp://{host}:{kv_events_port}",
        kv_events_replay_endpoint=None
        if kv_events_replay_port is None
        else f"tcp://{host}:{kv_events_replay_port}",
    )
    model, gpu, speed = cfg.model, cfg.gpu, cfg.speed
    eng = build_engine(cfg)  # fail on a bad model or GPU before binding

    def ready(bound: int) -> None:
        logging.getLogger("wildserve.gateway").warning(
            "emulated %s on %s (x%s speed, %d KV blocks) on http://%s:%d",
            model, gpu, speed, eng.num_kv_blocks, host, bound,
        )  # fmt: skip

    run_forever(lambda: make_engine_app(cfg, eng), host, port, ready)


@config_options(
    selection=Fields(TraceSelection, exclude=("seed",)),  # arrivals as recorded (or rate-scaled)
    cfg=Fields(ReplayConfig, flags={"timeout_s": "timeout"}),
    slo=SloConfig,
)
def replay(
    selection: TraceSelection,
    cfg: ReplayConfig,
    slo: SloConfig,
    option: ReaderOptions = None,
    label: Annotated[
        str | None, typer.Option(help="name of this run in the table (default: URL)")
    ] = None,
    output_json: OutputJson = None,
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
    from wildserve.workload.cli import parse_options

    if cfg.endpoint not in ("completions", "chat"):
        raise ConfigError(f"--endpoint must be completions or chat, got '{cfg.endpoint}'")
    console = make_console()
    requests = selection.load(parse_options(option or []))
    trace, url, rate_scale, seed = selection.trace, cfg.url, selection.rate_scale, cfg.seed
    builder = PromptBuilder(make_tokenizer(cfg.tokenizer), seed)
    name = label or url
    console.print(f"[bold]{len(requests)}[/] requests from {trace} (rate x{rate_scale}) -> {url}")
    t0 = time.perf_counter()
    with make_progress(console) as bar:
        task = bar.add_task(name, total=len(requests))

        def on_progress(done: int, sent: int) -> None:
            bar.update(task, completed=done)

        records = asyncio.run(run_replay(requests, cfg, builder, on_progress))
    wall = time.perf_counter() - t0
    summary = summarize_records(records, slo.ttft_slo, slo.tpot_slo, wall)
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
            "config": {**dataclasses.asdict(selection), **dataclasses.asdict(cfg),
                       "slo": dataclasses.asdict(slo)},
        }  # fmt: skip
        atomic_write_json(output_json, doc)
        console.print(f"results: {output_json}")
    if summary["errors"]:  # a replay with failed requests is a failed replay (exit 1)
        raise typer.Exit(1)
