"""The live projection runner: keeps one projection up to date with the log.

Every processing replica runs one per projection; a lease in the projection's checkpoint
lets one of them write and the others stand by (taking over when the lease lapses, or
when a rebuild gives it back). A round reads the next batch after the checkpoint in the
log's read order (``EventLog.read_all``: gap-free on PostgreSQL), then, in one
transaction, moves the checkpoint (only from the cursor it read, only while holding the
lease) and applies the batch. It wakes when events are committed — in this process
(the log's commit hook), in another (the relay's NATS wake-up message, handed in by the
runtime) or anywhere on PostgreSQL (LISTEN/NOTIFY) — and polls every second otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import structlog
from prometheus_client import Counter

from shared.adapters.eventlog import EventLog, LogCursor
from shared.adapters.eventlog.tailing import tail
from shared.adapters.outages import log_failed_round
from shared.application.projections import Projection
from shared.application.projections import checkpoints as cps

log = structlog.get_logger("caseflow.projections")

APPLIED = Counter(
    "caseflow_projection_events_total", "Events applied by projections", ["projection"]
)


def reset(projection: Projection) -> None:
    """Call the projection's optional ``reset()`` hook: forget caches, its tables may have
    changed under it (another writer, a rebuild)."""
    hook = getattr(projection, "reset", None)
    if callable(hook):
        hook()


class ProjectionRunner:
    """Applies the log to one projection, batch by batch, as its lease holder."""

    def __init__(
        self,
        event_log: EventLog,
        projection: Projection,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        lease_seconds: float = 10.0,
    ) -> None:
        self.log = event_log
        self.projection = projection
        self.name = projection.name
        self.holder = cps.holder_id()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lease = timedelta(seconds=lease_seconds)
        self.renew_interval = lease_seconds / 4
        self.wakeup = asyncio.Event()
        event_log.on_append(self.wakeup.set)
        self._held: LogCursor | None = None
        """Our checkpoint while we hold the lease (only we move it then)."""
        self._finishing_rebuild = False
        """We took over from an interrupted rebuild: clear its mark once caught up."""
        self._renewed_at = 0.0

    def wake(self) -> None:
        """Events were committed somewhere: look at once."""
        self.wakeup.set()

    def _drop(self) -> None:
        """We no longer know that the tables are ours: forget caches."""
        self._held = None
        reset(self.projection)

    async def _cursor(self) -> LogCursor | None:
        """Where to go on from, or None while another writer holds the lease."""
        if self._held is not None and time.monotonic() - self._renewed_at < self.renew_interval:
            return self._held
        async with self.log.writer.begin() as conn:
            checkpoint = await cps.take_lease(conn, self.name, self.holder, self.lease)
        if checkpoint is None:
            if self._held is not None:
                log.info("projection lease taken by another writer", projection=self.name)
                self._drop()
            return None
        if checkpoint.cursor != self._held:
            # Newly leading, or the checkpoint moved while we were away: caches are stale.
            reset(self.projection)
        self._held = checkpoint.cursor
        self._finishing_rebuild = checkpoint.rebuilding
        self._renewed_at = time.monotonic()
        return self._held

    async def step(self) -> int:
        """One round: apply the next batch after the checkpoint. How many events."""
        cursor = await self._cursor()
        if cursor is None:
            return 0
        events = await self.log.read_all(cursor, limit=self.batch_size)
        if not events:
            if self._finishing_rebuild:
                async with self.log.writer.begin() as conn:
                    await cps.complete_rebuild(conn, self.name, self.holder)
                self._finishing_rebuild = False
                log.info("interrupted rebuild completed by the runner", projection=self.name)
            return 0
        to = LogCursor.after(events[-1])
        try:
            async with self.log.writer.begin() as conn:
                await cps.advance(conn, self.name, self.holder, cursor, to, len(events), self.lease)
                await self.projection.apply(conn, events)
        except cps.LeaseLost:
            log.info("projection lease lost; standing by", projection=self.name)
            self._drop()
            return 0
        except BaseException:
            self._drop()
            raise
        self._held = to
        self._renewed_at = time.monotonic()
        APPLIED.labels(self.name).inc(len(events))
        return len(events)

    async def catch_up(self) -> int:
        """Apply batches until the log (below its read horizon) is exhausted."""
        total = 0
        while applied := await self.step():
            total += applied
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Apply until ``stop`` is set; wake on commits, poll at least every second."""
        await tail(
            self.step,
            engine=self.log.engine,
            wakeup=self.wakeup,
            stop=stop,
            batch_size=self.batch_size,
            poll_interval=self.poll_interval,
            leading=lambda: self._held is not None,
            failed=lambda: log_failed_round(
                log, "projection round failed; retrying", projection=self.name
            ),
        )
        with contextlib.suppress(Exception):
            async with self.log.writer.begin() as conn:
                await cps.release(conn, self.name, self.holder)
