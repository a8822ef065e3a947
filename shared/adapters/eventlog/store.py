"""The append-only event log: append with optimistic concurrency, read a case, read all.

Reading "all events after a cursor" must never skip an event whose transaction commits
late. On PostgreSQL each row stores its writer's transaction id; readers order by
``(tx_id, position)`` and only read rows whose ``tx_id`` is below the oldest transaction
still running (``pg_snapshot_xmin``). Every transaction below that horizon has finished,
so the set of rows below it can no longer change, and no lock is shared between writers.
On SQLite there is one writer at a time, so position order is commit order (tx_id is 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.adapters.db import WRITE_OPTION
from shared.adapters.eventlog.errors import ConcurrencyError, DuplicateEventError
from shared.adapters.eventlog.hashing import _iso, event_hash
from shared.adapters.tables.eventlog import events as t
from shared.domain.events import NewEvent, StoredEvent, utcnow

COLUMNS = (
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


# COLUMNS are StoredEvent's fields in order, so a row unpacks straight into one.
assert tuple(c.name for c in COLUMNS) == tuple(f.name for f in dataclasses.fields(StoredEvent))


def _with_aware_times(event: StoredEvent) -> StoredEvent:
    if event.occurred_at.tzinfo is None or event.recorded_at.tzinfo is None:  # SQLite
        event = dataclasses.replace(
            event, occurred_at=_aware(event.occurred_at), recorded_at=_aware(event.recorded_at)
        )
    return event


def row_to_event(row: Sequence[Any]) -> StoredEvent:
    return _with_aware_times(StoredEvent(*row))


# Statements are built once: building SQLAlchemy expressions costs more than running them.
_HEAD = (
    sa.select(t.c.version, t.c.hash)
    .where(t.c.case_id == sa.bindparam("case_id", type_=t.c.case_id.type))
    .order_by(t.c.version.desc())
    .limit(1)
)
_STORED = (
    sa.select(*COLUMNS)
    .where(t.c.event_id.in_(sa.bindparam("event_ids", expanding=True, type_=t.c.event_id.type)))
    .order_by(t.c.position)
)
_READ_CASE = (
    sa.select(*COLUMNS)
    .where(t.c.case_id == sa.bindparam("case_id", type_=t.c.case_id.type))
    .order_by(t.c.version)
)
_READ_CASES = (
    sa.select(*COLUMNS)
    .where(t.c.case_id.in_(sa.bindparam("case_ids", expanding=True, type_=t.c.case_id.type)))
    .order_by(t.c.case_id, t.c.version)
)
# On PostgreSQL an array parameter keeps one statement text (one prepared statement) for
# any number of cases; an expanding IN would prepare a statement per count.
_READ_CASES_PG = (
    sa.select(*COLUMNS)
    .where(t.c.case_id == sa.any_(sa.bindparam("case_ids", type_=postgresql.ARRAY(sa.Uuid()))))
    .order_by(t.c.case_id, t.c.version)
)
_INSERT = sa.insert(t).returning(t.c.position, t.c.tx_id, sort_by_parameter_order=True)
_READ_ALL = (
    sa.select(*COLUMNS)
    .where(
        sa.tuple_(t.c.tx_id, t.c.position)
        > sa.tuple_(
            sa.bindparam("after_tx_id", type_=sa.BigInteger()),
            sa.bindparam("after_position", type_=sa.BigInteger()),
        )
    )
    .order_by(t.c.tx_id, t.c.position)
    .limit(sa.bindparam("limit", type_=sa.Integer()))
)
_READ_ALL_PG = _READ_ALL.where(
    t.c.tx_id < sa.text("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
)


async def _head(conn: AsyncConnection, case_id: uuid.UUID) -> tuple[int, str | None]:
    row = (await conn.execute(_HEAD, {"case_id": case_id})).first()
    return (row.version, row.hash) if row else (0, None)


async def _stored(conn: AsyncConnection, event_ids: Sequence[uuid.UUID]) -> list[StoredEvent]:
    rows = await conn.execute(_STORED, {"event_ids": list(event_ids)})
    return [row_to_event(r) for r in rows]


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
    # What the hash encodes of the values shared by every event of the append, converted
    # once (canonical_bytes leaves strings as they are).
    common = {"case_id": str(case_id), "recorded_at": _iso(now)}
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
        hashed = {**row, **common}
        if event.occurred_at is None:
            hashed["occurred_at"] = common["recorded_at"]
        row["hash"] = prev_hash = event_hash(hashed)
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
    return await insert_at_head(conn, case_id, case_kind, version, prev_hash, events)


async def insert_at_head(
    conn: AsyncConnection,
    case_id: uuid.UUID,
    case_kind: str,
    version: int,
    prev_hash: str | None,
    events: Sequence[NewEvent],
) -> AppendResult:
    """Insert the events after ``version`` (whose hash is ``prev_hash``); no checks."""
    rows = _rows(case_id, case_kind, version, prev_hash, events)
    result = await conn.execute(_INSERT, rows)
    stored = tuple(
        _with_aware_times(StoredEvent(position=position, tx_id=tx_id, **row))
        for row, (position, tx_id) in zip(rows, result.all(), strict=True)
    )
    return AppendResult(case_id, rows[-1]["version"], stored)


@dataclasses.dataclass(slots=True)
class _NewCase:
    """An append to a new case (expected version 0) waiting for a group commit."""

    case_id: uuid.UUID
    case_kind: str
    events: Sequence[NewEvent]
    result: asyncio.Future[AppendResult]


async def insert_at_heads(
    conn: AsyncConnection,
    appends: Sequence[tuple[uuid.UUID, str, int, str | None, Sequence[NewEvent]]],
) -> list[AppendResult]:
    """Insert the events of several cases with one statement, each case's after its
    ``(case_id, case_kind, version, prev_hash, events)`` head; a result per case, in
    order. No checks: the unique ``(case_id, version)`` refuses a head that moved."""
    rows = []
    for case_id, case_kind, version, prev_hash, events in appends:
        rows.extend(_rows(case_id, case_kind, version, prev_hash, events))
    returned = (await conn.execute(_INSERT, rows)).all()
    stored = [
        _with_aware_times(StoredEvent(position=position, tx_id=tx_id, **row))
        for row, (position, tx_id) in zip(rows, returned, strict=True)
    ]
    results = []
    start = 0
    for case_id, _, version, _, events in appends:
        end = start + len(events)
        results.append(AppendResult(case_id, version + len(events), tuple(stored[start:end])))
        start = end
    return results


async def _insert_new_cases(conn: AsyncConnection, batch: Sequence[_NewCase]) -> list[AppendResult]:
    """Insert the events of several new cases with one statement; a result per case."""
    return await insert_at_heads(conn, [(r.case_id, r.case_kind, 0, None, r.events) for r in batch])


async def read_case_in(conn: AsyncConnection, case_id: uuid.UUID) -> list[StoredEvent]:
    """Every event of one case, in version order, as ``conn`` sees them."""
    rows = await conn.execute(_READ_CASE, {"case_id": case_id})
    return [row_to_event(r) for r in rows]


async def read_cases_in(
    conn: AsyncConnection, case_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[StoredEvent]]:
    """Every event of each case, in version order, as ``conn`` sees them (one query)."""
    histories: dict[uuid.UUID, list[StoredEvent]] = {case_id: [] for case_id in case_ids}
    if case_ids:
        query = _READ_CASES_PG if conn.dialect.name == "postgresql" else _READ_CASES
        for row in await conn.execute(query, {"case_ids": list(histories)}):
            event = row_to_event(row)
            histories[event.case_id].append(event)
    return histories


class Transaction:
    """One write transaction on the log (:meth:`EventLog.transaction`): what is appended
    through it, or marked with :attr:`appended`, is announced to the log's listeners once
    the transaction commits, and never if it rolls back."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.appended = False
        """Whether this transaction appended events (set by the appends made through it)."""

    async def append(
        self,
        case_id: uuid.UUID,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        case_kind: str,
    ) -> AppendResult:
        """:func:`append_in` within this transaction."""
        result = await append_in(self.conn, case_id, expected_version, events, case_kind=case_kind)
        self.appended = self.appended or not result.replayed
        return result

    async def append_at_head(
        self,
        case_id: uuid.UUID,
        version: int,
        prev_hash: str | None,
        events: Sequence[NewEvent],
        *,
        case_kind: str,
    ) -> AppendResult:
        """Append after the head the caller read (``version`` and its event's hash;
        ``0, None`` for a new case) without reading it again: should another writer have
        committed to the case since, the unique ``(case_id, version)`` raises
        ``IntegrityError`` and the transaction rolls back (then
        :meth:`EventLog.resolve_conflict` says whether it was this append's retry)."""
        if not events:
            raise ValueError("an append needs at least one event")
        result = await insert_at_head(self.conn, case_id, case_kind, version, prev_hash, events)
        self.appended = True
        return result


class EventLog:
    """The append-only log of every case's events, over an async SQLAlchemy engine.

    Appends to new cases (expected version 0) are committed in groups: while this log's
    write transactions are in flight, new-case appends wait and then share one transaction,
    one INSERT and one commit (one fsync). Each still gets its own result or error.
    """

    MAX_GROUP_EVENTS = 1000
    """The most events one group commit inserts."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.writer = engine.execution_options(**{WRITE_OPTION: True})
        """The engine for transactions that write (a unit of work appends through it)."""
        self.autocommit: AsyncEngine | None = None
        """PostgreSQL: the engine for statements that are each a transaction of their own
        (no BEGIN, COMMIT or ROLLBACK round trips); None on SQLite."""
        self.reader = engine
        """The engine for reads of one statement (PostgreSQL: in autocommit, each still
        sees one snapshot, and a BEGIN and a ROLLBACK round trip are saved)."""
        # SQLite has one writer at a time: more than one group in flight would only queue
        # on its lock. PostgreSQL commits groups in parallel.
        self._max_groups = 1
        if engine.dialect.name == "postgresql":
            self.autocommit = self.reader = engine.execution_options(isolation_level="AUTOCOMMIT")
            self._max_groups = 4
        self._listeners: list[Callable[[], None]] = []
        self._waiting: list[_NewCase] = []
        self._committers: set[asyncio.Task[None]] = set()

    def on_append(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each commit that appended events in this process."""
        self._listeners.append(callback)

    def appended(self) -> None:
        """Tell listeners that a commit appended events (:meth:`transaction` does it for
        the transactions it opens)."""
        for callback in self._listeners:
            callback()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction that announces its appends once it has committed.

        Everything written through ``tx.conn`` commits or rolls back together; appends
        through ``tx.append`` or a :class:`~shared.adapters.eventlog.unit.UnitOfWork` over
        ``tx`` (or ``tx.appended = True`` after an append of one's own) wake the relay and
        the projection runners after the commit."""
        async with self.writer.begin() as conn:
            tx = Transaction(conn)
            yield tx
        if tx.appended:
            self.appended()

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
        if not events:
            raise ValueError("an append needs at least one event")
        if expected_version != 0:
            return await self._append_one(case_id, expected_version, events, case_kind)
        loop = asyncio.get_running_loop()
        request = _NewCase(case_id, case_kind, events, loop.create_future())
        self._waiting.append(request)
        if len(self._committers) < self._max_groups:
            self._committers.add(loop.create_task(self._commit_groups()))
        return await request.result

    async def _append_one(
        self,
        case_id: uuid.UUID,
        expected_version: int,
        events: Sequence[NewEvent],
        case_kind: str,
    ) -> AppendResult:
        """One append in a transaction of its own."""
        try:
            async with self.writer.begin() as conn:
                if expected_version == 0:
                    # A new case: no head to read. If the case exists after all, the unique
                    # (case_id, version) or event_id constraint refuses the insert and
                    # resolve_conflict gives the same answer the head check would have.
                    result = await insert_at_head(conn, case_id, case_kind, 0, None, events)
                else:
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

    def _next_group(self) -> list[_NewCase]:
        """Take the waiting appends for one transaction (callers that gave up are dropped)."""
        group: list[_NewCase] = []
        size = 0
        while self._waiting:
            request = self._waiting[0]
            if request.result.done():  # cancelled while waiting
                self._waiting.pop(0)
                continue
            if group and size + len(request.events) > self.MAX_GROUP_EVENTS:
                break
            group.append(self._waiting.pop(0))
            size += len(request.events)
        return group

    async def _commit_groups(self) -> None:
        """Commit waiting new-case appends, a group per transaction, until none wait."""
        try:
            while group := self._next_group():
                try:
                    await self._commit_group(group)
                except BaseException as err:  # cancelled: don't leave callers waiting
                    for request in group + self._waiting:
                        if request.result.done():
                            continue
                        if isinstance(err, asyncio.CancelledError):
                            request.result.cancel()
                        else:
                            request.result.set_exception(err)
                    self._waiting.clear()
                    raise
        finally:
            # In the same step that found nothing waiting (a done callback would run
            # later, and an append arriving in between would find no committer).
            task = asyncio.current_task()
            if task is not None:
                self._committers.discard(task)

    async def _commit_group(self, group: list[_NewCase]) -> None:
        if len(group) > 1:
            try:
                async with self.writer.begin() as conn:
                    results = await _insert_new_cases(conn, group)
            except Exception:  # noqa: S110 - each append is retried on its own below
                pass
            else:
                self.appended()
                for request, result in zip(group, results, strict=True):
                    if not request.result.done():
                        request.result.set_result(result)
                return
        # One append, or a group that failed: one of them may conflict or be invalid, so
        # each is done on its own and gets exactly the answer it would have had alone.
        await asyncio.gather(*(self._settle_alone(request) for request in group))

    async def _settle_alone(self, request: _NewCase) -> None:
        try:
            result = await self._append_one(request.case_id, 0, request.events, request.case_kind)
        except Exception as err:
            if not request.result.done():
                request.result.set_exception(err)
        else:
            if not request.result.done():
                request.result.set_result(result)

    async def resolve_conflict(
        self, case_id: uuid.UUID, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        """After a unique violation: the original result, or the right error."""
        async with self.reader.connect() as conn:
            original = await _original_result(conn, case_id, events)
            if original is not None:
                return original
            version, _ = await _head(conn, case_id)
        if version == expected_version:
            raise DuplicateEventError("an event id is already stored in another case")
        raise ConcurrencyError(case_id, expected_version, version)

    async def read_case(self, case_id: uuid.UUID) -> list[StoredEvent]:
        """Every event of one case, in version order (empty if the case is unknown)."""
        async with self.reader.connect() as conn:
            return await read_case_in(conn, case_id)

    async def read_all(self, after: LogCursor = START, limit: int = 1000) -> list[StoredEvent]:
        """Up to ``limit`` committed events after ``after``, in the log's read order.

        Never skips an event that commits late and never returns one twice for cursors
        taken from its results (see the module docstring).
        """
        query = _READ_ALL_PG if self.engine.dialect.name == "postgresql" else _READ_ALL
        params = {"after_tx_id": after.tx_id, "after_position": after.position, "limit": limit}
        async with self.reader.connect() as conn:
            rows = await conn.execute(query, params)
            return [row_to_event(r) for r in rows]

    async def ping(self) -> None:
        """Raise if the database can't be reached (for readiness checks)."""
        async with self.reader.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
