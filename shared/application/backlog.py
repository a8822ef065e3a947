"""What is waiting, for the operator's gauges (issue 16): events the relay has not
published, events each projection has not applied, timers due and not fired. Read from
the database; cheap (counts over the log's position index and a partial scan of timers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.adapters.tables.eventlog import events, relay_checkpoints
from shared.adapters.tables.projections import projection_checkpoints
from shared.adapters.tables.timers import timers


@dataclass(frozen=True)
class DatabaseBacklog:
    unpublished: int
    """Events after the furthest relay checkpoint: not yet on the bus."""
    projection_lag: dict[str, int] = field(default_factory=dict)
    """Per projection, events after its checkpoint."""
    timers_due: int = 0
    """Timers whose moment has come that have neither fired nor been cancelled."""


async def _after(conn: AsyncConnection, position: int) -> int:
    count = await conn.scalar(
        sa.select(sa.func.count()).select_from(events).where(events.c.position > position)
    )
    return int(count or 0)


async def database_backlog(engine: AsyncEngine, now: datetime | None = None) -> DatabaseBacklog:
    now = now or datetime.now(UTC)
    async with engine.connect() as conn:
        relayed = await conn.scalar(sa.select(sa.func.max(relay_checkpoints.c.position)))
        unpublished = await _after(conn, int(relayed or 0))
        lag = {
            str(name): await _after(conn, int(position))
            for name, position in (
                await conn.execute(
                    sa.select(projection_checkpoints.c.name, projection_checkpoints.c.position)
                )
            ).all()
        }
        due = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(timers)
            .where(
                timers.c.fired_at.is_(None),
                timers.c.cancelled_at.is_(None),
                timers.c.due_at <= now,
            )
        )
        await conn.rollback()
    return DatabaseBacklog(int(unpublished), lag, int(due or 0))
