"""``caseflow audit``: what a city auditor runs against the log or an exported copy."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Audit the log: timelines, tamper evidence, export and replay, reports.",
    no_args_is_help=True,
)

# Tamper evidence, export and replay (shared.audit.integrity_cli).
from shared.audit.integrity_cli import register as _register_integrity  # noqa: E402

_register_integrity(app)
