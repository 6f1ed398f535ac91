"""Every numeric option of every command is checked while parsing: an out-of-range value is one
line naming the option and its range, exit status 2, no traceback and no file written.

The options are found by walking the real command tree, so a new command or option is covered (and
one without declared bounds fails ``test_every_numeric_option_declares_bounds``).
"""

from __future__ import annotations

import math

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wildserve.cli import _register, app, run
from wildserve.config_cli import BoundedNumber, command_options

_register()
_OPTIONS = command_options(app)


def _numeric_options() -> list[tuple[tuple[str, ...], str, type, BoundedNumber | None]]:
    out = []
    for path, flag, kind, parser in _OPTIONS:
        if kind in (int, float):
            out.append((path, flag, kind, parser))
    return out


NUMERIC = _numeric_options()
IDS = [f"{' '.join(p)} {flag}" for p, flag, _, _ in NUMERIC]


def test_the_walk_finds_the_commands():
    commands = {" ".join(p) for p, *_ in NUMERIC}
    for name in ("simulate", "replay", "gateway", "engine", "experiment lmetric",
                 "experiment kunserve", "experiment kvcache", "experiment omega", "rollout",
                 "rollout-train", "cache analyze", "vsearch build", "perf step"):  # fmt: skip
        assert name in commands, sorted(commands)
    assert len(NUMERIC) > 60


@pytest.mark.parametrize(("path", "flag", "kind", "parser"), NUMERIC, ids=IDS)
def test_every_numeric_option_declares_bounds(path, flag, kind, parser):
    assert parser is not None and parser.bounds, (
        f"wildserve {' '.join(path)} {flag}: a numeric option without bounds; declare them on its "
        "config field (option(..., ge=...)) or with config_cli.bounded(...)"
    )


def _outside(kind: type, parser: BoundedNumber) -> st.SearchStrategy:
    """Values outside the parser's range (NaN and infinities too, for floats)."""
    b = parser.bounds
    choices = []
    if kind is int:
        if "ge" in b:
            choices.append(st.integers(max_value=math.ceil(b["ge"]) - 1, min_value=-(10**12)))
        if "gt" in b:
            choices.append(st.integers(max_value=math.floor(b["gt"]), min_value=-(10**12)))
        if "le" in b:
            choices.append(st.integers(min_value=math.floor(b["le"]) + 1, max_value=10**12))
        if "lt" in b:
            choices.append(st.integers(min_value=math.ceil(b["lt"]), max_value=10**12))
        choices.append(st.sampled_from(["1.5", "x", ""]))
    else:
        finite = {"allow_nan": False, "allow_infinity": False}
        if "ge" in b:
            choices.append(
                st.floats(max_value=b["ge"], exclude_max=True, min_value=-1e12, **finite)
            )
        if "gt" in b:
            choices.append(st.floats(max_value=b["gt"], min_value=-1e12, **finite))
        if "le" in b:
            choices.append(st.floats(min_value=b["le"], exclude_min=True, max_value=1e12, **finite))
        if "lt" in b:
            choices.append(st.floats(min_value=b["lt"], max_value=1e12, **finite))
        bad = ["nan", "-inf", "x"] + ([] if parser.allow_inf else ["inf"])
        choices.append(st.sampled_from(bad))
    return st.one_of(*choices).map(str)


BOUNDED = [(p, f, k, parser) for p, f, k, parser in NUMERIC if parser is not None and parser.bounds]


@pytest.mark.parametrize(("path", "flag", "kind", "parser"), BOUNDED, ids=[
    f"{' '.join(p)} {f}" for p, f, _, _ in BOUNDED])  # fmt: skip
def test_out_of_range_values_are_refused_while_parsing(path, flag, kind, parser, tmp_path_factory):
    @settings(max_examples=4, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(_outside(kind, parser))
    def check(value: str) -> None:
        folder = tmp_path_factory.mktemp("run")
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(folder)
            err = _run_captured([*path, f"{flag}={value}", *_output_args(path, folder)])
        status, text = err
        assert status == 2, (path, flag, value, text)
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) == 1 and flag in lines[0] and "Traceback" not in text, text
        assert not any(folder.iterdir()), f"{path} {flag}={value} wrote {list(folder.iterdir())}"

    check()


OUTPUT_FLAGS = ("--out", "--output-json", "--output", "--report", "--plot-dir", "--csv")


def _output_args(path: tuple[str, ...], folder) -> list[str]:
    """Point every output option of the command into ``folder`` (which must stay empty)."""
    return [f"{flag}={folder / 'written'}" for p, flag, _, _ in _OPTIONS
            if p == path and flag in OUTPUT_FLAGS]  # fmt: skip


def _run_captured(args: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = run(args)
    return status, err.getvalue()


def test_simulate_instances_zero_is_not_an_index_error(capsys):
    assert run(["simulate", "--instances", "0"]) == 2
    err = capsys.readouterr().err
    assert "--instances" in err and ">= 1" in err and "Traceback" not in err


def test_typer_is_what_the_walk_reads():
    assert isinstance(typer.main.get_command(app), typer.core.TyperGroup)
