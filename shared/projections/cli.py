"""``caseflow projections``: the read models kept from the log."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Read models (projections of the log): status, rebuild.", no_args_is_help=True
)
