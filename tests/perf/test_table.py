"""Shipped profiles and the table-lookup model: exact at measured points, clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wildserve.errors import ConfigError, TraceFormatError
from wildserve.perf.batch import BatchShape
from wildserve.perf.cost import build_cost_model
from wildserve.perf.gpus import get_gpu
from wildserve.perf.models import get_model
from wildserve.perf.profiles import builtin_profile, find_profiles, read_profile
from wildserve.perf.table import TableCostModel, interpolate

SHARED = Path(__file__).parents[2] / "../shared/profiles/vidur/profiling/compute"


def test_every_shipped_profile_loads_and_names_a_registered_model():
    profiles = find_profiles()
    assert len(profiles) == 14
    assert {p.gpu for p in profiles} == {"h100", "a100"}
    for prof in profiles:
        cfg = prof.model_config()
        assert cfg.hf_id == prof.hf_id
        assert prof.shape["n_embd"] == cfg.hidden_size and prof.shape["n_head"] == cfg.num_heads


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_table_model_is_exact_at_measured_points(tp):
    cm = TableCostModel(get_model("llama-3-8b"), get_gpu("a100"), tp)
    curves = cm.profile.curves[tp]
    for op, curve in curves.items():
        for m, secs in zip(curve.num_tokens.tolist(), curve.seconds.tolist(), strict=True):
            got = cm.embed_time(m) if op == "emb" else cm.layer_op_times(m)[op]
            assert got == secs, (op, m)


def test_table_model_interpolates_between_and_scales_beyond():
    cm = TableCostModel(get_model("llama-2-7b"), get_gpu("h100"), 1)
    curve = cm.profile.curves[1]["mlp_up_proj"]
    xs, ys = curve.num_tokens, curve.seconds
    i = int(np.searchsorted(xs, 1000))
    lo, hi = xs[i - 1], xs[i]
    mid = (lo + hi) // 2
    expected = ys[i - 1] + (ys[i] - ys[i - 1]) * (mid - lo) / (hi - lo)
    assert cm.layer_op_times(int(mid))["mlp_up_proj"] == pytest.approx(expected, rel=1e-12)
    assert interpolate(curve, 2 * int(xs[-1])) == pytest.approx(2 * ys[-1])


def test_table_model_costs_steps_with_analytic_attention():
    table = build_cost_model("table", "llama-3-8b", "a100", 1)
    analytic = build_cost_model("analytic", "llama-3-8b", "a100", 1)
    shape = BatchShape()
    shape.add_chunk(2048, 4096, samples=True)
    for _ in range(32):
        shape.add_chunk(1, 1500, samples=True)
    # Same attention/collective/head code, different layer ops: close but not identical.
    t, a = table.step_time(shape), analytic.step_time(shape)
    assert t != a and t == pytest.approx(a, rel=0.2)
    assert np.array_equal(
        table.decode_run_times(8, 8000, 30),
        [
            table.step_time(
                BatchShape(num_decode_tokens=8, decode_ctx_tokens=8000 + 8 * i, num_sampled=8)
            )
            for i in range(30)
        ],
    )


def test_table_model_refuses_what_was_not_measured():
    with pytest.raises(ConfigError, match="no measured profiles for gpu 'h20'"):
        TableCostModel(get_model("llama-3-8b"), get_gpu("h20"))
    with pytest.raises(ConfigError, match=r"no shipped profile for Qwen/Qwen2\.5-7B on h100"):
        TableCostModel(get_model("qwen2.5-7b"), get_gpu("h100"))
    with pytest.raises(ConfigError, match="field 'n_kv_head' is 32, but model 'llama-3-8b' has 8"):
        TableCostModel(
            get_model("llama-3-8b"),
            get_gpu("h100"),
            profile=builtin_profile("h100", "meta-llama/Llama-2-7b-hf"),
        )
    with pytest.raises(ConfigError, match=r"no rows for tp=2; measured tp: \[1\]"):
        TableCostModel(get_model("phi-2"), get_gpu("a100"), tp=2)


def test_malformed_profile_names_file_line_and_field(tmp_path):
    good = builtin_profile("a100", "microsoft/phi-2")
    path = tmp_path / "gpu" / "org" / "model" / "mlp.csv"
    path.parent.mkdir(parents=True)
    header = "time_stats.add.median,n_head,n_kv_head,n_embd,n_expanded_embd,vocab_size,use_gated_mlp,num_tokens,num_tensor_parallel_workers"
    path.write_text(
        f"{header}\n0.01,32,32,2560,10240,51200,False,1,1\nfast,32,32,2560,10240,51200,False,2,1\n"
    )
    with pytest.raises(TraceFormatError, match=r"mlp.csv:3: field 'time_stats.add.median':"):
        read_profile(path, "gpu", "org/model")
    path.write_text(
        f"{header}\n0.01,32,32,2560,10240,51200,False,1,1\n0.01,32,32,2560,10240,51200,maybe,2,1\n"
    )
    with pytest.raises(TraceFormatError, match=r"mlp.csv:3: field 'use_gated_mlp':"):
        read_profile(path, "gpu", "org/model")
    path.write_text("n_head,num_tokens\n32,1\n")
    with pytest.raises(TraceFormatError, match=r"mlp.csv:1: field 'n_kv_head': column missing"):
        read_profile(path, "gpu", "org/model")
    assert good.ops


def test_shipped_copies_match_the_source_profiles():
    src = SHARED / "a100/meta-llama/Meta-Llama-3-8B/mlp.csv"
    if not src.is_file():
        pytest.skip("../shared profiles not present")
    original = read_profile(src, "a100", "meta-llama/Meta-Llama-3-8B")
    shipped = builtin_profile("a100", "meta-llama/Meta-Llama-3-8B")
    assert original.shape == shipped.shape
    for tp, by_op in original.curves.items():
        for op, curve in by_op.items():
            np.testing.assert_array_equal(curve.num_tokens, shipped.curves[tp][op].num_tokens)
            np.testing.assert_allclose(curve.seconds, shipped.curves[tp][op].seconds, rtol=1e-9)
