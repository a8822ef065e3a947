"""``caseflow audit``: what a city auditor runs against the log or an exported copy."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Audit the log: timelines, tamper evidence, export and replay, reports.",
    no_args_is_help=True,
)

# The station statistics report (from the statistics projection).
from shared.cli import statistics as statistics_cli  # noqa: E402

app.command("statistics")(statistics_cli.statistics)

# Case timelines, the case as of a moment, and the delegation compliance report.
from shared.cli import audit_case as case_cli  # noqa: E402

app.command("case")(case_cli.case)
app.command("compliance")(case_cli.compliance)

# Tamper evidence, export and replay (shared.cli.audit_integrity).
from shared.cli.audit_integrity import register as _register_integrity  # noqa: E402

_register_integrity(app)
