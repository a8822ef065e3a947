"""A unit of work on the log: one transaction in which a handler (a consumer's, a timer's,
notify's) records what it handled and appends; :meth:`EventLog.transaction` opens it and
announces the appends to the log's listeners (relay, projections) once it commits."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Hashable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from shared.adapters.eventlog.store import (
    AppendResult,
    Transaction,
    append_in,
    insert_at_head,
    insert_at_heads,
    read_case_in,
    read_cases_in,
)
from shared.adapters.sql import insert_ignore
from shared.adapters.tables.eventlog import inbox
from shared.domain.events import NewEvent, StoredEvent, utcnow
from shared.domain.upcasting import UpcastError, upcast, upcast_all

__all__ = ["EventRef", "UnitOfWork"]


@dataclasses.dataclass(frozen=True, slots=True)
class EventRef:
    """What a message says it is about: which event of which case. Nothing more of the
    message is believed (see the module's docstring)."""

    event_id: uuid.UUID
    case_id: uuid.UUID


class UnitOfWork:
    """What a handler does in its transaction: the inbox record of what it handled, the
    cases it reads (read ahead in one query, upcast) and what it appends; the transaction
    announces the appends once it commits (:meth:`EventLog.transaction`)."""

    def __init__(self, tx: Transaction, consumer: str) -> None:
        self.tx = tx
        self.conn = tx.conn
        self.consumer = consumer
        self._heads: dict[uuid.UUID, tuple[int, str | None]] = {}
        """Each case's version and hash as this transaction last read or wrote them."""
        self._histories: dict[uuid.UUID, list[StoredEvent]] = {}
        """Cases read ahead for this transaction, with what it appended since."""
        self.memo: dict[Hashable, Any] = {}
        """What the handlers of one batch read once per transaction and share (notify's
        webhook subscriptions of a station, say): gone with the transaction."""

    async def read_ahead(self, case_ids: Sequence[uuid.UUID]) -> None:
        """Read the cases the handlers are about to read, all in one query (upcast)."""
        await self._read_ahead(case_ids)

    async def _read_ahead(
        self, case_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, list[StoredEvent]]:
        """:meth:`read_ahead`; returns the histories as stored."""
        stored = await read_cases_in(self.conn, case_ids)
        for case_id, events in stored.items():
            try:
                self._histories[case_id] = upcast_all(events)
            except UpcastError:
                # Only a handler that reads this case fails (read_case reads it again and
                # says why); the others of the batch go on.
                self._histories.pop(case_id, None)
        return stored

    async def logged(self, refs: Sequence[EventRef]) -> dict[uuid.UUID, StoredEvent | UpcastError]:
        """The log's copy of each event named (upcast), by event id, reading the cases ahead.

        An event not in its case is missing from the answer; one that can't be upcast
        (newer than this code knows) maps to the error."""
        stored = await self._read_ahead(list(dict.fromkeys(ref.case_id for ref in refs)))
        found: dict[uuid.UUID, StoredEvent | UpcastError] = {}
        wanted = {ref.event_id for ref in refs}
        for case_id, events in stored.items():
            history = self._histories.get(case_id)
            for index, event in enumerate(events):
                if event.event_id not in wanted:
                    continue
                if history is not None:
                    found[event.event_id] = history[index]
                    continue
                try:
                    found[event.event_id] = upcast(event)
                except UpcastError as err:
                    found[event.event_id] = err
        return found

    async def claim(self, event_id: uuid.UUID) -> bool:
        """Record the event as handled; False if it was handled before."""
        return await insert_ignore(
            self.conn,
            inbox,
            {"consumer": self.consumer, "event_id": event_id, "handled_at": utcnow()},
        )

    async def claim_all(self, event_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Record several events as handled; the ids that were not handled before."""
        if self.conn.dialect.name != "postgresql":
            # SQLite runs in-process: one statement per event costs no round trip.
            return {event_id for event_id in event_ids if await self.claim(event_id)}
        result = await self.conn.execute(
            _CLAIM_ALL_PG,
            {"consumer": self.consumer, "event_ids": list(event_ids), "handled_at": utcnow()},
        )
        return set(result.scalars())

    async def read_case(self, case_id: uuid.UUID) -> list[StoredEvent]:
        """The case's events as this transaction sees them, each at the current version of
        its payload (upcast copies; ``hash`` and ``prev_hash`` stay the stored ones).

        Raises :class:`~shared.domain.upcasting.SchemaTooNew` if the case holds an event newer
        than this code knows."""
        history = self._histories.get(case_id)
        if history is not None:
            events = list(history)
        else:
            events = upcast_all(await read_case_in(self.conn, case_id))
        self._heads[case_id] = (events[-1].version, events[-1].hash) if events else (0, None)
        return events

    async def append(
        self,
        case_id: uuid.UUID,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        case_kind: str,
    ) -> AppendResult:
        """Append within this unit of work (see :meth:`EventLog.append`)."""
        head = self._heads.get(case_id)
        at_head = bool(events) and head is not None and head[0] == expected_version
        if at_head and head is not None:
            # The handler read the case in this transaction and appends at its head: no
            # need to read the head again. Should another writer have committed to the case
            # since, the unique (case_id, version) refuses the insert and the batch is
            # retried, as a ConcurrencyError from the head check would have it.
            result = await insert_at_head(self.conn, case_id, case_kind, head[0], head[1], events)
        else:
            result = await append_in(
                self.conn, case_id, expected_version, events, case_kind=case_kind
            )
        if result.replayed:
            self._heads.pop(case_id, None)
        else:
            self._heads[case_id] = (result.version, result.events[-1].hash)
        if at_head and not result.replayed and case_id in self._histories:
            self._histories[case_id].extend(result.events)  # exactly what a read would show
        else:
            self._histories.pop(case_id, None)  # read it from the database next time
        self.tx.appended = self.tx.appended or not result.replayed
        return result

    async def append_at_heads(
        self, appends: Sequence[tuple[uuid.UUID, Sequence[NewEvent], str]]
    ) -> list[AppendResult]:
        """Append ``(case_id, events, case_kind)`` to several cases, each at the head this
        unit of work read (:meth:`read_case` first), all with one statement; a result per
        case. Should another writer have committed to one of them since, the unique
        ``(case_id, version)`` refuses the insert and the transaction fails as a whole."""
        if not appends:
            return []
        heads = []
        for case_id, events, case_kind in appends:
            head = self._heads.get(case_id)
            if head is None or not events:
                raise ValueError(f"read case {case_id} in this unit of work before appending")
            heads.append((case_id, case_kind, head[0], head[1], events))
        results = await insert_at_heads(self.conn, heads)
        for result in results:
            self._heads[result.case_id] = (result.version, result.events[-1].hash)
            if result.case_id in self._histories:
                self._histories[result.case_id].extend(result.events)
        self.tx.appended = self.tx.appended or bool(results)
        return results


# One statement (one prepared statement) records a whole batch in the inbox, whatever its
# size: INSERT ... SELECT unnest(array) ... ON CONFLICT DO NOTHING RETURNING event_id.
_CLAIM_ALL_PG = (
    postgresql.insert(inbox)
    .from_select(
        ["consumer", "event_id", "handled_at"],
        sa.select(
            sa.bindparam("consumer", type_=inbox.c.consumer.type),
            sa.func.unnest(sa.bindparam("event_ids", type_=postgresql.ARRAY(sa.Uuid()))),
            sa.bindparam("handled_at", type_=inbox.c.handled_at.type),
        ),
    )
    .on_conflict_do_nothing()
    .returning(inbox.c.event_id)
)
