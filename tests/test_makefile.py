"""`make help` (also plain `make`) names every target the Makefile defines, so the help cannot drift."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


def _targets() -> set[str]:
    text = MAKEFILE.read_text()
    phony = set(re.search(r"^\.PHONY:(.*)$", text, re.M).group(1).split())
    defined = set(re.findall(r"^([a-z][a-z-]*):", text, re.M))
    assert phony <= defined, f"phony targets without a rule: {sorted(phony - defined)}"
    return phony - {"help"}


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_plain_make_prints_help_naming_every_target() -> None:
    out = subprocess.run(
        ["make", "-s", "-f", str(MAKEFILE)],
        cwd=MAKEFILE.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = set(re.findall(r"^make ([a-z-]+)", out, re.M))
    assert listed == _targets()
