"""Configuration dataclasses of speculative rollout; defaults live here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from wildserve.errors import ConfigError
from wildserve.registry import Registry


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    """How the target picks tokens: temperature 0 means greedy (argmax)."""

    temperature: float = field(
        default=1.0, metadata={"help": "softmax temperature; 0 = greedy", "ge": 0}
    )
    top_p: float = field(default=1.0, metadata={"help": "nucleus mass kept", "gt": 0, "le": 1})
    max_new_tokens: int = field(default=160, metadata={"help": "response length cap", "ge": 1})

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True, slots=True)
class SpecConfig:
    """Speculation knobs shared by every drafter and by the fastest-of-N selector."""

    num_draft_tokens: int = field(
        default=6, metadata={"help": "draft length k (0: no speculation)", "ge": 0}
    )
    adaptive_draft_len: bool = field(
        default=True, metadata={"help": "let the cost-model planner pick k per step (<= k)"}
    )
    ngram_max: int = field(default=4, metadata={"help": "longest suffix the lookup drafters match"})
    ngram_min: int = field(
        default=1, metadata={"help": "shortest suffix the lookup drafters match"}
    )
    history_max_match: int = field(default=12, metadata={"help": "suffix-index match window"})
    history_smoothing: float = field(
        default=8.0, metadata={"help": "history drafter: weight of shorter matches (Witten-Bell)"}
    )
    history_global: bool = field(
        default=True, metadata={"help": "history drafter also indexes other prompts' responses"}
    )
    history_tree: bool = field(
        default=True, metadata={"help": "history drafter proposes a token tree, not one chain"}
    )
    early_exit_layers: int = field(
        default=8, metadata={"help": "target layers the self-drafter runs", "ge": 1}
    )
    prior_strength: float = field(
        default=4.0, metadata={"help": "pseudo-drafts of the pooled acceptance rate per request"}
    )
    decoupled_window: int = field(default=6, metadata={"help": "max tokens the drafter runs ahead"})

    def __post_init__(self) -> None:
        if self.num_draft_tokens < 0:
            raise ConfigError(f"num_draft_tokens must be >= 0, got {self.num_draft_tokens}")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ConfigError(
                f"need 1 <= ngram_min ({self.ngram_min}) <= ngram_max ({self.ngram_max})"
            )
        if self.history_max_match < 1:
            raise ConfigError(f"history_max_match must be >= 1, got {self.history_max_match}")
        if self.history_smoothing < 0:
            raise ConfigError(f"history_smoothing must be >= 0, got {self.history_smoothing}")
        if self.early_exit_layers < 1:
            raise ConfigError(f"early_exit_layers must be >= 1, got {self.early_exit_layers}")
        if self.decoupled_window < 1:
            raise ConfigError(f"decoupled_window must be >= 1, got {self.decoupled_window}")


# speculation mode -> drafters it runs (fastest-of-n picks among them per request and step)
SPEC_MODES: Registry[tuple[str, ...]] = Registry("speculation mode")
SPEC_MODES.add("none", ())
SPEC_MODES.add("ngram", ("ngram",))
SPEC_MODES.add("suffix", ("suffix",))
SPEC_MODES.add("early-exit", ("early-exit",))
SPEC_MODES.add("draft-model", ("draft-model",))
SPEC_MODES.add("fastest-of-n", ("ngram", "suffix", "early-exit"))


@dataclass(frozen=True, slots=True)
class RolloutConfig:
    """One rollout run: prompts, epochs, samples per prompt and the speculation mode."""

    spec_mode: str = "none"
    epochs: int = field(
        default=3, metadata={"help": "passes over the same prompts (RL epochs)", "ge": 1}
    )
    samples_per_prompt: int = field(  # GRPO-style group size
        default=1, metadata={"help": "responses per prompt per epoch", "ge": 1}
    )
    seed: int = field(default=0, metadata={"help": "seed of problems and sampling", "ge": 0})
    decoupled: bool = field(
        default=False, metadata={"help": "model drafters may also run ahead in a thread"}
    )

    def __post_init__(self) -> None:
        if self.spec_mode not in SPEC_MODES:
            SPEC_MODES.get(self.spec_mode)  # raises with the list of choices
        if self.epochs < 1 or self.samples_per_prompt < 1:
            raise ConfigError(
                f"epochs ({self.epochs}) and samples_per_prompt ({self.samples_per_prompt}) must be >= 1"
            )


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """One RL run; ``steps`` = epochs x ceil(num_problems / prompts_per_step)."""

    num_problems: int = field(default=16, metadata={"help": "training problems", "ge": 1})
    prompts_per_step: int = field(default=4, metadata={"help": "problems per RL step", "ge": 1})
    group_size: int = field(
        default=8, metadata={"help": "responses per problem (GRPO group)", "ge": 2}
    )
    epochs: int = field(default=4, metadata={"help": "passes over the problems", "ge": 1})
    max_new_tokens: int = field(default=128, metadata={"help": "response length cap", "ge": 1})
    temperature: float = field(default=1.0, metadata={"help": "rollout temperature", "gt": 0})
    learning_rate: float = field(default=5e-4, metadata={"help": "Adam step size", "gt": 0})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank", "ge": 1})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA alpha", "gt": 0})
    micro_batch: int = field(default=4, metadata={"help": "responses per backward pass", "ge": 1})
    draft_len: int = field(default=6, metadata={"help": "history drafter's live budget", "ge": 1})
    adaptive_draft_len: bool = field(
        default=True,
        metadata={"help": "planner picks k from measured costs (fast, not bit-reproducible)"},
    )
    measure_budget: int = field(default=8, metadata={"help": "largest k measured", "ge": 1})
    measure_model_rows: int = field(
        default=8,
        metadata={"help": "rollouts per step the model drafters are measured on", "ge": 0},
    )
    eval_temperature: float = field(default=0.7, metadata={"help": "second temperature", "gt": 0})
    eval_samples: int = field(
        default=8, metadata={"help": "extra samples per step at eval_temperature", "ge": 0}
    )
    early_exit_layers: int = field(
        default=24, metadata={"help": "early-exit drafter depth", "ge": 1}
    )
    quant_bits: int = field(
        default=3, metadata={"help": "re-quantized drafter bits (0: off)", "ge": 0}
    )
    quant_group: int = field(default=32, metadata={"help": "quantization group size", "ge": 1})
    seed: int = field(
        default=0, metadata={"help": "seed of problems, sampling and LoRA init", "ge": 0}
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if "ge" in f.metadata and value < f.metadata["ge"]:
                raise ConfigError(f"{f.name} must be >= {f.metadata['ge']}, got {value}")
            if "gt" in f.metadata and value <= f.metadata["gt"]:
                raise ConfigError(f"{f.name} must be > {f.metadata['gt']}, got {value}")

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.num_problems // self.prompts_per_step)

    @property
    def num_steps(self) -> int:
        return self.epochs * self.steps_per_epoch
