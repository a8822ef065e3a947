"""The relay: publishes committed events from the log to JetStream, in log order.

Each event goes to ``caseflow.events.<case_kind>.<event_type>`` with ``Nats-Msg-Id`` set to
its event id, so the server drops a repeat. The checkpoint moves only after JetStream
acknowledged every publish of the batch. A lease in the checkpoint row lets one relay
publish while others stand by; even without it two relays are harmless.

The bus is distribution, not the record: each message is the event's masked view (ID and
phone numbers and e-mail addresses masked, ``personal_data: masked`` in the envelope and
the ``Caseflow-Personal-Data: masked`` header), with the stored row's ``hash``. caseflow's
consumers take the event itself from the log (``shared.adapters.bus.consumer``).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from nats.js import JetStreamContext
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters.bus.headers import CORRELATION_HEADER, MSG_ID_HEADER, PERSONAL_DATA_HEADER
from shared.adapters.bus.streams import event_subject
from shared.adapters.eventlog import EventLog, LogCursor
from shared.adapters.eventlog.tailing import tail
from shared.adapters.outages import log_failed_round
from shared.adapters.sql import database_now, insert_ignore
from shared.adapters.tables.eventlog import relay_checkpoints as cp
from shared.adapters.tracing import continued
from shared.domain.events import StoredEvent
from shared.domain.privacy import MASKED_VIEW, masked_envelope

log = structlog.get_logger("caseflow.relay")


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)  # SQLite keeps UTC without a zone


LEASE_SECONDS = 2.5
"""How long a relay's lease lasts unless renewed: a stand-by takes over this long after the
holder died at the latest (at once after a clean stop, which gives the lease back)."""

_EXPIRY_MARGIN = 0.01
"""Seconds after a lease's end at which a stand-by looks (the clocks' resolution)."""

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
        lease_seconds: float = LEASE_SECONDS,
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
        # Rounds come at least every poll interval (≤ 1 s), so an idle holder renews about
        # once a second and a busy one with every checkpoint it saves.
        self.renew_interval = lease_seconds / 4
        self._held: LogCursor | None = None
        self._renewed_at = 0.0
        self._standby_until: float | None = None
        """Another relay's lease lasts until then (monotonic clock; see :meth:`_checkpoint`)."""
        self._expiry: asyncio.TimerHandle | None = None
        """Wakes a stand-by when the holder's lease runs out (so it takes over at once)."""
        self._leading = False
        """The last round found our cursor (we hold the lease, or run without one)."""
        self.on_release: list[Callable[[], Awaitable[None]]] = []
        """Called after a clean stop gave the lease back (to tell the stand-bys)."""

    async def _take_lease(self, conn: AsyncConnection) -> LogCursor | None:
        taken = await conn.execute(
            sa.update(cp)
            .where(cp.c.name == self.name)
            .where(
                sa.or_(
                    cp.c.lease_holder.is_(None),
                    cp.c.lease_holder == self.holder,
                    cp.c.lease_until < database_now(conn),
                )
            )
            .values(lease_holder=self.holder, lease_until=database_now(conn, self.lease))
            .returning(cp.c.tx_id, cp.c.position)
        )
        row = taken.first()
        return LogCursor(row.tx_id, row.position) if row else None

    async def _checkpoint(self, conn: AsyncConnection) -> LogCursor | None:
        """Our cursor, or None when another relay holds the lease."""
        if self.use_lease:
            cursor = await self._take_lease(conn)
            if cursor is not None:
                self._stand_by(None)
                return cursor
            # How long the other lease still runs, by the clock that the UPDATE compares
            # with (the database's on PostgreSQL): our own clock's skew does not matter.
            lease = (
                await conn.execute(
                    sa.select(cp.c.lease_until, database_now(conn).label("now")).where(
                        cp.c.name == self.name
                    )
                )
            ).first()
            if lease is not None:
                left = _aware(lease.lease_until) - _aware(lease.now) if lease.lease_until else None
                self._stand_by(max(left.total_seconds(), 0.0) if left is not None else 0.0)
                return None
            # No checkpoint yet: create it, then take the lease.
            await insert_ignore(conn, cp, {"name": self.name, "tx_id": 0, "position": 0})
            return await self._take_lease(conn)
        await insert_ignore(conn, cp, {"name": self.name, "tx_id": 0, "position": 0})
        row = (
            await conn.execute(sa.select(cp.c.tx_id, cp.c.position).where(cp.c.name == self.name))
        ).one()
        return LogCursor(row.tx_id, row.position)

    def _stand_by(self, seconds: float | None) -> None:
        """Stand by for ``seconds`` (None: we lead) and look again as soon as they are up."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if seconds is None:
            self._standby_until = None
            return
        self._standby_until = time.monotonic() + seconds
        self._expiry = asyncio.get_running_loop().call_later(
            seconds + _EXPIRY_MARGIN, self.wakeup.set
        )

    def lease_freed(self) -> None:
        """The holder gave the lease back (a clean stop): try to take it now."""
        self._stand_by(None)
        self.wakeup.set()

    async def release(self) -> None:
        """Give the lease back, so that a stand-by takes over at once instead of waiting
        for it to run out; then call :attr:`on_release`."""
        if not self.use_lease:
            return
        self._stand_by(None)
        self._held = None
        async with self.log.writer.begin() as conn:
            released = await conn.execute(
                sa.update(cp)
                .where(cp.c.name == self.name, cp.c.lease_holder == self.holder)
                .values(lease_holder=None, lease_until=None)
            )
        if released.rowcount == 1:
            log.info("relay lease released", holder=self.holder)
            for callback in self.on_release:
                await callback()

    async def _cursor(self) -> LogCursor | None:
        """Where to publish from, or None while another relay holds the lease."""
        cursor: LogCursor | None
        standby = self._standby_until
        if self.use_lease and standby is not None and time.monotonic() < standby:
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
                    lease_until=database_now(conn, self.lease)
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
            # W3C trace context on the message too (when tracing): the request's trace,
            # continued here, for any consumer to continue further.
            with continued(
                f"publish {event.event_type}",
                event.correlation_id,
                str(event.event_id),
                kind=SpanKind.PRODUCER,
            ):
                propagate.inject(headers)
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
        """Publish until ``stop`` is set; wake on commits, and poll at least every second.

        A clean stop gives the lease back (see :meth:`release`); a cancelled or killed
        relay's lease runs out by itself within :data:`LEASE_SECONDS`.
        """
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
        try:
            await self.release()
        except Exception:
            log_failed_round(log, "relay lease not released; it runs out by itself")
