"""``caseflow catalogue``: show, lock and check the service catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="The service catalogue: show items, lock published versions, check the data.",
    no_args_is_help=True,
    add_completion=False,
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="reference data directory (default: the packaged shared/data)",
        exists=True,
        file_okay=False,
    ),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"caseflow: {message}", err=True)
    return typer.Exit(1)


@app.command()
def show(
    code: Annotated[
        str | None, typer.Argument(help="one item's code (all items if omitted)")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Print the catalogue, or every version of one item with its materials."""
    from rich.console import Console
    from rich.table import Table

    from shared.domain.catalogue.loader import CatalogueError, UnknownItem, load_catalogue
    from shared.domain.orgs import OrganisationError

    try:
        catalogue = load_catalogue(data_dir)
    except (CatalogueError, OrganisationError) as err:
        raise _fail(str(err)) from None
    console = Console()
    if code is None:
        table = Table(title=f"Service catalogue ({len(catalogue)} items)")
        table.add_column("code", no_wrap=True)
        table.add_column("v", justify="right")
        table.add_column("status")
        table.add_column("名称", overflow="fold", ratio=2)
        table.add_column("authority", overflow="fold", ratio=1)
        table.add_column("completion", overflow="fold", ratio=1)
        table.add_column("days", justify="right")
        table.add_column("¥", justify="right")
        for item in catalogue.entries():
            table.add_row(
                item.code,
                str(item.version),
                item.status,
                item.name_zh,
                item.authority,
                f"→ {item.forward_to}" if item.forward_to else "station",
                f"{item.legal_limit_days}/{item.committed_limit_days}",
                f"{item.fee_yuan:.0f}"
                if item.fee_yuan == item.fee_yuan.to_integral()
                else str(item.fee_yuan),
            )
        table.caption = "days: legal/committed working days; → forwarded to"
        console.print(table)
        return
    try:
        versions = catalogue.versions(code)
    except UnknownItem as err:
        raise _fail(str(err)) from None
    for item in versions:
        table = Table(title=f"{item.key} ({item.status})", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        for field, value in (
            ("name", f"{item.name_zh} / {item.name_en}"),
            ("category", str(item.category)),
            ("authority", item.authority),
            ("legal basis", item.legal_basis),
            (
                "limits",
                f"legal {item.legal_limit_days}, committed {item.committed_limit_days}"
                " working days",
            ),
            ("fee", f"¥{item.fee_yuan}"),
            ("completion", str(item.completion)),
            ("forward to", item.forward_to or "-"),
            ("notify on", ", ".join(item.notify_on)),
            ("workflow", f"{item.workflow} v{item.workflow_version}"),
        ):
            table.add_row(field, value)
        materials = Table(title=f"{item.key} materials")
        for column in ("code", "名称", "name", "trust", "original"):
            materials.add_column(column)
        for material in item.materials:
            materials.add_row(
                material.code,
                material.name_zh,
                material.name_en,
                str(material.trust_level),
                "yes" if material.original_required else "no",
            )
        console.print(table)
        console.print(materials)


@app.command()
def lock(data_dir: DataDir = None) -> None:
    """Add newly published versions to the lock; refuses if a locked version changed."""
    from shared.domain.catalogue.loader import CatalogueError, lock_catalogue
    from shared.domain.orgs import OrganisationError

    try:
        added = lock_catalogue(data_dir)
    except (CatalogueError, OrganisationError) as err:
        raise _fail(str(err)) from None
    if added:
        typer.echo("locked: " + ", ".join(added))
    else:
        typer.echo("nothing to lock: every published version is already locked")


@app.command()
def check(data_dir: DataDir = None) -> None:
    """Validate organisations, calendar and catalogue; exit 1 naming the problem."""
    from shared.domain.catalogue.loader import CatalogueError, load_catalogue
    from shared.domain.catalogue.models import Completion
    from shared.domain.orgs import OrganisationError, load_organisations
    from shared.domain.workcalendar import CalendarError, load_calendar

    try:
        orgs = load_organisations(data_dir)
        calendar = load_calendar(data_dir)
        catalogue = load_catalogue(data_dir, orgs)
    except (CatalogueError, OrganisationError, CalendarError) as err:
        raise _fail(str(err)) from None
    published = catalogue.published()
    station = sum(1 for i in published if i.completion is Completion.station)
    drafts = sum(1 for i in catalogue.entries() if i.status == "draft")
    provisional = sorted(calendar.provisional_years)
    typer.echo(
        f"organisations: {len(orgs)} ({len(orgs.stations())} stations)\n"
        f"calendar: {calendar.first_year}-{calendar.last_year}"
        + (f" (provisional: {', '.join(map(str, provisional))})" if provisional else "")
        + f"\ncatalogue: {len(published)} published items ({station} at the station,"
        f" {len(published) - station} forwarded), {drafts} drafts,"
        f" {len(catalogue.materials())} materials; lock matches"
    )
