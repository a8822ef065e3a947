"""Reading the station statistics report from the ``statistics`` projection's table."""

from __future__ import annotations

import dataclasses
from datetime import date

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters.tables.statistics import STATISTICS_MEASURES, station_statistics
from shared.application.projections import checkpoints as cps
from shared.application.statistics.projection import StatisticsProjection
from shared.application.statistics.report import (
    ItemNames,
    StationReport,
    StatisticsError,
    StatisticsRow,
    build_report,
)
from shared.domain.events import utcnow
from shared.domain.orgs import Organisations, OrgKind
from shared.domain.workcalendar import local_date

STATISTICS = StatisticsProjection.name


def scope_of(
    organisations: Organisations, *, station: str | None, town: str | None
) -> tuple[tuple[str, str, str], list[str]]:
    """The scope (code, name zh, name en) and its stations: one station, or a town's."""
    if (station is None) == (town is None):
        raise StatisticsError("name either a station or a town")
    code = station or town or ""
    if code not in organisations:
        raise StatisticsError(f"unknown {'station' if station else 'town'} {code!r}")
    org = organisations.get(code)
    if station is not None:
        if org.kind is not OrgKind.station:
            raise StatisticsError(f"{code} is not a station (it is a {org.kind})")
        stations = [code]
    else:
        if org.kind is not OrgKind.town_government:
            raise StatisticsError(f"{code} is not a town (it is a {org.kind})")
        stations = sorted(o.code for o in organisations.stations() if o.parent == code)
        if not stations:
            raise StatisticsError(f"town {code} has no stations")
    return (code, org.name_zh, org.name_en), stations


async def read_rows(
    conn: AsyncConnection, stations: list[str], start: date, end: date
) -> list[StatisticsRow]:
    """The projection's rows of ``stations`` from ``start`` to ``end`` (both included)."""
    t = station_statistics
    query = (
        sa.select(t)
        .where(t.c.station.in_(stations), t.c.day >= start, t.c.day <= end)
        .order_by(t.c.station, t.c.day, t.c.case_kind, t.c.item)
    )
    return [
        StatisticsRow(
            station=row.station,
            day=row.day,
            case_kind=row.case_kind,
            item=row.item,
            counts={name: int(getattr(row, name)) for name in STATISTICS_MEASURES},
        )
        for row in await conn.execute(query)
    ]


async def read_statistics(
    conn: AsyncConnection,
    organisations: Organisations,
    catalogue: ItemNames | None,
    *,
    start: date,
    end: date,
    station: str | None = None,
    town: str | None = None,
) -> StationReport:
    """The report of a station (or of a town's stations) over a period."""
    scope, stations = scope_of(organisations, station=station, town=town)
    if end < start:
        raise StatisticsError(f"the period ends ({end}) before it starts ({start})")
    rows = await read_rows(conn, stations, start, end)
    names = {s: (organisations.get(s).name_zh, organisations.get(s).name_en) for s in stations}
    report = build_report(
        rows,
        stations=stations,
        start=start,
        end=end,
        scope=scope,
        station_names=names,
        catalogue=catalogue,
        opened={s: organisations.get(s).opened_on for s in stations},
        today=local_date(utcnow()),
    )
    return dataclasses.replace(report, incomplete=await counting_gap(conn))


INCOMPLETE_NOT_STARTED = (
    "统计尚未开始计数 / the statistics have not been counted yet: start the processing "
    "service, or run `caseflow projections rebuild statistics`"
)
INCOMPLETE_REBUILDING = (
    "统计正在从日志重建，尚未计完 / the statistics are being rebuilt from the log and do "
    "not count every event yet"
)
INCOMPLETE_CATCHING_UP = (
    "统计重建中断，服务正在补算 / a rebuild of the statistics was interrupted and the "
    "processing service is counting the rest"
)
INCOMPLETE_INTERRUPTED = (
    "统计重建中断，尚未计完 / a rebuild of the statistics was interrupted: run "
    "`caseflow projections rebuild statistics` to finish it"
)

_INCOMPLETE = {
    cps.REBUILDING: INCOMPLETE_REBUILDING,
    cps.CATCHING_UP: INCOMPLETE_CATCHING_UP,
    cps.INTERRUPTED: INCOMPLETE_INTERRUPTED,
}


async def counting_gap(conn: AsyncConnection) -> str | None:
    """Why the ``statistics`` projection may not count the whole log (None if it does, as
    far as a live runner keeps up: its lag is a moment's)."""
    checkpoint = await cps.load(conn, STATISTICS)
    if checkpoint is None:
        return INCOMPLETE_NOT_STARTED
    phase = cps.rebuild_phase(checkpoint.rebuilding, checkpoint.writer())
    return None if phase is None else _INCOMPLETE[phase]
