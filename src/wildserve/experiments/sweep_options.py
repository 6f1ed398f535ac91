"""The options every ``wildserve experiment ...`` takes (with ``--jobs``): where its runs execute."""

from __future__ import annotations

from typing import Annotated

import typer

ExecutorOption = Annotated[
    str, typer.Option(help="where the sweep's runs execute: local (worker processes) or ray")
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(help="with --executor ray: the cluster's ADDRESS, or auto (default: a local Ray)"),
]
