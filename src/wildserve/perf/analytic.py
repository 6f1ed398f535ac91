"""Step time of a batch from model shape and GPU peaks: a roofline per kernel with fitted efficiencies.

Per layer: the token-dependent kernels (GEMMs, norms, activation, RoPE, residual add, TP all-reduces,
KV-cache write) depend only on the number of tokens in the batch and are cached per token count;
attention adds a prefill term (query-key pairs) and a decode term linear in the KV tokens read. The
embedding, the LM head for sampled rows and a host-side overhead complete a step.
"""

from __future__ import annotations

import math

import numpy as np

from wildserve.errors import ConfigError
from wildserve.perf.batch import BatchShape
from wildserve.perf.calibration import Efficiency, get_calibration
from wildserve.perf.gpus import GPUSpec
from wildserve.perf.models import ModelConfig

# Vidur's per-layer operator names, in forward order; the analytic and table models both use them.
LAYER_OPS = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)
_CACHE_LIMIT = (
    1 << 16
)  # distinct token counts kept per model; the engine's budget bounds them anyway


def soft_roofline(compute_s: float, memory_s: float, p: float) -> float:
    """(c^p + m^p)^(1/p): the roofline max when p is large, a smooth ridge for finite p."""
    if compute_s <= 0.0:
        return memory_s
    if memory_s <= 0.0:
        return compute_s
    big = compute_s if compute_s > memory_s else memory_s
    small = memory_s if compute_s > memory_s else compute_s
    return big * (1.0 + (small / big) ** p) ** (1.0 / p)


class StepCostBase:
    """Everything but the per-layer token ops: attention, collectives, head, overhead, decode runs.

    Subclasses provide :meth:`layer_op_times` (seconds per token-dependent op of one layer) and
    :meth:`embed_time`; both are pure functions of the token count.
    """

    def __init__(
        self, model: ModelConfig, gpu: GPUSpec, tp: int = 1, efficiency: Efficiency | None = None
    ) -> None:
        model.check_tp(tp)
        self.model = model
        self.gpu = gpu
        self.tp = tp
        self.eff = efficiency if efficiency is not None else get_calibration(gpu.family)
        eff = self.eff
        dt = model.dtype_bytes
        heads = model.num_heads // tp
        kv_heads = model.kv_heads_per_gpu(tp)
        hd = model.head_dim
        attn_flops_s = gpu.peak_flops * eff.attn_compute
        attn_bytes_s = gpu.hbm_bw * eff.attn_memory
        kv_token_layer_bytes = 2 * kv_heads * hd * dt  # K and V of one token in one layer
        # Attention: QK^T and PV are 2 FLOPs per multiply-add each, for every head and query-key pair.
        self._pair_s = 4.0 * hd * heads / attn_flops_s
        self._kv_read_s = kv_token_layer_bytes / attn_bytes_s
        self._decode_token_s = max(self._kv_read_s, self._pair_s)  # per KV token per layer
        # KV-cache write of each new token: read K,V from the projection output, write to the cache.
        self._kv_write_s = 2.0 * kv_token_layer_bytes / attn_bytes_s
        # Collectives over NVLink: ring traffic factor times bytes over the achieved bus bandwidth.
        self._bus_bw = gpu.nvlink_bw * eff.allreduce_bw
        self._hidden_bytes = model.hidden_size * dt
        # LM head: one GEMM over the sampled rows, vocabulary sharded over TP.
        head_flops_s = gpu.peak_flops * eff.gemm_compute
        head_bytes_s = gpu.hbm_bw * eff.gemm_memory
        vocab_per_gpu = -(-model.vocab_size // tp)
        self._head_row_s = 2.0 * model.hidden_size * vocab_per_gpu / head_flops_s
        self._head_weight_s = model.hidden_size * vocab_per_gpu * dt / head_bytes_s
        self._head_act_row_s = (model.hidden_size + vocab_per_gpu) * dt / head_bytes_s
        self._logits_row_bytes = model.vocab_size * dt
        self._token_cache: dict[int, tuple[float, float, float]] = {}

    # ---- collectives ------------------------------------------------------------------------------
    def all_reduce_time(self, num_bytes: float) -> float:
        """One ring all-reduce across the TP group (zero without TP)."""
        tp = self.tp
        if tp == 1 or num_bytes <= 0:
            return 0.0
        return self.eff.allreduce_latency_s + 2.0 * (tp - 1) / tp * num_bytes / self._bus_bw

    def gather_time(self, num_bytes: float) -> float:
        """Gather of ``num_bytes`` (total) across the TP group: half the traffic of an all-reduce."""
        tp = self.tp
        if tp == 1 or num_bytes <= 0:
            return 0.0
        return self.eff.allreduce_latency_s + (tp - 1) / tp * num_bytes / self._bus_bw

    # ---- per-op pieces ----------------------------------------------------------------------------
    def layer_op_times(self, num_tokens: int) -> dict[str, float]:
        """Seconds of each token-dependent op of one layer (Vidur's op names) for ``num_tokens``."""
        raise NotImplementedError

    def embed_time(self, num_tokens: int) -> float:
        raise NotImplementedError

    def token_times(self, num_tokens: int) -> tuple[float, float, float]:
        """(one layer, embedding stage, head-side norm) seconds that depend only on the token count.

        A layer is its ops, two TP all-reduces and the KV-cache write; the embedding stage is the
        lookup plus its TP all-reduce; cached per token count since steps repeat batch sizes a lot.
        """
        cached = self._token_cache.get(num_tokens)
        if cached is not None:
            return cached
        ops = self.layer_op_times(num_tokens)
        layer = 0.0
        for name in LAYER_OPS:
            layer += ops.get(name, 0.0)
        for name, value in ops.items():  # extra ops of a subclass (e.g. the MoE router)
            if name not in LAYER_OPS:
                layer += value
        reduce = self.all_reduce_time(num_tokens * self._hidden_bytes)
        # KV-cache write kernel and one attention launch (vLLM v1 runs prefills and decodes in one).
        layer += 2.0 * reduce + 2.0 * self.eff.kernel_s + num_tokens * self._kv_write_s
        out = (layer, self.embed_time(num_tokens) + reduce, ops.get("input_layernorm", 0.0))
        if len(self._token_cache) < _CACHE_LIMIT:
            self._token_cache[num_tokens] = out
        return out

    def attention_parts(self, shape: BatchShape) -> tuple[float, float]:
        """One layer's attention as (fixed seconds, seconds per decode KV token); launch excluded.

        Prefills and decodes share one kernel (vLLM v1), so a mixed batch costs the larger of all
        its query-key pairs at FlashAttention speed and all its KV reads: decode context then sits
        in the fixed part. A pure-decode batch is linear in the KV it reads, which is what lets
        :meth:`decode_run_times` fast-forward exactly.
        """
        if shape.num_prefill_tokens <= 0:
            return 0.0, self._decode_token_s
        ctx = shape.decode_ctx_tokens
        compute = (shape.prefill_attn_pairs + ctx) * self._pair_s
        memory = (shape.prefill_ctx_tokens + shape.num_prefill_tokens + ctx) * self._kv_read_s
        return (compute if compute > memory else memory), 0.0

    def head_time(self, num_sampled: int) -> float:
        """LM head GEMM over the sampled rows plus the logits gather across TP."""
        if num_sampled <= 0:
            return 0.0
        gemm = self.eff.kernel_s + soft_roofline(
            num_sampled * self._head_row_s,
            self._head_weight_s + num_sampled * self._head_act_row_s,
            self.eff.overlap_p,
        )
        return gemm + self.gather_time(num_sampled * self._logits_row_bytes)

    def overhead_time(self, shape: BatchShape) -> float:
        seqs = shape.num_prefill_seqs + shape.num_decode_tokens
        return self.eff.step_overhead_s + seqs * self.eff.seq_overhead_s

    # ---- the StepCostModel protocol ---------------------------------------------------------------
    def _parts(
        self, shape: BatchShape, num_layers: int | None, with_embed: bool, with_head: bool
    ) -> tuple[float, float]:
        """(time without decode attention, seconds per decode KV token): step = base + ctx * rate."""
        layers = self.model.num_layers if num_layers is None else num_layers
        num_tokens = shape.num_prefill_tokens + shape.num_decode_tokens
        if num_tokens <= 0:
            return 0.0, 0.0
        layer, embed, final_norm = self.token_times(num_tokens)
        attn, rate = self.attention_parts(shape)
        base = layers * (layer + attn)
        if with_embed:  # the first stage also carries the host-side overhead of the step
            base += embed + self.overhead_time(shape)
        if with_head:
            base += final_norm + self.head_time(shape.num_sampled)
        return base, layers * rate

    def step_time(
        self,
        shape: BatchShape,
        num_layers: int | None = None,
        with_embed: bool = True,
        with_head: bool = True,
    ) -> float:
        """Seconds of one step; ``num_layers``/``with_embed``/``with_head`` cost one pipeline stage."""
        base, rate = self._parts(shape, num_layers, with_embed, with_head)
        return base + shape.decode_ctx_tokens * rate

    def decode_run_times(
        self,
        num_seqs: int,
        ctx_tokens: int,
        num_steps: int,
        num_layers: int | None = None,
        with_embed: bool = True,
        with_head: bool = True,
    ) -> np.ndarray:
        """Durations of consecutive pure-decode steps, bit-equal to calling :meth:`step_time` each step."""
        if num_seqs < 0 or ctx_tokens < 0 or num_steps < 0:
            raise ConfigError(
                f"decode run needs non-negative values, got num_seqs={num_seqs}, "
                f"ctx_tokens={ctx_tokens}, num_steps={num_steps}"
            )
        shape = BatchShape(num_decode_tokens=num_seqs, decode_ctx_tokens=0, num_sampled=num_seqs)
        base, rate = self._parts(shape, num_layers, with_embed, with_head)
        ctx = ctx_tokens + num_seqs * np.arange(num_steps, dtype=np.float64)
        return base + ctx * rate

    def breakdown(self, shape: BatchShape) -> dict[str, float]:
        """Seconds per component of a whole-model step; the values sum to :meth:`step_time`."""
        layers = self.model.num_layers
        num_tokens = shape.num_tokens
        if num_tokens <= 0:
            return {}
        ops = self.layer_op_times(num_tokens)
        order = [k for k in LAYER_OPS if k in ops] + [k for k in ops if k not in LAYER_OPS]
        out = {f"layer.{k}": layers * ops[k] for k in order}
        out["layer.tp_all_reduce"] = (
            layers * 2.0 * self.all_reduce_time(num_tokens * self._hidden_bytes)
        )
        out["layer.kv_cache_write"] = layers * (self.eff.kernel_s + num_tokens * self._kv_write_s)
        out["layer.attn_launch"] = layers * self.eff.kernel_s
        attn, rate = self.attention_parts(shape)
        out["layer.attention"] = layers * (attn + shape.decode_ctx_tokens * rate)
        _, embed, final_norm = self.token_times(num_tokens)
        out["embedding"] = embed
        out["final_norm"] = final_norm
        out["lm_head"] = self.head_time(shape.num_sampled)
        out["step_overhead"] = self.overhead_time(shape)
        return out

    # ---- pipeline helpers -------------------------------------------------------------------------
    def activation_bytes(self, num_tokens: int) -> int:
        """Bytes of hidden states one pipeline stage hands to the next for ``num_tokens`` tokens."""
        return num_tokens * self.model.activation_bytes_per_token()

    def p2p_time(self, num_bytes: float, bandwidth: float | None = None) -> float:
        """Point-to-point send of ``num_bytes``; ``bandwidth`` (bytes/s) defaults to achieved NVLink.

        Pass e.g. ``gpu.pcie_bw`` or an inter-node NIC rate for peers that do not share NVLink.
        """
        if num_bytes <= 0:
            return 0.0
        bw = self.gpu.nvlink_bw * self.eff.p2p_bw if bandwidth is None else bandwidth
        return self.eff.p2p_latency_s + num_bytes / bw

    def activation_transfer_time(self, num_tokens: int, bandwidth: float | None = None) -> float:
        """Hidden states of ``num_tokens`` tokens sent from one pipeline stage to the next."""
        return self.p2p_time(self.activation_bytes(num_tokens), bandwidth)


class AnalyticCostModel(StepCostBase):
    """Roofline cost of every kernel from model shape and GPU peaks; MoE counts touched experts."""

    def __init__(
        self, model: ModelConfig, gpu: GPUSpec, tp: int = 1, efficiency: Efficiency | None = None
    ) -> None:
        super().__init__(model, gpu, tp, efficiency)
        eff = self.eff
        dt = model.dtype_bytes
        h = model.hidden_size
        heads = model.num_heads // tp
        kv_heads = model.kv_heads_per_gpu(tp)
        hd = model.head_dim
        self._flops_s = gpu.peak_flops * eff.gemm_compute
        self._gemm_bytes_s = gpu.hbm_bw * eff.gemm_memory
        # (compute s per token, weight-read s, activation s per token) of each dense GEMM.
        self._gemms: dict[str, tuple[float, float, float]] = {
            "attn_pre_proj": self._gemm(h, (heads + 2 * kv_heads) * hd),
            "attn_post_proj": self._gemm(heads * hd, h),
        }
        width = -(-model.mlp_width // tp)  # one MLP's (one expert's) width on this GPU
        up = model.mlp_up_factor
        if model.is_moe:
            self._gemms["moe_router"] = self._gemm(h, model.num_experts)
            k, experts = model.num_experts_per_tok, model.num_experts
            self._moe_experts = float(experts)
            self._moe_log_miss = math.log1p(-k / experts)  # log P(a token avoids a given expert)
            # Compute and activations scale with k experts per token, weights with experts touched.
            self._moe = {
                name: (k * c, w, k * a)
                for name, (c, w, a) in (
                    ("mlp_up_proj", self._gemm(h, up * width)),
                    ("mlp_down_proj", self._gemm(width, h)),
                )
            }
            act_width = k * width
        else:
            self._gemms["mlp_up_proj"] = self._gemm(h, up * width)
            self._gemms["mlp_down_proj"] = self._gemm(width, h)
            self._moe = {}
            act_width = width
        bw = gpu.hbm_bw
        # Elementwise ops: seconds per token (bytes read + written over achieved bandwidth).
        self._elementwise = {
            "input_layernorm": 2 * h * dt / (bw * eff.norm_bw),
            "attn_rope": 2 * (heads + kv_heads) * hd * dt / (bw * eff.rope_bw),
            "post_attention_layernorm": 2 * h * dt / (bw * eff.norm_bw),
            "mlp_act": (up + 1) * act_width * dt / (bw * eff.act_bw),
            "add": 3 * h * dt / (bw * eff.add_bw),
        }
        self._embed_token_s = 2 * h * dt / (bw * eff.emb_bw)

    def _gemm(self, k: int, n: int) -> tuple[float, float, float]:
        dt = self.model.dtype_bytes
        return (
            2.0 * k * n / self._flops_s,
            k * n * dt / self._gemm_bytes_s,
            (k + n) * dt / self._gemm_bytes_s,
        )

    def experts_touched(self, num_tokens: int) -> float:
        """Expected distinct experts a batch routes to, if each token picks k of E uniformly."""
        return self._moe_experts * -math.expm1(num_tokens * self._moe_log_miss)

    def layer_op_times(self, num_tokens: int) -> dict[str, float]:
        if num_tokens <= 0:
            return {}
        m = float(num_tokens)
        p = self.eff.overlap_p
        kernel = self.eff.kernel_s
        out = {name: kernel + m * rate for name, rate in self._elementwise.items()}
        for name, (c, w, a) in self._gemms.items():
            out[name] = kernel + soft_roofline(m * c, w + m * a, p)
        if self._moe:
            touched = self.experts_touched(num_tokens)
            for name, (c, w, a) in self._moe.items():
                out[name] = kernel + soft_roofline(m * c, touched * w + m * a, p)
        return out

    def embed_time(self, num_tokens: int) -> float:
        if num_tokens <= 0:
            return 0.0
        return self.eff.kernel_s + num_tokens * self._embed_token_s
