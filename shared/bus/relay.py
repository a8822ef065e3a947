"""The relay: publishes committed events from the log to JetStream, in log order.

Each event goes to ``caseflow.events.<case_kind>.<event_type>`` with ``Nats-Msg-Id`` set to
its event id, so the server drops a repeat. The checkpoint moves only after JetStream
acknowledged every publish of the batch. A lease in the checkpoint row lets one relay
publish while others stand by; even without it two relays are harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from datetime import timedelta
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.bus.headers import CORRELATION_HEADER, MSG_ID_HEADER
from shared.bus.streams import event_subject
from shared.eventlog import EventLog, LogCursor
from shared.eventlog.schema import relay_checkpoints as cp
from shared.events import StoredEvent, utcnow
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

    async def _checkpoint(self, conn: AsyncConnection) -> LogCursor | None:
        """Our cursor, or None when another relay holds the lease."""
        await insert_ignore(conn, cp, {"name": self.name, "tx_id": 0, "position": 0})
        now = utcnow()
        if self.use_lease:
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
            )
            if taken.rowcount != 1:
                return None
        row = (
            await conn.execute(sa.select(cp.c.tx_id, cp.c.position).where(cp.c.name == self.name))
        ).one()
        return LogCursor(row.tx_id, row.position)

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
                query = query.where(cp.c.lease_holder == self.holder)
            await conn.execute(query)

    async def _publish(self, events: list[StoredEvent]) -> None:
        futures = []
        for event in events:
            headers: dict[str, Any] = {MSG_ID_HEADER: str(event.event_id)}
            if event.correlation_id:
                headers[CORRELATION_HEADER] = event.correlation_id
            futures.append(
                await self.js.publish_async(
                    event_subject(event.case_kind, event.event_type),
                    orjson.dumps(event.envelope()),
                    headers=headers,
                )
            )
        await asyncio.wait_for(asyncio.gather(*futures), self.ack_timeout)

    async def publish_pending(self) -> int:
        """One round: publish the next batch after the checkpoint. Returns how many."""
        async with self.log.writer.begin() as conn:
            cursor = await self._checkpoint(conn)
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
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._listen())
            while not stop.is_set():
                try:
                    published = await self.publish_pending()
                except Exception:
                    log.exception("relay round failed; retrying")
                    published = 0
                    await asyncio.sleep(self.poll_interval)
                if published >= self.batch_size:
                    continue
                self.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait(stop), self.poll_interval)

    async def _wait(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self.wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    @contextlib.asynccontextmanager
    async def _listen(self) -> Any:
        """On PostgreSQL, LISTEN for commits from any process; SQLite relies on polling."""
        if self.log.engine.dialect.name != "postgresql":
            yield
            return
        conn = await self.log.engine.connect()
        try:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None

            def _notified(*_: object) -> None:
                self.wakeup.set()

            await driver.add_listener("caseflow_events", _notified)
            yield
            with contextlib.suppress(Exception):
                await driver.remove_listener("caseflow_events", _notified)
        finally:
            await conn.close()
