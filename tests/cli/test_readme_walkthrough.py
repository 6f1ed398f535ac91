"""The README's "First ten minutes" walkthrough, run command by command exactly as written.

Each ``wildserve ...`` line of the marked block runs in a fresh folder; a trailing ``# exit N``
comment states an expected non-zero status. A README edit that breaks a command fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from wildserve.cli import run

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough() -> list[tuple[str, int]]:
    """(command line, expected exit status) of every command in the marked block."""
    text = README.read_text()
    block = text.split("<!-- walkthrough:start -->", 1)[1].split("<!-- walkthrough:end -->", 1)[0]
    block = block.replace("\\\n", " ")  # join continued lines
    commands = []
    for line in block.splitlines():
        line = line.strip()
        if not line.startswith("wildserve"):
            continue
        command, _, comment = line.partition("#")
        expected = re.match(r"\s*exit (\d+)", comment)
        commands.append((" ".join(command.split()), int(expected.group(1)) if expected else 0))
    return commands


def test_the_walkthrough_is_there():
    names = [c.split()[1] for c, _ in walkthrough()]
    assert {"--version", "doctor", "simulate", "trace", "cache"} <= set(names), names


def test_the_walkthrough_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for command, expected in walkthrough():
        args = shlex.split(command)[1:]
        status = run(args)
        out = capsys.readouterr()
        assert status == expected, f"{command}: exit {status}\n{out.err[-2000:]}"
        if expected:
            assert len(out.err.strip().splitlines()) == 1 and "Traceback" not in out.err
        if "--out" in args:
            folder = tmp_path / args[args.index("--out") + 1]
            assert any(folder.iterdir()), f"{command} wrote nothing into {folder}"
    assert (tmp_path / "results/first/results.json").exists()
    assert (tmp_path / "results/first/latency_cdf.png").exists()


@pytest.mark.parametrize("section", ["## First ten minutes", "## Command line"])
def test_the_readme_has_the_cli_sections(section):
    assert section in README.read_text()
