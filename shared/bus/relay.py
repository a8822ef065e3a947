"""The relay: publishes committed events from the log to JetStream, in log order.

Each event goes to ``caseflow.events.<case_kind>.<event_type>`` with ``Nats-Msg-Id`` set to
its event id, so the server drops a repeat. The checkpoint moves only after JetStream
acknowledged every publish of the batch. A lease in the checkpoint row lets one relay
publish while others stand by; even without it two relays are harmless.

The bus is distribution, not the record: each message is the event's masked view (ID and
phone numbers and e-mail addresses masked, ``personal_data: masked`` in the envelope and
the ``Caseflow-Personal-Data: masked`` header), with the stored row's ``hash``. caseflow's
consumers take the event itself from the log (``shared.bus.consumer``).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.bus.headers import CORRELATION_HEADER, MSG_ID_HEADER, PERSONAL_DATA_HEADER
from shared.bus.streams import event_subject
from shared.eventlog import EventLog, LogCursor
from shared.eventlog.schema import relay_checkpoints as cp
from shared.eventlog.tailing import tail
from shared.events import StoredEvent, utcnow
from shared.outages import log_failed_round
from shared.privacy import MASKED_VIEW, masked_envelope
from shared.sql import insert_ignore

log = structlog.get_logger("caseflow.relay")

PUBLISHED = Counter("caseflow_relay_published_total", "Events published by the relay")


class Relay:
    """Tails the log and publishes what it finds; one instance per process is plenty."""

    def __init__(
        self,
        event_log: EventLog,
        js: JetStreamContext,
        *,
        name: str = "main",
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        lease_seconds: float = 10.0,
        use_lease: bool = True,
        ack_timeout: float = 5.0,
    ) -> None:
        self.log = event_log
        self.js = js
        self.name = name
        self.holder = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self.batch_size = batch_size
        self.poll_interval = min(poll_interval, 1.0)
        self.lease = timedelta(seconds=lease_seconds)
        self.use_lease = use_lease
        self.ack_timeout = ack_timeout
        self.wakeup = asyncio.Event()
        event_log.on_append(self.wakeup.set)
        # While we hold the lease only we move the checkpoint, so our cursor is the stored
        # one; a round within renew_interval of the last renewal needs no lease transaction.
        self.renew_interval = lease_seconds / 4
        self._held: LogCursor | None = None
        self._renewed_at = 0.0
        self._standby_until: datetime | None = None
        """Another relay's lease lasts until then (by our clock, as the UPDATE compares)."""
        self._leading = False
        """The last round found our cursor (we hold the lease, or run without one)."""

    async def _take_lease(self, conn: AsyncConnection) -> LogCursor | None:
        now = utcnow()
        taken = await conn.execute(
            sa.update(cp)
            .where(cp.c.name == self.name)
            .where(
                sa.or_(
                    cp.c.lease_holder.is_(None),
                    cp.c.lease_holder == self.holder,
                    cp.c.lease_until < now,
                )
            )
            .values(lease_holder=self.holder, lease_until=now + self.lease)
            .returning(cp.c.tx_id, cp.c.position)
        )
        row = taken.first()
        return LogCursor(row.tx_id, row.position) if row else None

    async def _checkpoint(self, conn: AsyncConnection) -> LogCursor | None:
        """Our cursor, or None when another relay holds the lease."""
        if self.use_lease:
            cursor = await self._take_lease(conn)
            if cursor is not None:
                self._standby_until = None
                return cursor
            lease = (
                await conn.execute(sa.select(cp.c.lease_until).where(cp.c.name == self.name))
            ).first()
            if lease is not None:
                until = lease.lease_until
                self._standby_until = until if until.tzinfo else until.replace(tzinfo=UTC)
                return None
            # No checkpoint yet: create it, then take the lease.
            await insert_ignore(conn, cp, {"name": self.name, "tx_id": 0, "position": 0})
            return await self._take_lease(conn)
        await insert_ignore(conn, cp, {"name": self.name, "tx_id": 0, "position": 0})
        row = (
            await conn.execute(sa.select(cp.c.tx_id, cp.c.position).where(cp.c.name == self.name))
        ).one()
        return LogCursor(row.tx_id, row.position)

    async def _cursor(self) -> LogCursor | None:
        """Where to publish from, or None while another relay holds the lease."""
        cursor: LogCursor | None
        standby = self._standby_until
        if self.use_lease and standby is not None and utcnow() < standby:
            cursor = None  # the lease can't be taken before then: no need to ask
        elif (
            self.use_lease
            and self._held is not None
            and time.monotonic() - self._renewed_at < self.renew_interval
        ):
            cursor = self._held
        else:
            async with self.log.writer.begin() as conn:
                cursor = await self._checkpoint(conn)
            self._hold(cursor)
        self._leading = cursor is not None
        return cursor

    def _hold(self, cursor: LogCursor | None) -> None:
        """Remember a cursor we just stored (or read) under a renewed lease."""
        self._held = cursor if self.use_lease else None
        self._renewed_at = time.monotonic()

    async def _save(self, cursor: LogCursor) -> None:
        async with self.log.writer.begin() as conn:
            query = (
                sa.update(cp)
                .where(cp.c.name == self.name)
                .where(
                    sa.tuple_(cp.c.tx_id, cp.c.position) < sa.tuple_(cursor.tx_id, cursor.position)
                )
                .values(tx_id=cursor.tx_id, position=cursor.position)
            )
            if self.use_lease:
                # Saving renews the lease too (the next round then needs no lease transaction).
                query = query.where(cp.c.lease_holder == self.holder).values(
                    lease_until=utcnow() + self.lease
                )
            saved = await conn.execute(query)
        # Not saved: we lost the lease. The next round asks the database again.
        self._hold(cursor if saved.rowcount == 1 else None)

    async def _publish(self, events: list[StoredEvent]) -> None:
        futures = []
        for event in events:
            headers: dict[str, Any] = {
                MSG_ID_HEADER: str(event.event_id),
                PERSONAL_DATA_HEADER: MASKED_VIEW,
            }
            if event.correlation_id:
                headers[CORRELATION_HEADER] = event.correlation_id
            futures.append(
                await self.js.publish_async(
                    event_subject(event.case_kind, event.event_type),
                    orjson.dumps(masked_envelope(event)),
                    headers=headers,
                )
            )
        await asyncio.wait_for(asyncio.gather(*futures), self.ack_timeout)

    async def publish_pending(self) -> int:
        """One round: publish the next batch after the checkpoint. Returns how many."""
        cursor = await self._cursor()
        if cursor is None:
            return 0
        events = await self.log.read_all(cursor, limit=self.batch_size)
        if not events:
            return 0
        await self._publish(events)
        await self._save(LogCursor.after(events[-1]))
        PUBLISHED.inc(len(events))
        return len(events)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; wake on commits, and poll at least every second."""
        await tail(
            self.publish_pending,
            engine=self.log.engine,
            wakeup=self.wakeup,
            stop=stop,
            batch_size=self.batch_size,
            poll_interval=self.poll_interval,
            leading=lambda: self._leading,
            failed=lambda: log_failed_round(log, "relay round failed; retrying"),
        )
