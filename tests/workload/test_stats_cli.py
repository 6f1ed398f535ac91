from __future__ import annotations

import pytest
from typer.testing import CliRunner

from wildserve.errors import ConfigError
from wildserve.workload import load_trace
from wildserve.workload.cli import app, parse_options
from wildserve.workload.request import Request
from wildserve.workload.stats import summarize


def test_summary_by_hand():
    reqs = [
        Request(0, 0.0, 1024, 10, hash_ids=(1, 2), block_size=512, session_id=5, category="text"),
        Request(
            1, 2.0, 1100, 30, hash_ids=(1, 2, 3), block_size=512, session_id=5, category="text"
        ),
        Request(2, 4.0, 600, 20, hash_ids=(9, 2), block_size=512, session_id=6, category="image"),
        Request(3, 4.0, 100, 40),
    ]
    s = summarize(reqs)
    assert s.num_requests == 4 and s.duration_s == 4.0 and s.rate == 0.75
    assert s.num_sessions == 2
    assert s.categories == {"text": 2, "image": 1}
    # full blocks: 2 + 2 (the 3rd is partial) + 1; reused: request 1's two blocks (same chain).
    # request 2's block (9) is new, and its id 2 sits under a different parent: not reused
    assert (s.num_prompt_blocks, s.num_reused_blocks) == (5, 2)
    assert s.block_reuse == pytest.approx(0.4)
    assert s.prompt_pcts["max"] == 1100 and s.output_pcts["mean"] == 25


def test_block_reuse_matches_prefix_tuples_on_builtin():
    # independent definition: a full block is reused if the tuple of ids up to it was seen before
    reqs = load_trace()
    seen: set[tuple[int, ...]] = set()
    total = reused = 0
    for r in reqs:
        for k in range(1, r.prompt_tokens // 512 + 1):
            key = r.hash_ids[:k]
            total += 1
            reused += key in seen
            seen.add(key)
    s = summarize(reqs)
    assert (s.num_prompt_blocks, s.num_reused_blocks) == (total, reused)


def test_summary_empty_and_no_ids():
    s = summarize([])
    assert s.num_requests == 0 and s.rate == 0.0 and s.block_reuse is None


def testparse_options():
    assert parse_options(["session_rate=0.5", "seed=3", "max_idle_s=none", "x=abc"]) == {
        "session_rate": 0.5,
        "seed": 3,
        "max_idle_s": None,
        "x": "abc",
    }
    with pytest.raises(ConfigError):
        parse_options(["oops"])


def test_cli_info_default_and_weka():
    runner = CliRunner()
    res = runner.invoke(app, ["info"], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    reuse = summarize(load_trace()).block_reuse
    assert "12,031" in res.output and f"{reuse:.1%} of" in res.output
    res = runner.invoke(
        app,
        ["info", "builtin:weka-claude-code", "-o", "session_rate=0.5", "--limit", "200"],
        env={"COLUMNS": "160"},
    )
    assert res.exit_code == 0, res.output
    assert "200" in res.output and "tool_result" in res.output


def test_cli_list():
    res = CliRunner().invoke(app, ["list"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "azure-conv" in res.output and "bailian" in res.output


def test_cli_bad_spec_raises_wildserve_error():
    res = CliRunner().invoke(app, ["info", "builtin:nope"])
    assert res.exit_code != 0 and "unknown builtin trace 'nope'" in str(res.exception)
