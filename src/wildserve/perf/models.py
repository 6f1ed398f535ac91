"""Transformer shapes of the served models: parameter bytes, KV bytes per token, TP sharding."""

from __future__ import annotations

from dataclasses import dataclass

from wildserve.errors import ConfigError
from wildserve.registry import Registry


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Decoder-only transformer shape, with values copied from the model's HF ``config.json``.

    Dense models use ``intermediate_size``; mixture-of-experts models (``num_experts > 0``) replace every
    MLP by ``num_experts`` experts of width ``moe_intermediate_size``, ``num_experts_per_tok`` of them
    active per token.
    """

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width (unused when every layer is MoE)
    vocab_size: int
    tie_word_embeddings: bool = False
    gated_mlp: bool = True  # SwiGLU: up projection is [gate; up], 2 * width wide
    qkv_bias: bool = False
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3)
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    dtype_bytes: int = 2  # bf16 weights, activations and KV cache
    hf_id: str = ""

    def __post_init__(self) -> None:
        for field_name in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim"):
            if getattr(self, field_name) < 1:
                raise ConfigError(f"model '{self.name}': {field_name} must be >= 1")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"model '{self.name}': num_heads={self.num_heads} is not a multiple of "
                f"num_kv_heads={self.num_kv_heads}"
            )
        if self.is_moe and not (0 < self.num_experts_per_tok <= self.num_experts):
            raise ConfigError(
                f"model '{self.name}': num_experts_per_tok={self.num_experts_per_tok} must be in "
                f"1..num_experts={self.num_experts}"
            )

    # ---- shapes ----------------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def mlp_width(self) -> int:
        """Width of one MLP (one expert for MoE)."""
        return self.moe_intermediate_size if self.is_moe else self.intermediate_size

    @property
    def mlp_up_factor(self) -> int:
        return 2 if self.gated_mlp else 1

    def check_tp(self, tp: int) -> None:
        """Raise unless the heads split evenly over ``tp`` GPUs (KV heads may be replicated)."""
        if tp < 1:
            raise ConfigError(f"tensor parallel degree must be >= 1, got {tp}")
        if self.num_heads % tp:
            raise ConfigError(
                f"model '{self.name}': num_heads={self.num_heads} not divisible by tp={tp}"
            )
        if self.num_kv_heads % tp and tp % self.num_kv_heads:
            raise ConfigError(
                f"model '{self.name}': num_kv_heads={self.num_kv_heads} and tp={tp} do not divide"
            )

    def kv_heads_per_gpu(self, tp: int = 1) -> int:
        """KV heads one GPU stores: vLLM replicates KV heads when tp exceeds their number."""
        self.check_tp(tp)
        return max(1, self.num_kv_heads // tp)

    # ---- parameter counts (elements) ------------------------------------------------------------
    @property
    def attn_params(self) -> int:
        """QKV and output projections of one layer (plus q/k norm weights and biases)."""
        params = (
            self.hidden_size * (self.q_size + 2 * self.kv_size) + self.q_size * self.hidden_size
        )
        if self.qkv_bias:
            params += self.q_size + 2 * self.kv_size
        if self.qk_norm:
            params += 2 * self.head_dim
        return params

    @property
    def expert_params(self) -> int:
        """One MLP (one expert for MoE): up (and gate) plus down projection."""
        return (self.mlp_up_factor + 1) * self.hidden_size * self.mlp_width

    @property
    def mlp_params(self) -> int:
        if self.is_moe:
            return self.num_experts * self.expert_params + self.hidden_size * self.num_experts
        return self.expert_params

    @property
    def layer_params(self) -> int:
        return self.attn_params + self.mlp_params + 2 * self.hidden_size  # + two norms

    @property
    def embed_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def head_params(self) -> int:
        """LM head (tied models reuse the embedding, so it adds nothing) plus the final norm."""
        return (
            0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        ) + self.hidden_size

    @property
    def num_params(self) -> int:
        return self.num_layers * self.layer_params + self.embed_params + self.head_params

    @property
    def active_params_per_token(self) -> int:
        """Parameters one token multiplies with (MoE: only its experts)."""
        if not self.is_moe:
            return self.num_params
        mlp_active = (
            self.num_experts_per_tok * self.expert_params + self.hidden_size * self.num_experts
        )
        layer = self.attn_params + mlp_active + 2 * self.hidden_size
        return self.num_layers * layer + self.embed_params + self.head_params

    # ---- bytes -----------------------------------------------------------------------------------
    @property
    def param_bytes(self) -> int:
        return self.num_params * self.dtype_bytes

    @property
    def layer_param_bytes(self) -> int:
        return self.layer_params * self.dtype_bytes

    def param_bytes_per_gpu(self, tp: int = 1, num_layers: int | None = None) -> int:
        """Weights one GPU holds: sharded projections, replicated norms; embedding and head sharded."""
        self.check_tp(tp)
        layers = self.num_layers if num_layers is None else num_layers
        sharded = self.layer_params - 2 * self.hidden_size
        per_layer = -(-sharded // tp) + 2 * self.hidden_size
        total = layers * per_layer
        if num_layers is None:
            total += -(-(self.embed_params + self.head_params) // tp)
        return total * self.dtype_bytes

    def kv_bytes_per_token(self, tp: int = 1) -> int:
        """KV-cache bytes one GPU stores per token (K and V of every layer, its share of KV heads)."""
        return 2 * self.num_layers * self.kv_heads_per_gpu(tp) * self.head_dim * self.dtype_bytes

    def activation_bytes_per_token(self) -> int:
        """Hidden-state bytes per token passed between pipeline stages."""
        return self.hidden_size * self.dtype_bytes


MODELS: Registry[ModelConfig] = Registry("model")


def _add(cfg: ModelConfig) -> None:
    MODELS.add(cfg.name, cfg)


def get_model(name: str) -> ModelConfig:
    return MODELS.get(name)


# Values from each repository's config.json on the Hugging Face Hub (hf_id).
_add(
    ModelConfig(
        "llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256, hf_id="meta-llama/Meta-Llama-3-8B"
    )
)
_add(
    ModelConfig(
        "llama-3-70b", 80, 8192, 64, 8, 128, 28672, 128256, hf_id="meta-llama/Meta-Llama-3-70B"
    )
)
_add(
    ModelConfig(
        "qwen2.5-7b", 28, 3584, 28, 4, 128, 18944, 152064, qkv_bias=True, hf_id="Qwen/Qwen2.5-7B"
    )
)
_add(
    ModelConfig(
        "qwen2.5-14b", 48, 5120, 40, 8, 128, 13824, 152064, qkv_bias=True, hf_id="Qwen/Qwen2.5-14B"
    )
)
_add(
    ModelConfig(
        "qwen2.5-32b", 64, 5120, 40, 8, 128, 27648, 152064, qkv_bias=True, hf_id="Qwen/Qwen2.5-32B"
    )
)
_add(
    ModelConfig(
        "qwen2.5-72b", 80, 8192, 64, 8, 128, 29568, 152064, qkv_bias=True, hf_id="Qwen/Qwen2.5-72B"
    )
)
_add(
    ModelConfig(
        "qwen3-30b-a3b", 48, 2048, 32, 4, 128, 6144, 151936, qk_norm=True, num_experts=128,
        num_experts_per_tok=8, moe_intermediate_size=768, hf_id="Qwen/Qwen3-30B-A3B",
    )
)  # fmt: skip
# The models of the shipped Vidur profiles, so the table model and the calibration can name them.
_add(
    ModelConfig("llama-2-7b", 32, 4096, 32, 32, 128, 11008, 32000, hf_id="meta-llama/Llama-2-7b-hf")
)
_add(
    ModelConfig(
        "llama-2-70b", 80, 8192, 64, 8, 128, 28672, 32000, hf_id="meta-llama/Llama-2-70b-hf"
    )
)
_add(
    ModelConfig(
        "codellama-34b",
        48,
        8192,
        64,
        8,
        128,
        22016,
        32000,
        hf_id="codellama/CodeLlama-34b-Instruct-hf",
    )
)
_add(
    ModelConfig("internlm-20b", 60, 5120, 40, 40, 128, 13824, 103168, hf_id="internlm/internlm-20b")
)
_add(
    ModelConfig(
        "qwen-72b", 80, 8192, 64, 64, 128, 24576, 152064, qkv_bias=True, hf_id="Qwen/Qwen-72B"
    )
)
_add(
    ModelConfig(
        "phi-2",
        32,
        2560,
        32,
        32,
        80,
        10240,
        51200,
        gated_mlp=False,
        qkv_bias=True,
        hf_id="microsoft/phi-2",
    )
)
