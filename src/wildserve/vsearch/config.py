"""Configuration dataclasses for the vector-search area; defaults live here once and the CLI reads them."""

from __future__ import annotations

from dataclasses import dataclass, field

from wildserve.errors import ConfigError

#: The Ks a service is asked for; the mixed stream draws from these.
DEFAULT_KS: tuple[int, ...] = (1, 2, 4, 5, 10, 20, 50, 100)
#: Skewed toward small K (a search box asks for a handful, a RAG pipeline for tens).
DEFAULT_K_WEIGHTS: tuple[float, ...] = (0.30, 0.15, 0.10, 0.10, 0.15, 0.10, 0.06, 0.04)
DEFAULT_TARGETS: tuple[float, ...] = (0.90, 0.95, 0.99)
#: The methods the experiment compares by default.
ALL_METHODS: tuple[str, ...] = ("fixed-ef", "laet", "darth", "omega")


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class IndexConfig:
    """How the HNSW graph is built (faiss IndexHNSWFlat)."""

    metric: str = field(default="angular", metadata={"help": "l2, ip or angular"})
    m: int = field(default=16, metadata={"help": "HNSW M (base layer keeps 2*M links)", "ge": 2})
    ef_construction: int = field(
        default=200, metadata={"help": "beam width while inserting", "ge": 1}
    )

    def __post_init__(self) -> None:
        _check_positive("m", self.m)
        _check_positive("ef_construction", self.ef_construction)


@dataclass(frozen=True)
class TrainConfig:
    """Training searches, LightGBM settings and the offline statistics shared by the learned methods."""

    ef: int = field(
        default=1000,
        metadata={"help": "beam width of the training and early-stop searches", "ge": 1},
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
    seed: int = field(
        default=0, metadata={"help": "seed of LightGBM and of row subsampling", "ge": 0}
    )

    def __post_init__(self) -> None:
        if self.ef < self.k_max:
            raise ConfigError(f"ef ({self.ef}) must be >= k_max ({self.k_max})")
        if not 0.0 < self.calib_fraction < 1.0:
            raise ConfigError(f"calib_fraction must be in (0, 1), got {self.calib_fraction}")
        if self.record_growth <= 1.0:
            raise ConfigError(f"record_growth must be > 1, got {self.record_growth}")


@dataclass(frozen=True)
class OmegaConfig:
    """OMEGA's check schedule and offline calibration; nothing here is tuned per K."""

    first_check_quantile: float = field(
        default=0.05,
        metadata={"help": "first check at this quantile of the training queries' time to target"},
    )
    gap_min: float = field(
        default=0.05,
        metadata={"help": "check gap (fraction of ndis) when the estimate is at the level"},
    )
    gap_max: float = field(
        default=0.5,
        metadata={"help": "check gap (fraction of ndis) when the estimate is far below"},
    )
    gap_span: float = field(
        default=0.3,
        metadata={"help": "estimate distance below the level at which the gap is widest"},
    )
    min_check_gap: int = field(
        default=16, metadata={"help": "at least this many computations between checks"}
    )
    jump_to_statistics: bool = field(
        default=True,
        metadata={"help": "no check before halfway to when the statistics reach the level"},
    )
    num_time_bins: int = field(
        default=40, metadata={"help": "log-spaced bins of the offline statistics"}
    )
    prior_strength: float = field(
        default=20.0,
        metadata={"help": "pseudo-count pulling sparse conditional cells to the marginal"},
    )
    holdout_fraction: float = field(
        default=0.5,
        metadata={"help": "training queries held out of the forest (calibration and replay)"},
    )
    calibration_z: float = field(
        default=2.0,
        metadata={"help": "replayed recall must meet the target with mean - z*stderr"},
    )
    call_cost: float = field(
        default=4.0,
        metadata={"help": "a model call's cost in distance computations (choosing tau)"},
    )
    confirm_thresholds: tuple[float, ...] = (0.8, 0.9, 0.95, 0.99)
    calibration_targets: tuple[float, ...] = (0.8, 0.9, 0.95, 0.99)  # and the experiment's

    def __post_init__(self) -> None:
        if not 0.0 <= self.first_check_quantile < 1.0:
            raise ConfigError(
                f"first_check_quantile must be in [0, 1), got {self.first_check_quantile}"
            )
        if not 0.0 < self.gap_min <= self.gap_max:
            raise ConfigError(f"need 0 < gap_min <= gap_max, got {self.gap_min}, {self.gap_max}")
        _check_positive("gap_span", self.gap_span)
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")


@dataclass(frozen=True)
class ExperimentConfig:
    """The end-to-end comparison: data split, Ks, targets and the mixed stream."""

    base: str = field(
        default="glove", metadata={"help": "base vectors: glove, synthetic, or a .npy/.fvecs file"}
    )
    queries: str | None = field(
        default=None, metadata={"help": "test queries (.npy/.fvecs); default: held out of the base"}
    )
    ground_truth: str | None = field(
        default=None,
        metadata={"help": "test queries' true neighbour ids (.ivecs/.npy); default: exact (faiss)"},
    )
    train: str | None = field(
        default=None,
        metadata={"help": "training queries (validation split off); default: held out of the base"},
    )
    n_base: int = field(default=100_000, metadata={"help": "base vectors kept (0 = all)", "ge": 0})
    n_train: int = field(default=1000, metadata={"help": "training queries", "ge": 3})
    n_val: int = field(
        default=300, metadata={"help": "queries the baselines are tuned on", "ge": 2}
    )
    n_test: int = field(
        default=1000, metadata={"help": "held-out queries every number is reported on", "ge": 1}
    )
    ks: tuple[int, ...] = DEFAULT_KS
    k_weights: tuple[float, ...] = DEFAULT_K_WEIGHTS
    targets: tuple[float, ...] = DEFAULT_TARGETS
    n_stream: int = field(default=1000, metadata={"help": "queries in the mixed-K stream", "ge": 1})
    ef_caps: tuple[int, ...] = ()  # further beam caps at which the learned methods are re-run
    equal_budget: bool = field(
        default=True,
        metadata={"help": "also fit LAET and DARTH at OMEGA's preprocessing budget"},
    )
    seed: int = field(
        default=0, metadata={"help": "seed of the split, the stream and the models", "ge": 0}
    )

    def __post_init__(self) -> None:
        if len(self.ks) != len(self.k_weights):
            raise ConfigError(
                f"ks has {len(self.ks)} values but k_weights has {len(self.k_weights)}"
            )
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"ks must be positive integers, got {self.ks}")
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
        default=4, metadata={"help": "bisection steps of DARTH's stop level", "ge": 0}
    )
    tune_z: float = field(
        default=2.0, metadata={"help": "tuned knobs need mean - z*stderr >= target on validation"}
    )
