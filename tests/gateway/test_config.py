"""Gateway settings are checked up front; vLLM's /metrics text is parsed by name."""

from __future__ import annotations

import pytest

from wildserve.errors import ConfigError
from wildserve.gateway.backends import parse_vllm_metrics
from wildserve.gateway.config import GatewayConfig


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backends": []}, "at least one"),
        ({"backends": ["localhost:8001"]}, "http://"),
        ({"backends": ["http://a", "http://b"], "kv_events": ["tcp://a:1"]}, "one per backend"),
        ({"backends": ["http://a"], "read_timeout_s": 0}, "read_timeout_s"),
        ({"backends": ["http://a"], "block_size": 0}, "block_size"),
    ],
)
def test_bad_settings_fail_with_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GatewayConfig(**kwargs)


def test_view_source_follows_kv_events():
    assert GatewayConfig(backends=["http://a/"]).view_source == "router-local"
    cfg = GatewayConfig(backends=["http://a/"], kv_events=["tcp://a:5557"])
    assert cfg.view_source == "kv-events" and cfg.backends == ["http://a"]


def test_vllm_metrics_are_summed_over_engines_and_usage_averaged():
    text = b"""# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
vllm:num_requests_running_other 99
vllm:prompt_tokens_total{engine="0",model_name="m"} 1234.0
"""
    load = parse_vllm_metrics(text)
    assert load == {"num_running": 5.0, "num_waiting": 4.0, "kv_usage": 0.375}
    assert parse_vllm_metrics(b'vllm:gpu_cache_usage_perc{x="y"} 0.2\n') == {"kv_usage": 0.2}
