"""What the audit reads, straight from the ``events`` table (no bus, no read model it
trusts), so it works the same on the live database and on one replayed from an export.

The case list (``case_index``) is used only as a shortcut from a case number to its id,
and the answer is checked against the log; without it (or when it disagrees) the log's
first events are searched.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters.eventlog.store import COLUMNS, read_case_in, row_to_event
from shared.adapters.tables.eventlog import events as t
from shared.adapters.tables.workflow import case_index
from shared.domain.audit.compliance import ComplianceReport, check_period, compliance_report
from shared.domain.audit.judge import register_from
from shared.domain.audit.timeline import Basis, Timeline, build_timeline
from shared.domain.delegation import CASE_KIND as DELEGATION_KIND
from shared.domain.delegation import china_midnight
from shared.domain.events import StoredEvent
from shared.domain.workflow.reference import Reference

CASE_NUMBER = re.compile(r"^[A-Z]{1,8}-\d{4}-\d{6}$")


class CaseNotFound(LookupError):
    """No case with that number or id in the log."""


async def resolve_case(conn: AsyncConnection, ref: str) -> uuid.UUID:
    """The id of the case named by ``ref``: a case id, or a case number (XF-2026-000123)."""
    ref = ref.strip()
    try:
        case_id = uuid.UUID(ref)
    except ValueError:
        case_id = None
    if case_id is not None:
        found = await conn.execute(sa.select(t.c.case_id).where(t.c.case_id == case_id).limit(1))
        if found.first() is None:
            raise CaseNotFound(f"no case {ref} in the log")
        return case_id
    if not CASE_NUMBER.match(ref):
        raise CaseNotFound(
            f"{ref!r} is neither a case number (like XF-2026-000123) nor a case id (a UUID)"
        )
    indexed = (
        await conn.execute(sa.select(case_index.c.case_id).where(case_index.c.case_number == ref))
    ).scalar()
    if indexed is not None:
        first = await conn.execute(
            sa.select(t.c.payload).where(t.c.case_id == indexed, t.c.version == 1)
        )
        row = first.first()
        if row is not None and row.payload.get("case_number") == ref:
            return uuid.UUID(str(indexed))
    number = t.c.payload["case_number"].as_string()
    scanned = (
        await conn.execute(
            sa.select(t.c.case_id)
            .where(t.c.version == 1, number == ref)
            .order_by(t.c.position)
            .limit(1)
        )
    ).scalar()
    if scanned is None:
        raise CaseNotFound(f"no case {ref} in the log")
    return uuid.UUID(str(scanned))


async def read_delegation_events(conn: AsyncConnection) -> list[StoredEvent]:
    """Every event of every delegation instrument's stream (the register), by stream."""
    rows = await conn.execute(
        sa.select(*COLUMNS)
        .where(t.c.case_kind == DELEGATION_KIND)
        .order_by(t.c.case_id, t.c.version)
    )
    return [row_to_event(r) for r in rows]


async def read_timeline(
    conn: AsyncConnection,
    ref: str,
    reference: Reference,
    *,
    as_of: datetime | None = None,
    basis: Basis = Basis.OCCURRED,
) -> Timeline:
    """The timeline of the case named by ``ref`` (see :func:`build_timeline`)."""
    case_id = await resolve_case(conn, ref)
    events = await read_case_in(conn, case_id)
    if not events:
        raise CaseNotFound(f"no case {ref} in the log")
    register = await read_delegation_events(conn)
    return build_timeline(events, reference, register, as_of=as_of, basis=basis)


async def read_station_histories(
    conn: AsyncConnection, station: str, start: date, end: date
) -> list[list[StoredEvent]]:
    """Whole histories of the cases opened at ``station`` with an event in the period
    (days in China, inclusive); refused openings by its staff are streams of their own
    (case kind ``attempt``) opened by the station's staff, so they are among them."""
    # In UTC: SQLite drops the offset of a bound moment, and the log stores UTC.
    since = china_midnight(start).astimezone(UTC)
    until = china_midnight(end + timedelta(days=1)).astimezone(UTC)
    opened_here = sa.select(t.c.case_id).where(t.c.version == 1, t.c.actor_station == station)
    touched = (
        sa.select(t.c.case_id)
        .where(
            t.c.occurred_at >= since,
            t.c.occurred_at < until,
            t.c.case_id.in_(opened_here),
        )
        .distinct()
    )
    rows = await conn.execute(
        sa.select(*COLUMNS)
        .where(t.c.case_id.in_(touched.scalar_subquery()))
        .order_by(t.c.case_id, t.c.version)
    )
    histories: dict[uuid.UUID, list[StoredEvent]] = defaultdict(list)
    for row in rows:
        event = row_to_event(row)
        histories[event.case_id].append(event)
    return list(histories.values())


async def read_compliance(
    conn: AsyncConnection, reference: Reference, *, station: str, start: date, end: date
) -> ComplianceReport:
    """The delegation compliance report (see :func:`compliance_report`)."""
    check_period(start, end)
    histories = await read_station_histories(conn, station, start, end)
    register = register_from(await read_delegation_events(conn))
    return compliance_report(histories, reference, register, station=station, start=start, end=end)
