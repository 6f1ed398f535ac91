"""The top-level command line: --version, doctor, one-line usage errors, the config->option helper."""

from __future__ import annotations

import dataclasses
import math

import pytest
import typer
from typer.testing import CliRunner

import wildserve
from wildserve.cli import run
from wildserve.config_cli import Fields, bounded, config_options, generated_params
from wildserve.engine.config import option


def test_version(capsys):
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"wildserve {wildserve.__version__}"


def test_doctor_reports_extras_numba_gpu_and_vllm(capsys):
    assert run(["doctor"]) == 0
    out = capsys.readouterr().out
    for what in ("extra [gateway]", "extra [vsearch]", "extra [rollout]", "numba", "cache dir",
                 "GPU", "vllm"):  # fmt: skip
        assert what in out, out


def test_doctor_names_what_is_missing(monkeypatch):
    from wildserve import doctor

    real = doctor.metadata.version

    def version(name: str) -> str:
        if name == "faiss-cpu":
            raise doctor.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(doctor.metadata, "version", version)
    by_name = {s.name: s for s in doctor.extras_status()}
    assert not by_name["vsearch"].ok
    assert any(m.startswith("faiss-cpu") for m in by_name["vsearch"].missing)
    assert by_name["gateway"].ok  # the others are judged on their own packages


@pytest.mark.parametrize(
    "args",
    [["simulate", "--no-such-option"], ["no-such-command"], ["simulate", "--instances", "x"]],
)
def test_usage_errors_are_one_line_exit_2(args, capsys):
    assert run(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("wildserve: error:"), err


@dataclasses.dataclass
class _Toy:
    count: int = option(3, "how many", ge=1)
    share: float = option(0.5, "a fraction", gt=0, le=1)
    name: str = option("a", "a name")
    enable_x: bool = option(True, "switch")
    limit: int | None = option(None, "optional cap", ge=0)
    items: list[int] = dataclasses.field(default_factory=list)  # not a scalar: not an option


def _toy_app():
    app = typer.Typer()
    seen = {}

    @app.command()
    @config_options(toy=Fields(_Toy, flags={"count": "n"}))
    def cmd(toy: _Toy, extra: int = 1) -> None:
        seen["toy"], seen["extra"] = toy, extra

    @app.command()
    def other() -> None:  # a second command keeps typer in sub-command mode
        pass

    return app, seen, cmd


def test_config_options_build_the_config_from_its_fields():
    app, seen, cmd = _toy_app()
    res = CliRunner().invoke(
        app, ["cmd", "--n", "5", "--share", "1", "--no-enable-x", "--limit", "0"]
    )
    assert res.exit_code == 0, res.output
    assert seen["toy"] == _Toy(count=5, share=1.0, name="a", enable_x=False, limit=0)
    assert set(generated_params(cmd)) == {"n", "share", "name", "enable_x", "limit"}
    res = CliRunner().invoke(app, ["cmd"])
    assert seen["toy"] == _Toy() and seen["extra"] == 1
    help_text = CliRunner().invoke(app, ["cmd", "--help"]).output
    assert "how many" in help_text and "a fraction" in help_text


@pytest.mark.parametrize(
    "args", [["--n", "0"], ["--share", "0"], ["--share", "1.5"], ["--share", "nan"],
             ["--share", "inf"], ["--limit", "-1"], ["--n", "2.5"]],
)  # fmt: skip
def test_out_of_range_is_a_usage_error_naming_the_range(args):
    app, seen, _ = _toy_app()
    res = CliRunner().invoke(app, ["cmd", *args])
    assert res.exit_code == 2 and not seen
    assert args[0] in res.output


def test_bounded_parser():
    p = bounded(float, gt=0, lt=1)
    assert p("0.25") == 0.25
    assert p.describe() == "> 0 and < 1"
    for bad in ("0", "1", "nan", "-inf", "x"):
        with pytest.raises(typer.BadParameter):
            p(bad)
    assert bounded(float, allow_inf=True, gt=0)("inf") == math.inf
