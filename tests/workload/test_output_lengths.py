"""Output-length shaping: the transforms, the trace options every command accepts, the CoT distribution."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from wildserve.errors import ConfigError
from wildserve.workload import load_trace
from wildserve.workload.lengths import REASONING_CAP, reasoning_lengths
from wildserve.workload.request import Request
from wildserve.workload.transforms import resample_outputs, scale_outputs


def reqs(*outputs: int) -> list[Request]:
    return [Request(i, float(i), 100, o) for i, o in enumerate(outputs)]


def test_scale_outputs_multiplies_rounds_caps_and_leaves_the_input_alone():
    src = reqs(1, 10, 333, 5000)
    out = list(scale_outputs(src, 1.5, cap=4000))
    assert [r.output_tokens for r in out] == [2, 15, 500, 4000]
    assert [r.output_tokens for r in src] == [1, 10, 333, 5000]
    assert [r.output_tokens for r in scale_outputs(reqs(1, 3), 0.1)] == [1, 1]  # never 0
    assert [r.arrival_s for r in out] == [r.arrival_s for r in src]


@pytest.mark.parametrize("kw", [{"factor": 0.0}, {"factor": -1.0}, {"cap": 0}])
def test_scale_outputs_rejects_bad_arguments_before_reading(kw):
    with pytest.raises(ConfigError):
        scale_outputs(iter(()), **{"factor": 1.0, **kw})


def test_resample_outputs_draws_from_the_distribution_reproducibly():
    dist = reasoning_lengths(cap=1000)
    a = [
        r.output_tokens for r in resample_outputs(reqs(*[5] * 200), dist, np.random.default_rng(1))
    ]
    b = [
        r.output_tokens for r in resample_outputs(reqs(*[5] * 200), dist, np.random.default_rng(1))
    ]
    c = [
        r.output_tokens for r in resample_outputs(reqs(*[5] * 200), dist, np.random.default_rng(2))
    ]
    assert a == b != c
    assert min(a) >= 1 and max(a) == 1000  # most draws exceed 1000 and are capped


def test_reasoning_lengths_match_their_documented_shape():
    """Mean 6,000 before the cap, median ~4,360, 2.8 % above 20k, 4.9 % at the 16k cap."""
    rng = np.random.default_rng(0)
    raw = reasoning_lengths(cap=10**9).sample(rng, 400_000)
    assert raw.mean() == pytest.approx(6000, rel=0.01)
    assert np.median(raw) == pytest.approx(4357, rel=0.01)
    assert (raw > 20_000).mean() == pytest.approx(0.0284, abs=0.002)
    capped = reasoning_lengths().sample(rng, 400_000)
    assert capped.max() == REASONING_CAP
    assert (capped == REASONING_CAP).mean() == pytest.approx(0.0489, abs=0.002)


def test_trace_options_shape_outputs_of_any_trace():
    plain = load_trace("builtin:azure-conv")[:2000]
    x4 = load_trace("builtin:azure-conv", output_scale=4, output_cap=2000)[:2000]
    assert [r.prompt_tokens for r in x4] == [r.prompt_tokens for r in plain]
    assert [r.arrival_s for r in x4] == [r.arrival_s for r in plain]
    assert [r.output_tokens for r in x4] == [min(2000, 4 * r.output_tokens) for r in plain]
    cot = load_trace("builtin:azure-conv", output_lengths="reasoning", output_seed=3)[:2000]
    again = load_trace("builtin:azure-conv", output_lengths="reasoning", output_seed=3)[:2000]
    assert [r.output_tokens for r in cot] == [r.output_tokens for r in again]
    assert np.mean([r.output_tokens for r in cot]) > 10 * np.mean([r.output_tokens for r in plain])
    assert max(r.output_tokens for r in cot) <= REASONING_CAP


@pytest.mark.parametrize(
    "opts, match",
    [
        ({"output_lengths": "poetry"}, "output_lengths"),
        ({"output_scale": "big"}, "output_scale"),
        ({"output_cap": 1.5}, "output_cap"),
        ({"no_such_option": 1}, "no option"),
    ],
)
def test_bad_trace_options_fail_with_one_message(opts, match):
    with pytest.raises(ConfigError, match=match):
        load_trace("builtin:azure-code", **opts)


def test_the_trace_command_takes_output_options():
    res = subprocess.run(
        [sys.executable, "-m", "wildserve.cli", "trace", "info", "builtin:azure-code"]
        + ["-o", "output_scale=16", "-o", "output_cap=100", "--limit", "500"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if "output tokens" in line)
    assert "max 100" in row
