"""Behaviour of the analytic step-cost model: regimes, monotonicity, TP, MoE, pipeline stages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wildserve.perf.analytic import AnalyticCostModel, soft_roofline
from wildserve.perf.batch import BatchShape
from wildserve.perf.cost import build_cost_model
from wildserve.perf.gpus import get_gpu
from wildserve.perf.models import get_model

CASES = [
    ("llama-3-8b", "h100", 1),
    ("qwen2.5-7b", "h20", 1),
    ("llama-3-70b", "a100", 4),
    ("qwen2.5-72b", "h200", 8),
    ("qwen3-30b-a3b", "h20", 1),
    ("qwen3-30b-a3b", "a800", 2),
]


def _model(name: str, gpu: str, tp: int) -> AnalyticCostModel:
    return AnalyticCostModel(get_model(name), get_gpu(gpu), tp)


def _decode(num_seqs: int, ctx_each: int) -> BatchShape:
    shape = BatchShape()
    for _ in range(num_seqs):
        shape.add_chunk(1, ctx_each, samples=True)
    return shape


def _shape(chunks: list[tuple], decodes: list[int]) -> BatchShape:
    """Chunks are (new, context) or (new, context, samples); decodes are context lengths."""
    shape = BatchShape()
    for new, ctx, *samples in chunks:
        shape.add_chunk(new, ctx, samples=samples[0] if samples else True)
    for ctx in decodes:
        shape.add_chunk(1, ctx, samples=True)
    return shape


@pytest.mark.parametrize(("name", "gpu", "tp"), CASES)
@pytest.mark.parametrize(
    ("num_layers", "with_embed", "with_head"),
    [(None, True, True), (7, False, True), (5, True, False)],
)
def test_decode_run_times_equal_step_by_step(name, gpu, tp, num_layers, with_embed, with_head):
    cm = _model(name, gpu, tp)
    for num_seqs, ctx, steps in [
        (1, 17, 50),
        (37, 37 * 900, 200),
        (256, 256 * 3000, 64),
        (0, 0, 3),
    ]:
        fast = cm.decode_run_times(num_seqs, ctx, steps, num_layers, with_embed, with_head)
        slow = [
            cm.step_time(
                BatchShape(
                    num_decode_tokens=num_seqs,
                    decode_ctx_tokens=ctx + i * num_seqs,
                    num_sampled=num_seqs,
                ),
                num_layers,
                with_embed,
                with_head,
            )
            for i in range(steps)
        ]
        assert fast.shape == (steps,)
        assert np.array_equal(fast, np.array(slow))  # bit-equal, not approximately
    assert cm.decode_run_times(4, 100, 0).shape == (0,)


@pytest.mark.parametrize(("name", "gpu", "tp"), CASES)
@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(
        st.tuples(st.integers(1, 4096), st.integers(0, 60000), st.booleans()), max_size=3
    ),
    decodes=st.lists(st.integers(1, 60000), max_size=40),
    extra_new=st.integers(1, 2048),
    extra_ctx=st.integers(1, 30000),
)
def test_more_tokens_or_context_is_never_faster(
    name, gpu, tp, chunks, decodes, extra_new, extra_ctx
):
    cm = _model(name, gpu, tp)
    base = cm.step_time(_shape(chunks, decodes))
    more_chunk = cm.step_time(_shape([*chunks, (extra_new, 0)], decodes))
    more_decode = cm.step_time(_shape(chunks, [*decodes, extra_ctx]))
    assert more_chunk >= base and more_decode >= base
    if chunks:
        longer_ctx = [(new, ctx + extra_ctx, smp) for new, ctx, smp in chunks]
        longer_chunk = [(new + extra_new, ctx, smp) for new, ctx, smp in chunks]
        assert cm.step_time(_shape(longer_ctx, decodes)) >= base
        assert cm.step_time(_shape(longer_chunk, decodes)) >= base
    if decodes:
        assert cm.step_time(_shape(chunks, [c + extra_ctx for c in decodes])) >= base


@pytest.mark.parametrize(
    ("name", "gpu"), [("llama-3-8b", "h100"), ("qwen2.5-7b", "h20"), ("qwen2.5-14b", "a100")]
)
def test_single_token_decode_is_weight_read_bound(name, gpu):
    cm = _model(name, gpu, 1)
    shape = _decode(1, 16)
    weight_read = cm.model.param_bytes / cm.gpu.hbm_bw  # at datasheet peak: a hard lower bound
    gpu_time = cm.step_time(shape) - cm.overhead_time(shape)
    assert weight_read < gpu_time < 1.35 * weight_read


@pytest.mark.parametrize(
    ("name", "gpu"), [("llama-3-8b", "h100"), ("qwen2.5-7b", "h20"), ("llama-3-70b", "h200")]
)
def test_long_prefill_is_compute_bound(name, gpu):
    cm = _model(name, gpu, 1 if name != "llama-3-70b" else 2)
    tokens = 8192
    shape = _shape([(tokens, 0)], [])
    parts = cm.breakdown(shape)
    linear = sum(v for k, v in parts.items() if k.endswith("_proj"))
    flops = 2.0 * tokens * cm.model.layer_params * cm.model.num_layers / cm.tp
    assert flops / cm.gpu.peak_flops < linear < 1.6 * flops / cm.gpu.peak_flops
    # Batching amortises the weight reads: a prefill token costs far less than a lone decode token.
    assert cm.step_time(shape) / tokens < 0.05 * cm.step_time(_decode(1, tokens))


def test_prefill_attention_grows_with_context():
    cm = _model("llama-3-8b", "h100", 1)
    short = cm.step_time(_shape([(512, 0)], []))
    long = cm.step_time(_shape([(512, 32000)], []))
    pairs = (
        512 * 32000
    )  # extra query-key pairs per layer, 2 FLOPs x 2 matmuls x 128 dims x 32 heads
    pair_s = 4 * 128 * 32 / (cm.gpu.peak_flops * cm.eff.attn_compute)
    assert long - short == pytest.approx(cm.model.num_layers * pairs * pair_s, rel=1e-9)


def test_decode_attention_is_linear_in_kv_read():
    cm = _model("qwen2.5-7b", "h20", 1)
    t1, t2, t3 = (cm.step_time(_decode(64, c)) for c in (1000, 2000, 3000))
    assert t3 - t2 == pytest.approx(t2 - t1, rel=1e-9)
    kv_read = 64 * 1000 * cm.model.kv_bytes_per_token() / cm.gpu.hbm_bw
    assert t2 - t1 == pytest.approx(kv_read / cm.eff.attn_memory, rel=1e-9)


@pytest.mark.parametrize("tokens", [1, 64, 512, 4096])
def test_tensor_parallelism_cuts_gpu_time_but_adds_all_reduce(tokens):
    one = _model("llama-3-70b", "h100", 1)
    two = _model("llama-3-70b", "h100", 2)
    four = _model("llama-3-70b", "h100", 4)
    shape = _shape([(tokens, 0)], [])
    t1, t2, t4 = (m.step_time(shape) for m in (one, two, four))
    assert t4 < t2 < t1
    assert t2 > t1 / 2  # all-reduce and unsharded ops keep TP from being free
    assert one.breakdown(shape)["layer.tp_all_reduce"] == 0.0
    assert (
        0.0
        < two.breakdown(shape)["layer.tp_all_reduce"]
        < four.breakdown(shape)["layer.tp_all_reduce"]
    )


def test_moe_touches_fewer_expert_bytes_at_small_batch():
    moe = _model("qwen3-30b-a3b", "h100", 1)
    assert moe.experts_touched(1) == pytest.approx(8.0)
    assert moe.experts_touched(64) < moe.experts_touched(512) < 128
    assert moe.experts_touched(100_000) == pytest.approx(128.0)
    one = moe.step_time(_decode(1, 16)) - moe.overhead_time(_decode(1, 16))
    # One token reads its 8 experts per layer, not all 128: far below streaming every weight.
    assert one < 0.3 * moe.model.param_bytes / moe.gpu.hbm_bw
    active = moe.model.active_params_per_token * 2 / moe.gpu.hbm_bw
    assert active < one < 2.0 * active
    up = [moe.layer_op_times(m)["mlp_up_proj"] for m in (1, 8, 64, 512)]
    assert up == sorted(up)


def test_breakdown_sums_to_step_time():
    for name, gpu, tp in CASES:
        cm = _model(name, gpu, tp)
        shape = _shape([(700, 3000), (64, 0)], [500, 9000, 120])
        assert sum(cm.breakdown(shape).values()) == pytest.approx(cm.step_time(shape), rel=1e-12)


def test_pipeline_stages_add_up_to_the_whole_model():
    cm = _model("llama-3-70b", "h100", 2)
    shape = _shape([(300, 1000)], [2000] * 20)
    first = cm.step_time(shape, num_layers=40, with_embed=True, with_head=False)
    second = cm.step_time(shape, num_layers=40, with_embed=False, with_head=True)
    assert first + second == pytest.approx(cm.step_time(shape), rel=1e-12)
    assert cm.activation_bytes(300 + 20) == 320 * 8192 * 2
    assert cm.activation_transfer_time(320) > 0.0
    assert cm.activation_transfer_time(320, bandwidth=cm.gpu.pcie_bw) > cm.activation_transfer_time(
        320
    )


def test_empty_step_costs_nothing():
    cm = _model("llama-3-8b", "h100", 1)
    assert cm.step_time(BatchShape()) == 0.0


def test_soft_roofline_limits():
    assert soft_roofline(3.0, 0.0, 2.0) == 3.0
    assert soft_roofline(3.0, 4.0, 2.0) == pytest.approx(5.0)
    assert soft_roofline(3.0, 4.0, 200.0) == pytest.approx(4.0, rel=1e-3)


def test_build_cost_model_by_name():
    cm = build_cost_model("analytic", "qwen2.5-7b", "h20", 1)
    assert isinstance(cm, AnalyticCostModel) and cm.gpu.name == "h20"
