"""Configuration dataclasses for the vector-search area; defaults live here once and the CLI reads them."""

from __future__ import annotations

from dataclasses import dataclass, field

from wildserve.errors import ConfigError

#: The Ks a service is asked for; the mixed stream draws from these.
DEFAULT_KS: tuple[int, ...] = (1, 2, 4, 5, 10, 20, 50, 100)
#: Skewed toward small K (a search box asks for a handful, a RAG pipeline for tens).
DEFAULT_K_WEIGHTS: tuple[float, ...] = (0.30, 0.15, 0.10, 0.10, 0.15, 0.10, 0.06, 0.04)
DEFAULT_TARGETS: tuple[float, ...] = (0.90, 0.95, 0.99)


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class IndexConfig:
    """How the HNSW graph is built (faiss IndexHNSWFlat)."""

    metric: str = field(default="angular", metadata={"help": "l2, ip or angular"})
    m: int = field(default=16, metadata={"help": "HNSW M (base layer keeps 2*M links)"})
    ef_construction: int = field(default=200, metadata={"help": "beam width while inserting"})

    def __post_init__(self) -> None:
        _check_positive("m", self.m)
        _check_positive("ef_construction", self.ef_construction)


@dataclass(frozen=True)
class TrainConfig:
    """Training searches, LightGBM settings and the offline statistics shared by the learned methods."""

    ef: int = field(
        default=1000, metadata={"help": "beam width of the training and early-stop searches"}
    )
    k_max: int = field(default=100, metadata={"help": "largest K any method serves"})
    record_growth: float = field(
        default=1.03, metadata={"help": "a trajectory row every x1.03 distance computations"}
    )
    record_min_step: int = field(
        default=8, metadata={"help": "at least this many computations apart"}
    )
    calib_fraction: float = field(
        default=0.2, metadata={"help": "queries held out for isotonic fit"}
    )
    num_trees: int = field(default=50, metadata={"help": "LightGBM boosting rounds"})
    num_leaves: int = field(default=15, metadata={"help": "LightGBM leaves per tree"})
    learning_rate: float = field(default=0.1, metadata={"help": "LightGBM shrinkage"})
    min_data_in_leaf: int = field(default=50, metadata={"help": "LightGBM leaf size floor"})
    max_rows: int = field(
        default=400_000, metadata={"help": "rows kept per model (seeded subsample)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of LightGBM and of row subsampling"})

    def __post_init__(self) -> None:
        if self.ef < self.k_max:
            raise ConfigError(f"ef ({self.ef}) must be >= k_max ({self.k_max})")
        if not 0.0 < self.calib_fraction < 1.0:
            raise ConfigError(f"calib_fraction must be in (0, 1), got {self.calib_fraction}")
        if self.record_growth <= 1.0:
            raise ConfigError(f"record_growth must be > 1, got {self.record_growth}")


@dataclass(frozen=True)
class OmegaConfig:
    """OMEGA's check schedule; the same values serve every K and target (nothing is tuned per K)."""

    first_check_quantile: float = field(
        default=0.05, metadata={"help": "first check at this quantile of the top-1 discovery time"}
    )
    check_growth: float = field(
        default=0.1, metadata={"help": "next check after this fraction more computations"}
    )
    min_check_gap: int = field(
        default=32, metadata={"help": "at least this many computations apart"}
    )
    jump_to_statistics: bool = field(
        default=True,
        metadata={"help": "skip checks halfway to when the statistics reach the target"},
    )
    num_time_bins: int = field(
        default=40, metadata={"help": "log-spaced bins of the offline tables"}
    )
    prior_strength: float = field(
        default=20.0,
        metadata={"help": "pseudo-count pulling sparse conditional cells to the marginal"},
    )
    precision_fraction: float = field(
        default=0.3, metadata={"help": "training queries held out for the precision table"}
    )
    confidence_z: float = field(
        default=1.645, metadata={"help": "confirmations need precision - z*stderr >= target"}
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.first_check_quantile < 1.0:
            raise ConfigError(
                f"first_check_quantile must be in [0, 1), got {self.first_check_quantile}"
            )
        _check_positive("check_growth", self.check_growth)


@dataclass(frozen=True)
class ExperimentConfig:
    """The end-to-end comparison: data split, Ks, targets and the mixed stream."""

    dataset: str = field(
        default="glove", metadata={"help": "glove, synthetic, or a .npy/.fvecs path"}
    )
    n_base: int = field(default=100_000, metadata={"help": "base vectors kept (0 = all)"})
    n_train: int = field(default=1000, metadata={"help": "training queries"})
    n_val: int = field(default=300, metadata={"help": "queries the baselines are tuned on"})
    n_test: int = field(
        default=1000, metadata={"help": "held-out queries every number is reported on"}
    )
    ks: tuple[int, ...] = DEFAULT_KS
    k_weights: tuple[float, ...] = DEFAULT_K_WEIGHTS
    targets: tuple[float, ...] = DEFAULT_TARGETS
    n_stream: int = field(default=1000, metadata={"help": "queries in the mixed-K stream"})
    seed: int = field(default=0, metadata={"help": "seed of the split, the stream and the models"})

    def __post_init__(self) -> None:
        if len(self.ks) != len(self.k_weights):
            raise ConfigError(
                f"ks has {len(self.ks)} values but k_weights has {len(self.k_weights)}"
            )
        for t in self.targets:
            if not 0.0 < t < 1.0:
                raise ConfigError(f"recall target must be in (0, 1), got {t}")
        for n, name in ((self.n_train, "n_train"), (self.n_val, "n_val"), (self.n_test, "n_test")):
            _check_positive(name, n)


@dataclass(frozen=True)
class BaselineConfig:
    """Knobs of the baselines, as their papers set them (see docs/results/omega.md)."""

    laet_warmup_quantile: float = field(
        default=0.05,
        metadata={"help": "LAET predicts once ndis passes this quantile of top-1 times"},
    )
    darth_ipi_fraction: float = field(
        default=0.5,
        metadata={"help": "DARTH initial interval: this fraction of the mean time to target"},
    )
    darth_mpi_fraction: float = field(
        default=0.1, metadata={"help": "DARTH minimum interval: this fraction of the same mean"}
    )
    darth_tune_steps: int = field(
        default=4, metadata={"help": "bisection steps of DARTH's stop level"}
    )
    tune_z: float = field(
        default=1.645, metadata={"help": "tuned knobs need mean - z*stderr >= target on validation"}
    )
