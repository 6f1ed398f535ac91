"""What the OMEGA benchmarks share: the data options and the experiment's prepared state (its split,
graph, ground truth and training logs; from the experiment's cache folder when one is given), so that
every benchmark measures the very queries and models `wildserve experiment omega` does."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", default="glove")
    p.add_argument("--metric", default="angular")
    p.add_argument("--n-base", type=int, default=100_000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--cache", type=Path, default=None, help="the experiment's cache folder")


def prepared(args: argparse.Namespace, omega_config=None, **experiment):
    """(experiment config, train config, prepared data, fit context) for the parsed data options;
    `experiment` overrides ExperimentConfig fields (ks, targets, ...)."""
    from wildserve.vsearch.config import (
        BaselineConfig,
        ExperimentConfig,
        IndexConfig,
        OmegaConfig,
        TrainConfig,
    )
    from wildserve.vsearch.experiment import _context, prepare

    cfg = ExperimentConfig(base=args.base, n_base=args.n_base, n_test=args.n_test, **experiment)
    tc = TrainConfig()
    rng = np.random.default_rng(cfg.seed)  # the experiment's split
    prep = prepare(cfg, IndexConfig(metric=args.metric), tc, rng, args.cache)
    ctx = _context(prep, cfg, tc, omega_config or OmegaConfig(), BaselineConfig())
    return cfg, tc, prep, ctx
