"""The gauges an operator watches (issue 16), refreshed in the background of every service
and exported on ``/metrics``: what waits in the database (events not yet published, each
projection's lag, timers due) and on the bus (each durable consumer's pending messages,
its dead letters). Every service samples all of them, so a stopped service's backlog is
still seen through the others. A source that can't be read keeps its last figures; its
``caseflow_backlog_sampled_timestamp_seconds`` then stops moving (alert on its age)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from nats.aio.client import Client as NATS
from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.adapters.bus.backlog import consumer_pending, dead_letters
from shared.application.backlog import database_backlog

log = structlog.get_logger("caseflow.metrics")

UNPUBLISHED = Gauge(
    "caseflow_events_unpublished", "Events in the log not yet published to JetStream"
)
PROJECTION_LAG = Gauge(
    "caseflow_projection_lag_events",
    "Events in the log after a projection's checkpoint (not yet in its read model)",
    ["projection"],
)
TIMERS_DUE = Gauge("caseflow_timers_due", "Durable timers due and neither fired nor cancelled")
CONSUMER_PENDING = Gauge(
    "caseflow_consumer_pending_messages",
    "A durable consumer's messages not yet delivered or not yet acknowledged",
    ["consumer"],
)
DEAD_LETTERS = Gauge(
    "caseflow_dead_letters",
    "Messages a consumer gave up on, in the dead-letter stream",
    ["consumer"],
)
SAMPLED = Gauge(
    "caseflow_backlog_sampled_timestamp_seconds",
    "When the backlog gauges were last read from a source (database, bus)",
    ["source"],
)


async def _every(interval: float, stop: asyncio.Event) -> bool:
    """Wait ``interval`` (or until ``stop``); True while running."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=interval)
    return not stop.is_set()


async def sample_database(engine: AsyncEngine, stop: asyncio.Event, interval: float) -> None:
    while True:
        try:
            backlog = await database_backlog(engine)
        except Exception as err:  # an outage: said elsewhere; the figures stay as they were
            log.debug("backlog not read from the database", error=type(err).__name__)
        else:
            UNPUBLISHED.set(backlog.unpublished)
            for projection, lag in backlog.projection_lag.items():
                PROJECTION_LAG.labels(projection).set(lag)
            TIMERS_DUE.set(backlog.timers_due)
            SAMPLED.labels("database").set(time.time())
        if not await _every(interval, stop):
            return


async def sample_bus(nc: NATS, stop: asyncio.Event, interval: float) -> None:
    js = nc.jetstream()
    while True:
        try:
            pending = await consumer_pending(js)
            dead = await dead_letters(js)
        except Exception as err:  # NATS away: said elsewhere; the figures stay as they were
            log.debug("backlog not read from the bus", error=type(err).__name__)
        else:
            for consumer, count in pending.items():
                CONSUMER_PENDING.labels(consumer).set(count)
            for consumer, count in dead.items():
                DEAD_LETTERS.labels(consumer).set(count)
            SAMPLED.labels("bus").set(time.time())
        if not await _every(interval, stop):
            return
