"""The short form of benchmarks/engine_vs_vllm.py on fleet engine 0 (before any other traffic):
the engine model and vLLM's own scheduler on the same request sequences, step by step."""

from __future__ import annotations

import pytest

from tests.integration_vllm.fleet import REPO, SIZES, engine_vs_vllm

OUT = REPO / "results/engine-vs-vllm-short"
RESULTS: dict = {"sizes": SIZES.__dict__, "short": True, "scenarios": {}}


@pytest.fixture(scope="module", autouse=True)
def write_results():
    yield
    from wildserve.io import atomic_write_json

    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json(OUT / "results.json", RESULTS)
    lines = [engine_vs_vllm.summary_line(n, c) for n, c in RESULTS["scenarios"].items()]
    (OUT / "summary.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("scenario", engine_vs_vllm.scenarios(short=True), ids=lambda s: s.name)
def test_engine_model_against_vllms_scheduler(fleet, scenario):
    c = engine_vs_vllm.run_scenario(fleet.engines[0].url, fleet.traces[0], scenario, SIZES)
    RESULTS["scenarios"][scenario.name] = c
    print(engine_vs_vllm.summary_line(scenario.name, c))
    assert c["steps_vllm"] > 0 and c["requests"] == len(c["per_request"])
    if scenario.name == "shared-prefix":  # the acceptance point: prefix hits agree exactly
        assert c["hit_tokens_vllm"] > 0
        assert c["hit_tokens_equal"] == c["requests"], c["first_differing_step"]
    else:  # the regime the scenario is for was reached
        assert c["preemptions_vllm"] > 0
