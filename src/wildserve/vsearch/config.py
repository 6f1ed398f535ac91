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


#: Measured costs of OMEGA's work at a check, in distance computations (the time per computation of
#: the same searches without checks): benchmarks/omega_check_cost.py under the timing lock on
#: GloVe-6B-50d (100k base, 500 test queries, 12 cells, base schedule), the median of three runs' pooled
#: figures (calls 15.3 / 11.2 / 13.3, checks 15.1 / 13.7 / 11.2; all-in about 36-46 per check).
CHECK_COST_NDIS = 13.7  # one check without its model calls (window sort, prefix sums, estimate)
CALL_COST_NDIS = 13.3  # one masked question (features, forest, isotonic map)


@dataclass(frozen=True)
class OmegaConfig:
    """OMEGA's check schedule and offline calibration; nothing here is tuned per K."""

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
    # measured, not tuned (CHECK_COST_NDIS above): what the replay's cost charges per check and call
    check_cost: float = field(
        default=CHECK_COST_NDIS,
        metadata={"help": "one check's cost without its model calls, in distance computations"},
    )
    call_cost: float = field(
        default=CALL_COST_NDIS,
        metadata={"help": "one model call's cost in distance computations"},
    )
    # The check schedules the replay picks from per (target, grid K): the first check at one of these
    # quantiles of the training queries' time to target x (gap_min, gap_max) scaled by one of these.
    # The first of each is the base schedule (the only one before the costs were measured).
    first_check_quantiles: tuple[float, ...] = (0.05, 0.15, 0.30)
    gap_scales: tuple[float, ...] = (1.0, 2.0)
    confirm_thresholds: tuple[float, ...] = (0.8, 0.9, 0.95, 0.99)
    # targets calibrated besides the ones fitted for (the experiment's, which are all the baselines
    # are tuned for; DEFAULT_TARGETS when neither is given); a target between two calibrated ones is
    # served at the next higher one's levels
    calibration_targets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 < self.gap_min <= self.gap_max:
            raise ConfigError(f"need 0 < gap_min <= gap_max, got {self.gap_min}, {self.gap_max}")
        _check_positive("gap_span", self.gap_span)
        for name in ("check_cost", "call_cost"):
            if getattr(self, name) < 0.0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.first_check_quantiles or not all(
            0.0 <= q < 1.0 for q in self.first_check_quantiles
        ):
            raise ConfigError(
                f"first_check_quantiles must be in [0, 1), got {self.first_check_quantiles}"
            )
        if not self.gap_scales or not all(g > 0.0 for g in self.gap_scales):
            raise ConfigError(f"gap_scales must be > 0, got {self.gap_scales}")
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
