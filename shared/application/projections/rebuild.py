"""Rebuild projections: empty their tables and replay the log into them.

A rebuild takes each projection's lease over from the live runner (which stands by
meanwhile), empties the tables and points the checkpoint at the start of the log in one
transaction, then applies the log batch by batch — one read of the log for all the
projections being rebuilt, the next batch read while the current one is applied — moving
each checkpoint in the transaction that writes its rows. So an interrupted rebuild
(Ctrl-C, a crash) leaves tables that equal the log up to the checkpoint: the next rebuild
continues from there (unless told to restart), and a live runner that takes the lease
back meanwhile just goes on catching up. When the rebuild reaches the end of the log it
clears the projection's rebuild mark and gives the lease back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.adapters.eventlog import EventLog, LogCursor
from shared.adapters.tables.eventlog import events as events_table
from shared.application.projections import Projection
from shared.application.projections import checkpoints as cps
from shared.application.projections.registry import projections as registered
from shared.application.projections.registry import select
from shared.application.projections.runner import reset
from shared.domain.events import StoredEvent
from shared.domain.workflow.reference import Reference, load_reference

Progress = Callable[[int, int], None]
"""Told ``(events done, events in all)`` after each batch; ``done`` counts what earlier
interrupted runs did too, so a resumed progress bar starts where the last one stopped."""


class RebuildRunning(RuntimeError):
    """Another rebuild holds the projection's lease."""


@dataclasses.dataclass(frozen=True, slots=True)
class RebuildResult:
    """What one rebuild run did."""

    names: tuple[str, ...]
    events: int
    """Events read from the log and applied in this run."""
    seconds: float
    resumed: tuple[str, ...]
    """The projections whose interrupted rebuild this run continued."""
    done: int
    """Events applied since the rebuild started (earlier runs included)."""

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def count_after(conn: AsyncConnection, cursor: LogCursor) -> int:
    """How many events the log holds after ``cursor`` (committed ones; the lag)."""
    t = events_table
    query = sa.select(sa.func.count()).select_from(t)
    if cursor.tx_id or cursor.position:
        query = query.where(
            sa.tuple_(t.c.tx_id, t.c.position) > sa.tuple_(cursor.tx_id, cursor.position)
        )
    return int((await conn.execute(query)).scalar_one())


async def empty_tables(conn: AsyncConnection, tables: Sequence[sa.Table]) -> None:
    """Empty ``tables`` in the caller's transaction (TRUNCATE on PostgreSQL)."""
    if not tables:
        return
    if conn.dialect.name == "postgresql":
        names = ", ".join(conn.dialect.identifier_preparer.format_table(t) for t in tables)
        await conn.execute(sa.text(f"TRUNCATE {names}"))
    else:
        for table in tables:
            await conn.execute(sa.delete(table))


async def _begin(
    log: EventLog,
    chosen: Sequence[Projection],
    holder: str,
    lease: timedelta,
    restart: bool,
) -> tuple[dict[str, LogCursor], tuple[str, ...], int]:
    """Take the leases; empty and restart the projections not resumed. Their cursors, the
    names resumed, and the events already applied."""
    cursors: dict[str, LogCursor] = {}
    resumed: list[str] = []
    done: list[int] = []
    to_empty: list[sa.Table] = []
    if log.engine.dialect.name == "postgresql":
        # Fresh statistics: after a bulk load (an imported bundle) the planner may think
        # the log is small and sort all of it for every batch instead of walking the index.
        async with log.engine.connect() as conn:
            await conn.execute(sa.text("ANALYZE events"))
            await conn.commit()
    async with log.writer.begin() as conn:
        for projection in sorted(chosen, key=lambda p: p.name):
            name = projection.name
            await cps.ensure(conn, name)
            checkpoint = await cps.load(conn, name, lock=True)
            assert checkpoint is not None
            other = checkpoint.lease_holder
            if (
                other is not None
                and other.startswith(cps.REBUILD_PREFIX)
                and checkpoint.leased()
                and not cps.holder_is_gone(other)
            ):
                raise RebuildRunning(
                    f"projection {name} is being rebuilt by {other} "
                    f"(lease until {checkpoint.lease_until:%Y-%m-%d %H:%M:%S}Z)"
                )
            if checkpoint.rebuilding and not restart:
                await cps.seize(conn, name, holder, lease)
                cursors[name] = checkpoint.cursor
                resumed.append(name)
                done.append(checkpoint.events_applied)
            else:
                await cps.restart(conn, name, holder, lease)
                cursors[name] = LogCursor()
                done.append(0)
                to_empty.extend(t for t in projection.tables if t not in to_empty)
        await empty_tables(conn, to_empty)
    return cursors, tuple(resumed), min(done, default=0)


async def rebuild(
    engine: AsyncEngine,
    names: Sequence[str] | None = None,
    *,
    progress: Progress | None = None,
    restart: bool = False,
    reference: Reference | None = None,
    projections: Sequence[Projection] | None = None,
    batch_size: int = 10_000,
    lease_seconds: float = 30.0,
    max_rate: float | None = None,
) -> RebuildResult:
    """Empty the named projections' tables (all registered ones for None) and replay the
    log into them; continue an interrupted rebuild instead unless ``restart``.

    ``projections`` replaces the registry's (built from ``reference``, by default the
    packaged reference data). Raises
    :class:`~shared.application.projections.registry.UnknownProjection` for a name not
    registered and :class:`RebuildRunning` if another rebuild is running.
    Safe while the services run: their runners stand by until the rebuild is done.
    ``max_rate`` (events per second) spares a database the services are busy with: the
    rebuild waits after a batch that put it ahead of that rate.
    """
    available = (
        list(projections) if projections is not None else registered(reference or load_reference())
    )
    chosen = select(available, names)
    log = EventLog(engine)
    holder = cps.holder_id(cps.REBUILD_PREFIX)
    lease = timedelta(seconds=lease_seconds)
    for projection in chosen:
        reset(projection)
    started = time.perf_counter()
    with _young_collections_only():
        return await _rebuild(
            log, chosen, holder, lease, restart, progress, batch_size, started, max_rate
        )


COLLECT_EVERY = 200_000
"""Events applied between two collections of the young generations."""


@contextlib.contextmanager
def _young_collections_only() -> Iterator[None]:
    """Collect cycles among the young objects every :data:`COLLECT_EVERY` events
    (``collected``), instead of letting the collector run every few hundred allocations:
    the cases kept in memory are hundreds of thousands of objects, and the automatic
    collections scanning them again and again took a third of a rebuild's time. (After
    every batch, scanning the batch read ahead took another twelfth.)"""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def collected() -> None:
    """The young generations' cycles (see :func:`_young_collections_only`)."""
    gc.collect(1)


async def _rebuild(
    log: EventLog,
    chosen: Sequence[Projection],
    holder: str,
    lease: timedelta,
    restart: bool,
    progress: Progress | None,
    batch_size: int,
    started: float,
    max_rate: float | None,
) -> RebuildResult:
    engine = log.engine
    cursors, resumed, done = await _begin(log, chosen, holder, lease, restart)
    applied = 0
    reading: asyncio.Task[list[StoredEvent]] | None = None
    try:
        async with engine.connect() as conn:
            total = done + await count_after(conn, min(cursors.values()))
        if progress is not None:
            progress(done, total)
        reading = asyncio.ensure_future(log.read_all(min(cursors.values()), batch_size))
        while True:
            batch = await reading
            reading = None
            if not batch:
                break
            last = LogCursor.after(batch[-1])
            if len(batch) == batch_size:  # read the next batch while this one is applied
                reading = asyncio.ensure_future(log.read_all(last, batch_size))
            async with log.writer.begin() as conn:
                for projection in chosen:
                    await _apply(conn, projection, batch, cursors, holder, lease)
            if (applied + len(batch)) // COLLECT_EVERY > applied // COLLECT_EVERY:
                collected()
            applied += len(batch)
            done += len(batch)
            if progress is not None:
                progress(done, max(total, done))
            if reading is None:
                break
            if max_rate is not None:
                await asyncio.sleep(applied / max_rate - (time.perf_counter() - started))
        async with log.writer.begin() as conn:
            for projection in chosen:
                await cps.finish_rebuild(conn, projection.name, holder)
    except BaseException:
        if reading is not None:
            reading.cancel()
        await asyncio.shield(_release(log, chosen, holder))
        raise
    return RebuildResult(
        names=tuple(p.name for p in chosen),
        events=applied,
        seconds=time.perf_counter() - started,
        resumed=resumed,
        done=done,
    )


async def _apply(
    conn: AsyncConnection,
    projection: Projection,
    batch: Sequence[StoredEvent],
    cursors: dict[str, LogCursor],
    holder: str,
    lease: timedelta,
) -> None:
    """Apply the part of ``batch`` after the projection's cursor and move it."""
    name = projection.name
    cursor = cursors[name]
    if LogCursor.after(batch[0]) > cursor:
        mine = batch
    else:  # this projection was ahead of the others (resumed from a later checkpoint)
        mine = [e for e in batch if LogCursor.after(e) > cursor]
    if not mine:
        await cps.advance(conn, name, holder, cursor, cursor, 0, lease)  # renew the lease
        return
    to = LogCursor.after(mine[-1])
    await cps.advance(conn, name, holder, cursor, to, len(mine), lease)
    await projection.apply(conn, mine)
    cursors[name] = to


async def _release(log: EventLog, chosen: Sequence[Projection], holder: str) -> None:
    """Give the leases back after an interruption (the rebuild mark stays)."""
    try:
        async with log.writer.begin() as conn:
            for projection in chosen:
                await cps.release(conn, projection.name, holder)
    except Exception:  # noqa: S110 - the leases lapse by themselves
        pass
