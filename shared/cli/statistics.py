"""``caseflow audit statistics``: the station statistics report from the ``statistics``
projection of the log's database (the live one, or one replayed from an export)."""

from __future__ import annotations

import asyncio
import enum
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from shared.adapters.db import create_engine, shown_url
from shared.application.statistics.reading import read_statistics
from shared.application.statistics.render import render_table, to_csv, to_html, to_json
from shared.application.statistics.report import StationReport, StatisticsError
from shared.domain.workflow.reference import load_reference
from shared.settings import DEFAULT_DATABASE_URL

WIDTH = 200
"""Table width when the output is not a terminal, so that files and tests see the same."""


class Format(enum.StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    html = "html"


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"caseflow audit statistics: {message}", err=True)
    return typer.Exit(code)


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _fail(f"{option} {value!r} is not a date; e.g. 2026-11-01", 2) from None


def _check_url(database_url: str) -> None:
    if not database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        scheme = database_url.split("://")[0] if "://" in database_url else database_url[:20]
        raise _fail(
            "--database-url must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
            f"(got {scheme}://…)",
            2,
        )
    if database_url.startswith("sqlite"):
        path = make_url(database_url).database
        if path and path != ":memory:" and not Path(path).is_file():
            raise _fail(f"no database at {path} (give --database-url or CASEFLOW_DATABASE_URL)")


def _report(
    database_url: str, station: str | None, town: str | None, start: date, end: date
) -> StationReport:
    reference = load_reference()

    async def main() -> StationReport:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return await read_statistics(
                    conn,
                    reference.organisations,
                    reference.catalogue,
                    station=station,
                    town=town,
                    start=start,
                    end=end,
                )
        finally:
            await engine.dispose()

    shown = shown_url(database_url)
    try:
        return asyncio.run(main())
    except StatisticsError as err:
        raise _fail(str(err), 2) from None
    except (SQLAlchemyError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _fail(f"can't read the statistics at {shown}: {first}") from None


def statistics(
    start: Annotated[str, typer.Option("--from", help="first day, e.g. 2026-11-01")],
    end: Annotated[str, typer.Option("--to", help="last day (included), e.g. 2026-11-30")],
    station: Annotated[
        str | None, typer.Option("--station", help="a station's code, e.g. xuefeng_station")
    ] = None,
    town: Annotated[
        str | None,
        typer.Option("--town", help="a town's code, for all its stations, e.g. banqiao_town"),
    ] = None,
    output_format: Annotated[
        Format, typer.Option("--format", help="table (terminal), csv, json or html")
    ] = Format.table,
    out: Annotated[
        Path | None, typer.Option("--out", help="write to this file instead of stdout")
    ] = None,
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url",
            envvar="CASEFLOW_DATABASE_URL",
            help="the log's database (live, or replayed from an export)",
        ),
    ] = DEFAULT_DATABASE_URL,
) -> None:
    """The station statistics (站点统计) of a station or a town over a period: people
    received, matters handled by kind, completed at the station vs forwarded, on-time
    rates, average working days, satisfaction."""
    first, last = _day(start, "--from"), _day(end, "--to")
    if last < first:
        raise _fail(f"--to {last} is before --from {first}", 2)
    if (station is None) == (town is None):
        raise _fail("give either --station CODE or --town CODE", 2)
    _check_url(database_url)
    report = _report(database_url, station, town, first, last)
    if output_format is Format.table:
        if out is not None:
            try:
                with out.open("w", encoding="utf-8") as handle:
                    render_table(report, Console(file=handle, width=WIDTH, highlight=False))
            except OSError as err:
                raise _fail(f"can't write {out}: {err.strerror or err}") from None
        else:
            console = Console(width=None if sys.stdout.isatty() else WIDTH, highlight=False)
            render_table(report, console)
        return
    text = {Format.csv: to_csv, Format.json: to_json, Format.html: to_html}[output_format](report)
    if out is not None:
        try:
            out.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        except OSError as err:
            raise _fail(f"can't write {out}: {err.strerror or err}") from None
        typer.echo(f"wrote {out}", err=True)
    else:
        typer.echo(text, nl=not text.endswith("\n"))
