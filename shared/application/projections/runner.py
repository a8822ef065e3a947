"""The live projection runner: keeps projections up to date with the log.

Every processing replica runs one for all the projections; a lease in each projection's
checkpoint lets one replica write it and the others stand by (taking over when the lease
lapses, or when a rebuild gives it back). A round reads the next batch after the
earliest checkpoint it holds, once for all of them, in the log's read order
(``EventLog.read_all``: gap-free on PostgreSQL), then, in one transaction, moves each
checkpoint (only from the cursor it read, only while holding the lease) and applies to
each projection the part of the batch after its own checkpoint. It wakes when events are
committed — in this process (the log's commit hook), in another (the relay's NATS
wake-up message, handed in by the runtime) or anywhere on PostgreSQL (LISTEN/NOTIFY) —
and polls every second otherwise.

One runner for all, rather than one per projection: every commit woke each of them, and
each read the same events and committed on its own; together they read once and commit
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

import structlog
from prometheus_client import Counter

from shared.adapters.eventlog import EventLog, LogCursor
from shared.adapters.eventlog.tailing import tail
from shared.adapters.outages import log_failed_round
from shared.application.projections import Projection
from shared.application.projections import checkpoints as cps
from shared.domain.events import StoredEvent

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


@dataclasses.dataclass(slots=True)
class _Lane:
    """One projection as the runner sees it."""

    projection: Projection
    held: LogCursor | None = None
    """Its checkpoint while we hold the lease (only we move it then)."""
    finishing_rebuild: bool = False
    """We took over from an interrupted rebuild: clear its mark once caught up."""
    renewed_at: float = 0.0

    @property
    def name(self) -> str:
        return self.projection.name

    def drop(self) -> None:
        """We no longer know that the tables are ours: forget caches."""
        self.held = None
        reset(self.projection)

    def part(self, events: Sequence[StoredEvent]) -> Sequence[StoredEvent]:
        """The events after this projection's checkpoint."""
        assert self.held is not None
        if LogCursor.after(events[0]) > self.held:
            return events
        return [e for e in events if LogCursor.after(e) > self.held]


class ProjectionRunner:
    """Applies the log to one or more projections, batch by batch, as their lease holder."""

    def __init__(
        self,
        event_log: EventLog,
        projections: Projection | Sequence[Projection],
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        lease_seconds: float = 10.0,
    ) -> None:
        self.log = event_log
        chosen = list(projections) if isinstance(projections, Sequence) else [projections]
        if not chosen:
            raise ValueError("a runner needs at least one projection")
        self.lanes = [_Lane(p) for p in chosen]
        self.name = ", ".join(lane.name for lane in self.lanes)
        self.holder = cps.holder_id()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lease = timedelta(seconds=lease_seconds)
        self.renew_interval = lease_seconds / 4
        self.wakeup = asyncio.Event()
        event_log.on_append(self.wakeup.set)
        self.on_applied: list[Callable[[], None]] = []
        """Called after each batch is committed to the read models (e.g. to tell open
        worklists); a failing callback is logged, never fails the batch."""

    def wake(self) -> None:
        """Events were committed somewhere: look at once."""
        self.wakeup.set()

    async def _leading(self) -> list[_Lane]:
        """The projections whose lease we hold, with their cursors (taking or renewing
        the leases that are due, in one transaction)."""
        now = time.monotonic()
        due = [
            lane
            for lane in self.lanes
            if lane.held is None or now - lane.renewed_at >= self.renew_interval
        ]
        if due:
            async with self.log.writer.begin() as conn:
                taken = [
                    await cps.take_lease(conn, lane.name, self.holder, self.lease) for lane in due
                ]
            for lane, checkpoint in zip(due, taken, strict=True):
                if checkpoint is None:
                    if lane.held is not None:
                        log.info("projection lease taken by another writer", projection=lane.name)
                        lane.drop()
                    continue
                if checkpoint.cursor != lane.held:
                    # Newly leading, or the checkpoint moved while we were away: caches
                    # are stale.
                    reset(lane.projection)
                lane.held = checkpoint.cursor
                lane.finishing_rebuild = checkpoint.rebuilding
                lane.renewed_at = now
        return [lane for lane in self.lanes if lane.held is not None]

    async def step(self) -> int:
        """One round: apply the next batch after the checkpoints. How many events."""
        lanes = await self._leading()
        if not lanes:
            return 0
        events = await self.log.read_all(
            min(lane.held for lane in lanes if lane.held is not None), limit=self.batch_size
        )
        if not events:
            finishing = [lane for lane in lanes if lane.finishing_rebuild]
            if finishing:
                async with self.log.writer.begin() as conn:
                    for lane in finishing:
                        await cps.complete_rebuild(conn, lane.name, self.holder)
                for lane in finishing:
                    lane.finishing_rebuild = False
                    log.info("interrupted rebuild completed by the runner", projection=lane.name)
            return 0
        to = LogCursor.after(events[-1])
        moved: list[tuple[_Lane, int]] = []
        try:
            async with self.log.writer.begin() as conn:
                for lane in lanes:
                    mine = lane.part(events)
                    if not mine:  # ahead of the others (a rebuild of it finished later)
                        continue
                    assert lane.held is not None
                    await cps.advance(
                        conn, lane.name, self.holder, lane.held, to, len(mine), self.lease
                    )
                    await lane.projection.apply(conn, mine)
                    moved.append((lane, len(mine)))
        except cps.LeaseLost as lost:
            # Which one doesn't matter: the others' leases are taken again next round.
            log.info("projection lease lost; standing by", reason=str(lost))
            for lane in lanes:
                lane.drop()
            return 0
        except BaseException:
            for lane in lanes:
                lane.drop()
            raise
        now = time.monotonic()
        for lane, applied in moved:
            lane.held = to
            lane.renewed_at = now
            APPLIED.labels(lane.name).inc(applied)
        if moved:
            for callback in self.on_applied:
                try:
                    callback()
                except Exception as err:  # a watcher's fault is not the projection's
                    log.warning("projection watcher failed", error=repr(err))
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
            leading=lambda: any(lane.held is not None for lane in self.lanes),
            failed=lambda: log_failed_round(
                log, "projection round failed; retrying", projection=self.name
            ),
        )
        with contextlib.suppress(Exception):
            async with self.log.writer.begin() as conn:
                for lane in self.lanes:
                    await cps.release(conn, lane.name, self.holder)
