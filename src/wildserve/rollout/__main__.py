"""`python -m wildserve.rollout` runs the same command as `wildserve rollout`."""

import typer

from wildserve.rollout.cli import rollout

typer.run(rollout)
