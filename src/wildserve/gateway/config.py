"""Gateway settings, defined once with their defaults and help text; the CLI reads them from here."""

from __future__ import annotations

from dataclasses import dataclass, field

from wildserve.config import check_bounds, option
from wildserve.engine.config import EngineConfig
from wildserve.errors import ConfigError


@dataclass
class GatewayConfig:
    """One gateway in front of a fixed list of OpenAI-compatible backends."""

    backends: list[str] = field(
        default_factory=list, metadata={"help": "backend base URL (repeat per backend)"}
    )
    kv_events: list[str] = field(
        default_factory=list,
        metadata={"help": "ZMQ KV-event endpoints, one per backend in order (exact view source)"},
    )
    policy: str = option("lmetric", "routing policy (any registered one)")
    host: str = option("127.0.0.1", "address to listen on")
    port: int = option(8000, "port to listen on (0: any free one)", ge=0, le=65535)
    workers: int = option(
        1,
        "gateway processes accepting on the port, routing on their shared per-backend in-flight "
        "and queued-prefill counts (1: a single process)",
        ge=1,
    )
    worker_deaths: int = option(
        5,
        "with --workers: the gateway gives up (exits non-zero) when its workers die this many "
        "times within --worker-death-window; each restart of a worker waits twice as long as its "
        "last (0.1 s first, 5 s at most)",
        ge=1,
    )
    worker_death_window_s: float = option(30.0, "seconds --worker-deaths are counted over", gt=0)
    tokenizer: str | None = option(None, "tokenizer.json of the served model; default: byte tokens")
    block_size: int = option(16, "tokens per prefix block (the engines' KV block size)", ge=1)
    prefix_index_blocks: int = option(1 << 20, "router-local prefix index size per backend", ge=1)
    max_body_bytes: int = option(16 << 20, "largest request body accepted (413 above)", ge=1)
    connect_timeout_s: float = option(2.0, "connecting to a backend", gt=0)
    read_timeout_s: float = option(600.0, "longest wait for a backend's next bytes", gt=0)
    upstream_keepalive_s: float = option(15.0, "idle backend connections close after this", gt=0)
    max_attempts: int = option(
        3, "backends tried per request when they fail before the client gets a byte", ge=1
    )
    health_interval_s: float = option(1.0, "seconds between health checks of each backend", gt=0)
    health_timeout_s: float = option(1.0, "a health check slower than this fails", gt=0)
    unhealthy_after: int = option(2, "consecutive failed health checks that eject a backend", ge=1)
    metrics_poll_s: float = option(
        0.1, "seconds between /metrics polls (KV-event view source)", gt=0
    )
    kv_events_topic: str = option("", "ZMQ topic prefix to subscribe to")
    kv_replay: bool = option(
        True,
        "load each engine's cached blocks from its KV-event replay endpoint (found at "
        "/kv_event_sources) at start, after a sequence gap and on re-admission",
    )

    def __post_init__(self) -> None:
        if not self.backends:
            raise ConfigError("gateway: give at least one --backend URL")
        for url in self.backends:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"gateway: backend '{url}' must start with http:// or https://")
        if self.kv_events and len(self.kv_events) != len(self.backends):
            raise ConfigError(
                f"gateway: {len(self.kv_events)} --kv-events endpoints for {len(self.backends)} "
                "backends; give one per backend, in the same order"
            )
        check_bounds(self, "gateway")
        self.backends = [u.rstrip("/") for u in self.backends]

    @property
    def view_source(self) -> str:
        return "kv-events" if self.kv_events else "router-local"


@dataclass
class EngineServerConfig:
    """One emulated instance: which model and GPU it models, how fast its clock runs, what it serves."""

    model: str = option("qwen2.5-7b", "model name (see `wildserve perf models`)")
    gpu: str = option("h20", "GPU name: h100, h200, h20, a100, a800")
    tp: int = option(1, "tensor-parallel GPUs per instance", ge=1)
    cost_model: str = option("analytic", "step-time model: analytic, or table")
    speed: float = option(
        1.0, "wall-clock speed-up of modeled time (inf: no waiting at all)", gt=0, allow_inf=True
    )
    host: str = option("127.0.0.1", "address the server listens on (and publishes KV events on)")
    port: int = option(8001, "port to listen on (0: any free one)", ge=0, le=65535)
    served_model_name: str | None = option(None, "model name in the API (default: --model)")
    tokenizer: str | None = option(
        None, "tokenizer.json (or its folder); default: one token per byte"
    )
    kv_events_endpoint: str | None = option(None, "publish KV events on this ZMQ PUB endpoint")
    kv_events_replay_endpoint: str | None = option(
        None, "answer vLLM KV-event replay requests on this ZMQ ROUTER endpoint"
    )
    kv_events_buffer_steps: int = option(10_000, "event batches kept for replay (vLLM's)", ge=1)
    kv_events_topic: str = option("", "ZMQ topic of the KV events (vLLM's default is empty)")
    default_max_tokens: int = option(16, "output tokens when a request gives no max_tokens", ge=1)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ConfigError(f"speed must be > 0 (inf for no waiting), got {self.speed}")
        if self.kv_events_replay_endpoint and not self.kv_events_endpoint:
            raise ConfigError("engine: a KV-event replay endpoint needs a KV-event endpoint")
        check_bounds(self, "engine server")

    @property
    def api_model_name(self) -> str:
        return self.served_model_name or self.model


@dataclass
class ReplayConfig:
    """Where to send, how much of the trace, and how long to wait."""

    url: str = option("http://127.0.0.1:8000", "base URL of the gateway or server")
    endpoint: str = option("completions", "completions or chat")
    model: str | None = option(None, "model name to send (default: the first of /v1/models)")
    tokenizer: str | None = option(None, "tokenizer.json of the served model; default: byte tokens")
    timeout_s: float = option(600.0, "longest a request may take", gt=0)
    max_seconds: float = option(0.0, "stop sending after this many seconds (0: no limit)", ge=0)
    seed: int = option(0, "seed of the synthetic prompt text", ge=0)
