"""The import graph of ``wildserve`` follows its layers: every module imports only from lower tiers.

A layer is a subpackage (``engine``) or a top-level module (``metrics``). Layers in one tier are
siblings and never import each other: the simulator (``sim``) and the HTTP gateway (``gateway``) both
drive the engine model and the same policies, on the virtual and the wall clock, so neither may lean
on the other. ``rollout`` sits below the gateway because the gateway's vLLM CPU backend serves the
rollout's target model (``rollout.models``). Lazy imports inside functions count like any other.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

import wildserve

# Lowest first; a new subpackage or top-level module must be placed here (the test says so).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("wildserve", "errors", "io", "console", "metrics", "_blocks_native", "process_pool"),
    ("registry", "config", "config_cli", "doctor", "report", "blocks"),
    ("workload", "perf"),
    ("kvcache",),
    ("engine",),
    ("routing",),
    ("rollout", "vsearch"),
    ("sim", "gateway"),
    ("overload",),
    ("experiments",),
    ("cli",),
)
TIER = {layer: i for i, tier in enumerate(LAYERS) for layer in tier}
SRC = Path(wildserve.__file__).parent


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Every ``wildserve`` module that ``source`` (the text of ``module``) imports, lazily or not."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from wildserve import metrics`` imports the module wildserve.metrics
            found.update(f"{target}.{alias.name}" for alias in node.names if target == "wildserve")
            found.add(target)
    return {name for name in found if name == "wildserve" or name.startswith("wildserve.")}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def violations(graph: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` pairs where the imported layer is not in a lower tier."""
    bad = []
    for importer, targets in sorted(graph.items()):
        src = layer_of(importer)
        for target in sorted(targets):
            dst = layer_of(target)
            if dst == src or dst == "wildserve":
                continue
            if TIER[dst] >= TIER[src]:
                why = "a sibling" if TIER[dst] == TIER[src] else "a higher layer"
                bad.append(f"{importer} imports {target} ({dst} is {why} of {src})")
    return bad


@functools.cache
def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(SRC.rglob("*.py")):
        name = module_name(path, SRC)
        graph[name] = imported_modules(path.read_text(), name, path.name == "__init__.py")
    return graph


def test_every_layer_is_placed():
    layers = {layer_of(m) for m in import_graph()}
    assert layers <= set(TIER), f"place these in LAYERS: {sorted(layers - set(TIER))}"


def test_no_module_imports_upward_or_sideways():
    assert violations(import_graph()) == []


def test_gateway_does_not_import_sim():
    graph = import_graph()
    leaks = [
        f"{m} -> {t}"
        for m, targets in graph.items()
        if layer_of(m) == "gateway"
        for t in targets
        if layer_of(t) == "sim"
    ]
    assert leaks == []


@pytest.mark.parametrize(
    ("module", "is_package", "source", "expected"),
    [
        ("wildserve.gateway.cli", False, "from wildserve.sim.cli import _d\n", 1),
        (
            "wildserve.sim.run",
            False,
            "def f():\n    from wildserve.experiments import lmetric\n",
            1,
        ),
        ("wildserve.engine", True, "from .cluster import build_engines\n", 0),
        ("wildserve.engine.cluster", False, "from ..routing import make_policy\n", 1),
        ("wildserve.workload.stats", False, "from wildserve import metrics, cli\n", 1),
        ("wildserve.sim.run", False, "import wildserve.engine.cluster\n", 0),
    ],
)
def test_checker_sees_lazy_relative_and_package_imports(module, is_package, source, expected):
    """The check itself can fail: each planted upward or sideways import is reported."""
    graph = {module: imported_modules(source, module, is_package)}
    assert len(violations(graph)) == expected, violations(graph)
