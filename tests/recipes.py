"""Run the code block of a package docstring's "add one" recipe as a module outside the package."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def recipe_code(doc: str) -> str:
    """The first literal block (the indented lines after a line ending in ``::``) of ``doc``."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith("::")) + 1
    indent = len(lines[start + 1]) - len(lines[start + 1].lstrip())
    block = []
    for line in lines[start:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def run_recipe(doc: str, module: str, driver: str, folder: Path) -> str:
    """Write the recipe to ``folder/module.py`` and run ``driver`` (which imports it) in a fresh
    process, so the names it registers do not leak into this one; returns the driver's stdout."""
    (folder / f"{module}.py").write_text(recipe_code(doc))
    prelude = f"import sys\nsys.path.insert(0, {str(folder)!r})\nimport {module}  # noqa: F401\n"
    out = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(driver)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout
