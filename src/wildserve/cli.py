"""Command line: parse options, build configs, call the library. No logic lives here."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from wildserve.errors import WildserveError

try:  # typer >= 0.24 vendors click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer on click
    from click.exceptions import ClickException, NoArgsIsHelpError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
experiment_app = typer.Typer(
    help="Reproduce a paper's experiment end to end.", no_args_is_help=True
)
app.add_typer(experiment_app, name="experiment")


def _version(value: bool) -> None:
    if value:
        import wildserve

        typer.echo(f"wildserve {wildserve.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """wildserve: LLM-serving research results you can run on real traces."""


_registered = False


def _register() -> None:
    """Attach each area's commands (once); area modules import their heavy dependencies lazily."""
    global _registered
    if _registered:
        return
    _registered = True
    from wildserve.doctor import doctor
    from wildserve.experiments import kunserve_cli, lmetric_cli, omega_cli
    from wildserve.experiments import kvcache_cli as kvcache_experiment
    from wildserve.gateway import cli as gateway_cli
    from wildserve.kvcache import cli as kvcache_cli
    from wildserve.perf import cli as perf_cli
    from wildserve.rollout import cli as rollout_cli
    from wildserve.sim import cli as sim_cli
    from wildserve.vsearch import cli as vsearch_cli
    from wildserve.workload import cli as workload_cli

    app.command("simulate")(sim_cli.simulate)
    app.command("gateway")(gateway_cli.gateway)
    app.command("engine")(gateway_cli.engine)
    app.command("replay")(gateway_cli.replay)
    app.add_typer(workload_cli.app, name="trace")
    app.add_typer(perf_cli.app, name="perf")
    app.add_typer(vsearch_cli.app, name="vsearch")
    app.add_typer(kvcache_cli.app, name="cache")
    experiment_app.command("lmetric")(lmetric_cli.lmetric)
    experiment_app.command("omega")(omega_cli.omega)
    experiment_app.command("kvcache")(kvcache_experiment.kvcache)
    experiment_app.command("kunserve")(kunserve_cli.kunserve)
    app.command("rollout")(rollout_cli.rollout)
    app.command("rollout-train")(rollout_cli.train)
    app.command("doctor")(doctor)


_click_command = None


def _command():
    """The click command tree of ``app``, built once per process."""
    global _click_command
    if _click_command is None:
        _register()
        _click_command = typer.main.get_command(app)
    return _click_command


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command line and return its exit status. Every expected failure (a bad option, a
    bad input file, an empty trace) is one line on stderr and status 2; a traceback is a bug."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        status = _command().main(args=args, prog_name="wildserve", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx is not None else str(exc))
        return 2
    except ClickException as exc:  # usage errors: bad or out-of-range options, unknown commands
        command = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "wildserve"
        print(f"wildserve: error: {exc.format_message()} (see {command} --help)", file=sys.stderr)
        return exc.exit_code
    except WildserveError as exc:
        print(f"wildserve: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        return 130
    except SystemExit as exc:
        if _from_ctrl_c(exc):
            return 130
        raise
    return status if isinstance(status, int) else 0


def _interrupted() -> None:
    """Leave at once after Ctrl-C (typer reports it as status 130). By then every ``finally`` has run:
    workers are stopped and atomic writes cleaned up. A normal interpreter exit would then spend
    seconds joining pool threads and freeing whole traces, which breaks the 2 s promise."""
    print("wildserve: interrupted", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _from_ctrl_c(exc: BaseException) -> bool:
    """Click turns KeyboardInterrupt into Abort and then ``sys.exit(1)``; find it in the chain."""
    seen = exc.__context__
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def main() -> None:
    status = run()
    if status == 130:
        _interrupted()
    sys.exit(status)


if __name__ == "__main__":
    main()
