"""`benchmarks/omega_budget.py` refuses bad shares or methods before it loads any data."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--fractions", "0.5,0"], "--fractions: 0 is outside the allowed range"),
        (["--fractions", "1.5"], "--fractions: 1.5 is outside the allowed range"),
        (["--methods", "laet,omega"], "only laet and darth are refitted at a share"),
    ],
)
def test_bad_options_exit_2_naming_the_option(args, words, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(BENCH / "omega_budget.py"), "--cache", str(tmp_path), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert words in proc.stderr.splitlines()[-1]
    assert not any(tmp_path.iterdir())  # nothing prepared or written
