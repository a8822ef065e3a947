"""The ``statistics`` and ``delegation_usage`` projections (see ``shared.application.projections``).

Each batch is folded in memory and written with one upsert per table that adds the
batch's counters to the stored ones (``shared.adapters.sql.add_to_counters``); nothing is queried
per event. What a case's next event adds depends on the case as it stood before it, so
each projection remembers the cases it has seen (a bounded cache) and, for a case met in
the middle of its history (a fresh process, a cache that dropped it, a batch retried
after a rollback), reads the case's earlier events from the log in one query per batch.
The cache holds each case with the version of the last event taken in: it is used only
when the batch's event is the very next one, so what the cache holds never decides the
rows — the log does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters.eventlog.store import COLUMNS, read_cases_in, row_to_event
from shared.adapters.sql import add_to_counters
from shared.adapters.tables.eventlog import events as log_events
from shared.adapters.tables.statistics import (
    STATISTICS_KEYS,
    STATISTICS_MEASURES,
    USAGE_KEYS,
    USAGE_MEASURES,
    delegation_usage,
    station_statistics,
)
from shared.domain.events import StoredEvent
from shared.domain.tally import (
    ATTEMPT,
    CASE_KINDS,
    RECEPTION,
    CaseHeader,
    CaseTally,
    Deltas,
    StatisticsTally,
    UsageTally,
    add,
    cites_delegation,
)
from shared.domain.workflow.reference import Reference

CACHE_LIMIT = 100_000
"""Cases remembered between batches; beyond it the oldest half is dropped (and read from
the log again if they come back)."""
LOAD_CHUNK = 1000
"""Cases read from the log per query."""


def _trim(cache: dict[uuid.UUID, Any], limit: int) -> None:
    if len(cache) > limit:
        for case_id in list(cache)[: len(cache) - limit // 2]:
            del cache[case_id]


def _chunks(ids: Sequence[uuid.UUID]) -> list[list[uuid.UUID]]:
    return [list(ids[i : i + LOAD_CHUNK]) for i in range(0, len(ids), LOAD_CHUNK)]


def _rows(keys: tuple[str, ...], totals: dict[Any, Deltas]) -> list[dict[str, Any]]:
    return [{**dict(zip(keys, key, strict=True)), **deltas} for key, deltas in totals.items()]


class StatisticsProjection:
    """Per station, day (in China), case kind and item: what the station report counts."""

    name = "statistics"
    tables: tuple[sa.Table, ...] = (station_statistics,)

    def __init__(self, reference: Reference, *, cache_limit: int = CACHE_LIMIT) -> None:
        self.tally = StatisticsTally(reference.workflows, reference.calendar, reference.catalogue)
        self.cache_limit = cache_limit
        self._cases: dict[uuid.UUID, CaseTally] = {}

    async def apply(self, conn: AsyncConnection, events: Sequence[StoredEvent]) -> None:
        """Add what ``events`` count to the table, in ``conn``'s transaction."""
        cases = self._cases
        await self._recall(conn, events)
        totals: dict[Any, Deltas] = {}
        step = self.tally.step
        for event in events:
            kind = event.case_kind
            if kind == RECEPTION:
                for counted_visit in self.tally.visit(event):
                    add(totals, *counted_visit)
                continue
            if kind not in CASE_KINDS:
                continue
            if event.version == 1:
                case = cases[event.case_id] = CaseTally()
            else:
                found = cases.get(event.case_id)
                if found is None or found.seen != event.version - 1:
                    # not the next event of what we hold (a log read out of version order)
                    await self._load(conn, {event.case_id: event.version})
                    found = cases[event.case_id]
                case = found
            counted = step(case, event)
            if counted is not None:
                add(totals, *counted)
        await add_to_counters(
            conn,
            station_statistics,
            STATISTICS_KEYS,
            STATISTICS_MEASURES,
            _rows(STATISTICS_KEYS, totals),
        )
        _trim(cases, self.cache_limit)

    async def _recall(self, conn: AsyncConnection, events: Sequence[StoredEvent]) -> None:
        """Read from the log the cases this batch continues but the cache can't."""
        first: dict[uuid.UUID, int] = {}
        for event in events:
            if event.case_kind in CASE_KINDS and event.case_id not in first:
                first[event.case_id] = event.version
        missing = {}
        for case_id, version in first.items():
            if version == 1:
                continue
            held = self._cases.get(case_id)
            if held is None or held.seen != version - 1:
                missing[case_id] = version
        if missing:
            await self._load(conn, missing)

    async def _load(self, conn: AsyncConnection, before: dict[uuid.UUID, int]) -> None:
        """Fold each case's events older than ``before[case]`` into a fresh record."""
        for chunk in _chunks(list(before)):
            for case_id, history in (await read_cases_in(conn, chunk)).items():
                case = CaseTally()
                for event in history:
                    if event.version >= before[case_id]:
                        break
                    self.tally.step(case, event)
                self._cases[case_id] = case


_FIRST_EVENTS = sa.select(*COLUMNS).where(
    log_events.c.case_id.in_(
        sa.bindparam("case_ids", expanding=True, type_=log_events.c.case_id.type)
    ),
    log_events.c.version == 1,
)
_FIRST_EVENTS_PG = sa.select(*COLUMNS).where(
    log_events.c.case_id == sa.any_(sa.bindparam("case_ids", type_=postgresql.ARRAY(sa.Uuid()))),
    log_events.c.version == 1,
)


class DelegationUsageProjection:
    """Per delegation id and version, station, item, power and day: the actions taken
    under it and the refused attempts citing it."""

    name = "delegation_usage"
    tables: tuple[sa.Table, ...] = (delegation_usage,)

    def __init__(self, reference: Reference, *, cache_limit: int = CACHE_LIMIT) -> None:
        self.tally = UsageTally(reference.workflows)
        self.cache_limit = cache_limit
        self._headers: dict[uuid.UUID, CaseHeader] = {}

    async def apply(self, conn: AsyncConnection, events: Sequence[StoredEvent]) -> None:
        """Add what ``events`` count to the table, in ``conn``'s transaction."""
        headers = self._headers
        wanted: set[uuid.UUID] = set()
        for event in events:
            if event.case_kind not in CASE_KINDS:
                continue
            if event.version == 1:
                headers[event.case_id] = CaseHeader.of(event)
            elif event.case_id not in headers and cites_delegation(event):
                wanted.add(event.case_id)
        if wanted:
            await self._load(conn, sorted(wanted))
        totals: dict[Any, Deltas] = {}
        for event in events:
            if event.case_kind == ATTEMPT:
                counted = self.tally.step(None, event)
            elif event.case_kind in CASE_KINDS:
                header = headers.get(event.case_id)
                counted = self.tally.step(header, event) if header is not None else None
            else:
                continue
            if counted is not None:
                add(totals, *counted)
        await add_to_counters(
            conn, delegation_usage, USAGE_KEYS, USAGE_MEASURES, _rows(USAGE_KEYS, totals)
        )
        _trim(headers, self.cache_limit)

    async def _load(self, conn: AsyncConnection, case_ids: list[uuid.UUID]) -> None:
        query = _FIRST_EVENTS_PG if conn.dialect.name == "postgresql" else _FIRST_EVENTS
        for chunk in _chunks(case_ids):
            for row in await conn.execute(query, {"case_ids": chunk}):
                event = row_to_event(row)
                self._headers[event.case_id] = CaseHeader.of(event)


def statistics_projections(
    reference: Reference,
) -> list[StatisticsProjection | DelegationUsageProjection]:
    """Both projections of this module, for the runner to register."""
    return [StatisticsProjection(reference), DelegationUsageProjection(reference)]
