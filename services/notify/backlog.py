"""Notify's part of the backlog gauges (issue 16): deliveries due now, pending in all,
and given up (dead letters), per channel."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import sqlalchemy as sa
import structlog
from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notify.outbox import FAILED, PENDING
from services.notify.schema import deliveries as d

log = structlog.get_logger("caseflow.metrics")

DELIVERIES = Gauge(
    "caseflow_notify_deliveries",
    "Deliveries by state: due (pending, their time has come), pending (all), failed",
    ["channel", "state"],
)
SAMPLED = Gauge(
    "caseflow_notify_deliveries_sampled_timestamp_seconds", "When the deliveries were counted"
)
CHANNELS = ("email", "sms", "webhook")


async def delivery_counts(engine: AsyncEngine) -> dict[tuple[str, str], int]:
    now = datetime.now(UTC)
    due = sa.func.sum(sa.case((d.c.next_attempt_at <= now, 1), else_=0))
    counts = {(c, s): 0 for c in CHANNELS for s in ("due", "pending", "failed")}
    async with engine.connect() as conn:
        for channel, pending, ready in await conn.execute(
            sa.select(d.c.channel, sa.func.count(), due)
            .where(d.c.status == PENDING)
            .group_by(d.c.channel)
        ):
            counts[(str(channel), "pending")] = int(pending)
            counts[(str(channel), "due")] = int(ready or 0)
        for channel, failed in await conn.execute(
            sa.select(d.c.channel, sa.func.count())
            .where(d.c.status == FAILED)
            .group_by(d.c.channel)
        ):
            counts[(str(channel), "failed")] = int(failed)
        await conn.rollback()
    return counts


async def sample_deliveries(engine: AsyncEngine, stop: asyncio.Event, interval: float) -> None:
    while not stop.is_set():
        try:
            counts = await delivery_counts(engine)
        except Exception as err:  # an outage: said elsewhere; the figures stay as they were
            log.debug("deliveries not counted", error=type(err).__name__)
        else:
            for (channel, state), count in counts.items():
                DELIVERIES.labels(channel, state).set(count)
            SAMPLED.set(time.time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
