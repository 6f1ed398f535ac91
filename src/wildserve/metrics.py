"""Latency metrics and their percentiles: the one definition used by sim, replay and benchmarks.

TTFT = first token - arrival; TPOT = (finish - first token) / (output tokens - 1), defined only for
requests with at least two output tokens; E2E = finish - arrival; queueing = first scheduled - arrival.
Percentiles use linear interpolation (numpy's default).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_PERCENTILES: tuple[float, ...] = (50, 90, 99)


@dataclass(frozen=True)
class SloConfig:
    """The latency objectives SLO attainment counts against (the LMetric paper's)."""

    ttft_slo: float = field(
        default=5.0, metadata={"help": "TTFT objective (s) for SLO attainment", "gt": 0}
    )
    tpot_slo: float = field(
        default=0.1, metadata={"help": "TPOT objective (s) for SLO attainment", "gt": 0}
    )


DEFAULT_SLO = SloConfig()


def _pname(p: float) -> str:
    return "p" + (f"{p:g}".replace(".", ""))


def summarize(values: Iterable[float], percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> dict:
    """Mean and percentiles of the finite values; None for each when there are none."""
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    arr = arr[np.isfinite(arr)]
    keys = ["mean", *(_pname(p) for p in percentiles)]
    if arr.size == 0:
        return dict.fromkeys(keys)
    stats = [float(arr.mean()), *(float(x) for x in np.percentile(arr, percentiles))]
    return dict(zip(keys, stats, strict=True))


@dataclass
class RequestMetrics:
    """Per-request latencies of one run, as arrays aligned with the finished requests."""

    ttft: np.ndarray
    tpot: np.ndarray  # NaN where a request produced a single token
    e2e: np.ndarray
    queueing: np.ndarray
    prompt_tokens: np.ndarray
    hit_tokens: np.ndarray
    output_tokens: np.ndarray
    instance: np.ndarray
    num_aborted: int = 0

    @classmethod
    def from_requests(
        cls, requests: Sequence, instances: Sequence[int] | None = None
    ) -> RequestMetrics:
        """Build from engine requests (finished ones count; aborted ones are only counted)."""
        done = [(i, r) for i, r in enumerate(requests) if r.finish_s >= 0 and r.first_token_s >= 0]
        n = len(done)
        arrival = np.fromiter((r.arrival_s for _, r in done), float, n)
        first = np.fromiter((r.first_token_s for _, r in done), float, n)
        finish = np.fromiter((r.finish_s for _, r in done), float, n)
        sched = np.fromiter((r.first_scheduled_s for _, r in done), float, n)
        out = np.fromiter((r.num_output_tokens for _, r in done), float, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            tpot = np.where(out > 1, (finish - first) / np.maximum(out - 1, 1), np.nan)
        inst = (
            np.fromiter((instances[i] for i, _ in done), np.int64, n)
            if instances is not None
            else np.zeros(n, np.int64)
        )
        return cls(
            ttft=first - arrival,
            tpot=tpot,
            e2e=finish - arrival,
            queueing=sched - arrival,
            prompt_tokens=np.fromiter((r.num_prompt_tokens for _, r in done), float, n),
            hit_tokens=np.fromiter((max(0, r.num_hit_tokens) for _, r in done), float, n),
            output_tokens=out,
            instance=inst,
            num_aborted=len(requests) - n,
        )

    @property
    def num_finished(self) -> int:
        return int(self.ttft.size)

    def hit_ratio(self) -> float:
        """Prompt tokens served from the prefix cache at first admission / all prompt tokens."""
        total = self.prompt_tokens.sum()
        return float(self.hit_tokens.sum() / total) if total else 0.0

    def hit_ratio_per_instance(self, num_instances: int) -> list[float]:
        hits = np.bincount(self.instance, self.hit_tokens, minlength=num_instances)
        prompts = np.bincount(self.instance, self.prompt_tokens, minlength=num_instances)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(prompts > 0, hits / prompts, 0.0)
        return [float(x) for x in ratio]

    def slo_attainment(self, ttft_slo_s: float, tpot_slo_s: float) -> float:
        """Share of finished requests meeting both the TTFT and the TPOT objective."""
        if self.num_finished == 0:
            return 0.0
        ok = (self.ttft <= ttft_slo_s) & ~(self.tpot > tpot_slo_s)
        return float(ok.mean())

    def summary(self, num_instances: int, ttft_slo_s: float, tpot_slo_s: float) -> dict:
        """The JSON block ``simulate`` writes per policy (all times in seconds)."""
        return {
            "ttft": summarize(self.ttft),
            "tpot": summarize(self.tpot),
            "e2e": summarize(self.e2e),
            "queueing": summarize(self.queueing),
            "hit_ratio": self.hit_ratio(),
            "hit_ratio_per_instance": self.hit_ratio_per_instance(num_instances),
            "slo_attainment": self.slo_attainment(ttft_slo_s, tpot_slo_s),
            "slo": {"ttft_s": ttft_slo_s, "tpot_s": tpot_slo_s},
            "finished": self.num_finished,
            "aborted": self.num_aborted,
        }


# Student's t 97.5% quantiles for 1..10 degrees of freedom (beyond: the normal 1.96 plus a margin)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval over independent runs (0 for a single run).

    Used across seeds: each seed's run gives one value (e.g. its mean TTFT), and the interval says
    how far the mean over seeds could move with other seeds. NaN/None values are ignored.
    """
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return math.nan, math.nan
    if arr.size == 1:
        return float(arr[0]), 0.0
    df = arr.size - 1
    t = _T975[df - 1] if df <= len(_T975) else 1.96 + 2.5 / df
    return float(arr.mean()), float(t * arr.std(ddof=1) / math.sqrt(arr.size))


def time_between_tokens(token_times: Iterable[Sequence[float]]) -> np.ndarray:
    """Gaps between consecutive tokens of each request, pooled over requests."""
    gaps = [np.diff(np.asarray(t, dtype=float)) for t in token_times if len(t) > 1]
    return np.concatenate(gaps) if gaps else np.zeros(0)
