"""The append-only event log: append with optimistic concurrency, read a case, read all.

Reading "all events after a cursor" must never skip an event whose transaction commits
late. On PostgreSQL each row stores its writer's transaction id; readers order by
``(tx_id, position)`` and only read rows whose ``tx_id`` is below the oldest transaction
still running (``pg_snapshot_xmin``). Every transaction below that horizon has finished,
so the set of rows below it can no longer change, and no lock is shared between writers.
On SQLite there is one writer at a time, so position order is commit order (tx_id is 0).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import WRITE_OPTION
from shared.eventlog.errors import ConcurrencyError, DuplicateEventError
from shared.eventlog.hashing import event_hash
from shared.eventlog.schema import events as t
from shared.events import NewEvent, StoredEvent, utcnow

_COLUMNS = (
    t.c.position,
    t.c.event_id,
    t.c.case_id,
    t.c.case_kind,
    t.c.version,
    t.c.event_type,
    t.c.schema_version,
    t.c.occurred_at,
    t.c.recorded_at,
    t.c.actor_user,
    t.c.actor_role,
    t.c.actor_station,
    t.c.authority,
    t.c.delegation_id,
    t.c.delegation_version,
    t.c.correlation_id,
    t.c.causation_id,
    t.c.payload,
    t.c.prev_hash,
    t.c.hash,
    t.c.tx_id,
)


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class LogCursor:
    """A place in the log's read order: after the event at ``(tx_id, position)``."""

    tx_id: int = 0
    position: int = 0

    def __str__(self) -> str:
        return f"{self.tx_id}:{self.position}"

    @classmethod
    def after(cls, event: StoredEvent) -> LogCursor:
        """The cursor just past ``event``."""
        return cls(event.tx_id, event.position)


START = LogCursor()


@dataclasses.dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append stored: the case's new version and the events with their positions."""

    case_id: uuid.UUID
    version: int
    events: tuple[StoredEvent, ...]
    replayed: bool = False
    """True when every event id was stored already and this is the original result."""


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _row_to_event(row: Any) -> StoredEvent:
    return StoredEvent(
        position=row.position,
        event_id=row.event_id,
        case_id=row.case_id,
        case_kind=row.case_kind,
        version=row.version,
        event_type=row.event_type,
        schema_version=row.schema_version,
        occurred_at=_aware(row.occurred_at),
        recorded_at=_aware(row.recorded_at),
        actor_user=row.actor_user,
        actor_role=row.actor_role,
        actor_station=row.actor_station,
        authority=row.authority,
        delegation_id=row.delegation_id,
        delegation_version=row.delegation_version,
        correlation_id=row.correlation_id,
        causation_id=row.causation_id,
        payload=row.payload,
        prev_hash=row.prev_hash,
        hash=row.hash,
        tx_id=row.tx_id,
    )


async def _head(conn: AsyncConnection, case_id: uuid.UUID) -> tuple[int, str | None]:
    row = (
        await conn.execute(
            sa.select(t.c.version, t.c.hash)
            .where(t.c.case_id == case_id)
            .order_by(t.c.version.desc())
            .limit(1)
        )
    ).first()
    return (row.version, row.hash) if row else (0, None)


async def _stored(conn: AsyncConnection, event_ids: Sequence[uuid.UUID]) -> list[StoredEvent]:
    rows = await conn.execute(
        sa.select(*_COLUMNS).where(t.c.event_id.in_(event_ids)).order_by(t.c.position)
    )
    return [_row_to_event(r) for r in rows]


async def _original_result(
    conn: AsyncConnection, case_id: uuid.UUID, events: Sequence[NewEvent]
) -> AppendResult | None:
    """The stored result of an earlier identical append, or None if none was stored."""
    ids = [e.event_id for e in events]
    stored = await _stored(conn, ids)
    if not stored:
        return None
    if len(stored) != len(ids) or any(s.case_id != case_id for s in stored):
        raise DuplicateEventError(
            f"{len(stored)} of {len(ids)} event ids are stored already; "
            "a retried append must repeat exactly the same events"
        )
    return AppendResult(case_id, stored[-1].version, tuple(stored), replayed=True)


def _rows(
    case_id: uuid.UUID,
    case_kind: str,
    version: int,
    prev_hash: str | None,
    events: Sequence[NewEvent],
) -> list[dict[str, Any]]:
    now = utcnow()
    rows = []
    for event in events:
        version += 1
        row: dict[str, Any] = {
            "event_id": event.event_id,
            "case_id": case_id,
            "case_kind": case_kind,
            "version": version,
            "event_type": event.event_type,
            "schema_version": event.schema_version,
            "occurred_at": event.occurred_at or now,
            "recorded_at": now,
            "actor_user": event.actor.user,
            "actor_role": event.actor.role,
            "actor_station": event.actor.station,
            "authority": event.authority,
            "delegation_id": event.delegation_id,
            "delegation_version": event.delegation_version,
            "correlation_id": event.correlation_id,
            "causation_id": event.causation_id,
            "payload": event.payload,
            "prev_hash": prev_hash,
        }
        row["hash"] = prev_hash = event_hash(row)
        rows.append(row)
    return rows


async def append_in(
    conn: AsyncConnection,
    case_id: uuid.UUID,
    expected_version: int,
    events: Sequence[NewEvent],
    *,
    case_kind: str,
) -> AppendResult:
    """Append inside the caller's transaction (a unit of work). See :meth:`EventLog.append`."""
    if not events:
        raise ValueError("an append needs at least one event")
    version, prev_hash = await _head(conn, case_id)
    if version != expected_version:
        original = await _original_result(conn, case_id, events)
        if original is not None:
            return original
        raise ConcurrencyError(case_id, expected_version, version)
    rows = _rows(case_id, case_kind, version, prev_hash, events)
    result = await conn.execute(
        sa.insert(t).returning(t.c.position, t.c.tx_id, sort_by_parameter_order=True), rows
    )
    stored = tuple(
        _row_to_event(SimpleNamespace(**row, position=position, tx_id=tx_id))
        for row, (position, tx_id) in zip(rows, result.all(), strict=True)
    )
    return AppendResult(case_id, rows[-1]["version"], stored)


async def read_case_in(conn: AsyncConnection, case_id: uuid.UUID) -> list[StoredEvent]:
    """Every event of one case, in version order, as ``conn`` sees them."""
    rows = await conn.execute(
        sa.select(*_COLUMNS).where(t.c.case_id == case_id).order_by(t.c.version)
    )
    return [_row_to_event(r) for r in rows]


class EventLog:
    """The append-only log of every case's events, over an async SQLAlchemy engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.writer = engine.execution_options(**{WRITE_OPTION: True})
        """The engine for transactions that write (a unit of work appends through it)."""
        self._listeners: list[Callable[[], None]] = []

    def on_append(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each commit that appended events in this process."""
        self._listeners.append(callback)

    def appended(self) -> None:
        """Tell listeners that a commit appended events (units of work call this too)."""
        for callback in self._listeners:
            callback()

    async def append(
        self,
        case_id: uuid.UUID,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        case_kind: str,
    ) -> AppendResult:
        """Append ``events`` to the case, all or nothing.

        Raises :class:`ConcurrencyError` when the case is not at ``expected_version``.
        Retrying an append whose event ids are all stored returns the original result;
        a partial overlap raises :class:`DuplicateEventError`.
        """
        try:
            async with self.writer.begin() as conn:
                result = await append_in(
                    conn, case_id, expected_version, events, case_kind=case_kind
                )
        except IntegrityError:
            # A concurrent writer took the same version (or the same event ids) between
            # our read of the head and our insert.
            return await self.resolve_conflict(case_id, expected_version, events)
        if not result.replayed:
            self.appended()
        return result

    async def resolve_conflict(
        self, case_id: uuid.UUID, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        """After a unique violation: the original result, or the right error."""
        async with self.engine.connect() as conn:
            original = await _original_result(conn, case_id, events)
            if original is not None:
                return original
            version, _ = await _head(conn, case_id)
        if version == expected_version:
            raise DuplicateEventError("an event id is already stored in another case")
        raise ConcurrencyError(case_id, expected_version, version)

    async def read_case(self, case_id: uuid.UUID) -> list[StoredEvent]:
        """Every event of one case, in version order (empty if the case is unknown)."""
        async with self.engine.connect() as conn:
            return await read_case_in(conn, case_id)

    async def read_all(self, after: LogCursor = START, limit: int = 1000) -> list[StoredEvent]:
        """Up to ``limit`` committed events after ``after``, in the log's read order.

        Never skips an event that commits late and never returns one twice for cursors
        taken from its results (see the module docstring).
        """
        query = (
            sa.select(*_COLUMNS)
            .where(sa.tuple_(t.c.tx_id, t.c.position) > sa.tuple_(after.tx_id, after.position))
            .order_by(t.c.tx_id, t.c.position)
            .limit(limit)
        )
        if self.engine.dialect.name == "postgresql":
            horizon = sa.text("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            query = query.where(t.c.tx_id < horizon)
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
            return [_row_to_event(r) for r in rows]

    async def ping(self) -> None:
        """Raise if the database can't be reached (for readiness checks)."""
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
