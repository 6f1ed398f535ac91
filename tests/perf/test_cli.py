"""``wildserve perf`` commands end to end through typer."""

from __future__ import annotations

from typer.testing import CliRunner

from wildserve.errors import UnknownNameError
from wildserve.perf.cli import app

runner = CliRunner()


def test_step_prints_a_breakdown_and_kv_capacity():
    args = [
        "step",
        "--model",
        "qwen2.5-7b",
        "--gpu",
        "h20",
        "--prefill-tokens",
        "512",
        "--decode-seqs",
        "8",
        "--context",
        "1000",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for text in (
        "step total",
        "layer.mlp_up_proj",
        "layer.attention",
        "lm_head",
        "KV cache per GPU",
    ):
        assert text in result.output


def test_step_with_table_model_and_tp():
    args = [
        "step",
        "--model",
        "llama-3-70b",
        "--gpu",
        "a100",
        "--tp",
        "4",
        "--cost-model",
        "table",
        "--decode-seqs",
        "64",
        "--context",
        "2000",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "layer.tp_all_reduce" in result.output


def test_step_bad_input_raises_wildserve_errors():
    result = runner.invoke(app, ["step", "--model", "gpt-5", "--gpu", "h20", "--decode-seqs", "1"])
    assert isinstance(result.exception, UnknownNameError)
    result = runner.invoke(
        app, ["step", "--model", "qwen2.5-7b", "--gpu", "h20", "--decode-seqs", "-1"]
    )  # a negative count is refused while parsing: a usage error naming the option and range
    assert result.exit_code == 2 and "--decode-seqs" in result.output and ">= 0" in result.output


def test_check_writes_report_and_rows(tmp_path):
    out, rows = tmp_path / "docs" / "perf-model.md", tmp_path / "rows.csv"
    result = runner.invoke(app, ["check", "--output", str(out), "--csv", str(rows)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "Goal median ≤ 15%" in text and "wildserve perf check --output" in text
    assert len(rows.read_text().splitlines()) == 14486 + 1
