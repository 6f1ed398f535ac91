"""Model shapes and GPU specs: hand-checked numbers and the errors bad configurations raise."""

from __future__ import annotations

import pytest

from wildserve.errors import ConfigError, UnknownNameError
from wildserve.perf.gpus import GPUS, get_gpu
from wildserve.perf.models import MODELS, get_model


def test_llama3_8b_kv_bytes_per_token_hand_computed():
    cfg = get_model("llama-3-8b")
    # K and V x 32 layers x 8 KV heads x 128 dims x 2 bytes (bf16)
    assert cfg.kv_bytes_per_token() == 2 * 32 * 8 * 128 * 2 == 131072
    assert cfg.kv_bytes_per_token(tp=2) == 65536
    assert cfg.kv_bytes_per_token(tp=8) == 16384
    # Beyond 8 GPUs each GPU keeps one (replicated) KV head.
    assert cfg.kv_bytes_per_token(tp=16) == 16384


@pytest.mark.parametrize(
    ("name", "billions", "active"),
    [
        # Parameter counts published on the models' Hugging Face cards.
        ("llama-3-8b", 8.03, None),
        ("llama-3-70b", 70.6, None),
        ("qwen2.5-7b", 7.61, None),
        ("qwen2.5-14b", 14.7, None),
        ("qwen2.5-32b", 32.5, None),
        ("qwen2.5-72b", 72.7, None),
        ("qwen3-30b-a3b", 30.5, 3.3),
    ],
)
def test_parameter_counts_match_model_cards(name, billions, active):
    cfg = get_model(name)
    assert cfg.num_params / 1e9 == pytest.approx(billions, rel=0.012)
    assert cfg.param_bytes == 2 * cfg.num_params
    if active is not None:
        assert cfg.active_params_per_token / 1e9 == pytest.approx(active, rel=0.03)


def test_qwen3_moe_shape():
    cfg = get_model("qwen3-30b-a3b")
    assert cfg.is_moe and cfg.num_experts == 128 and cfg.num_experts_per_tok == 8
    assert cfg.mlp_width == 768
    assert cfg.q_size == 4096 != cfg.hidden_size  # head_dim * heads differs from hidden here


def test_tp_sharding_of_parameters():
    cfg = get_model("llama-3-70b")
    one, four = cfg.param_bytes_per_gpu(1), cfg.param_bytes_per_gpu(4)
    assert one == cfg.param_bytes
    assert four == pytest.approx(one / 4, rel=1e-3)
    half = cfg.param_bytes_per_gpu(1, num_layers=40)
    assert half == 40 * cfg.layer_param_bytes


def test_bad_tp_is_rejected():
    with pytest.raises(ConfigError, match="num_heads=28 not divisible by tp=8"):
        get_model("qwen2.5-7b").kv_bytes_per_token(tp=8)
    with pytest.raises(ConfigError, match="tensor parallel degree"):
        get_model("llama-3-8b").check_tp(0)


def test_registries_list_choices_on_unknown_names():
    with pytest.raises(UnknownNameError, match="llama-3-8b"):
        get_model("llama-9")
    with pytest.raises(UnknownNameError, match="h100"):
        get_gpu("b200")


def test_required_models_and_gpus_registered():
    required = {"llama-3-8b", "llama-3-70b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b"}
    assert required | {"qwen2.5-72b", "qwen3-30b-a3b"} <= set(MODELS)
    assert {"h100", "h200", "h20", "a100", "a800"} <= set(GPUS)


def test_gpu_specs_are_consistent():
    h100, h200, h20, a100, a800 = (get_gpu(n) for n in ("h100", "h200", "h20", "a100", "a800"))
    assert h200.peak_flops == h100.peak_flops and h200.hbm_bw > h100.hbm_bw
    assert h20.peak_flops < a100.peak_flops < h100.peak_flops
    assert h20.hbm_bw > h100.hbm_bw
    assert a800.nvlink_bw < a100.nvlink_bw and a800.hbm_bw == a100.hbm_bw
    assert {g.family for g in (h100, h200, h20)} == {"hopper"}
    assert {g.family for g in (a100, a800)} == {"ampere"}
    for gpu in (h100, h200, h20, a100, a800):
        assert gpu.source, gpu.name
