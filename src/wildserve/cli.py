"""Command line: parse options, build configs, call the library. No logic lives here."""

from __future__ import annotations

import os
import sys

import typer

from wildserve.errors import WildserveError

app = typer.Typer(
    help="wildserve: LLM-serving research results you can run on real traces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
experiment_app = typer.Typer(
    help="Reproduce a paper's experiment end to end.", no_args_is_help=True
)
app.add_typer(experiment_app, name="experiment")


def _register() -> None:
    """Attach each area's commands; area modules import their heavy dependencies lazily."""
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


def _interrupted() -> None:
    """Leave at once after Ctrl-C. By the time the interrupt reaches here every ``finally`` has run:
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
    _register()
    try:
        app()
    except WildserveError as exc:
        print(f"wildserve: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:
        if _from_ctrl_c(exc):
            _interrupted()
        raise


if __name__ == "__main__":
    main()
