"""Webhook subscriptions: which station's events an integrator wants, and where."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.notify import outbox
from services.notify.schema import subscriptions as s
from shared.adapters import idempotency
from shared.adapters.eventlog import EventLog
from shared.adapters.idempotency import KeyedRequest
from shared.domain.events import utcnow

ACTIVE, PAUSED = "active", "paused"
ALL_EVENTS = "*"


@dataclasses.dataclass(frozen=True, slots=True)
class Subscription:
    """An integrator's subscription to a station's events."""

    subscription_id: uuid.UUID
    station: str
    event_types: tuple[str, ...]
    url: str
    secret: str
    description: str | None
    status: str
    status_reason: str | None
    """Why notify paused it (the receiver answered 410 Gone), or None."""
    created_by: str
    created_at: datetime
    updated_at: datetime

    def wants(self, event_type: str) -> bool:
        """Whether an event of this type goes to this subscription."""
        return self.status == ACTIVE and (
            ALL_EVENTS in self.event_types or event_type in self.event_types
        )

    def public(self) -> dict[str, Any]:
        """Everything but the secret."""
        return {
            "subscription_id": str(self.subscription_id),
            "station": self.station,
            "event_types": list(self.event_types),
            "url": self.url,
            "description": self.description,
            "status": self.status,
            "status_reason": self.status_reason,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _subscription(row: sa.Row[Any]) -> Subscription:
    m = row._mapping
    return Subscription(
        subscription_id=m["subscription_id"],
        station=m["station"],
        event_types=tuple(m["event_types"]),
        url=m["url"],
        secret=m["secret"],
        description=m["description"],
        status=m["status"],
        status_reason=m["status_reason"],
        created_by=m["created_by"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


async def create(
    event_log: EventLog,
    *,
    station: str,
    event_types: Sequence[str],
    url: str,
    secret: str,
    created_by: str,
    description: str | None = None,
    request: KeyedRequest | None = None,
) -> tuple[Subscription | None, bool]:
    """Add a subscription under a new random id; with the request that asked for it, its
    sender's Idempotency-Key is recorded in the same transaction.

    Returns the subscription and True when this call added it. The sender's retry adds
    nothing: it returns the subscription their first request added (None if it was
    deleted since) and False."""
    prior = None if request is None else await idempotency.answered(event_log.reader, request)
    if prior is None:
        sid = idempotency.new_id()
        now = utcnow()
        try:
            async with event_log.writer.begin() as conn:
                if request is not None:
                    await idempotency.remember(conn, request, sid)
                await conn.execute(
                    s.insert().values(
                        subscription_id=sid,
                        station=station,
                        event_types=list(event_types),
                        url=url,
                        secret=secret,
                        description=description,
                        status=ACTIVE,
                        created_by=created_by,
                        created_at=now,
                        updated_at=now,
                    )
                )
                row = (await conn.execute(sa.select(s).where(s.c.subscription_id == sid))).one()
        except idempotency.AlreadyAnswered as twin:
            prior = twin.resource_id
        else:
            return _subscription(row), True
    return await get(event_log, prior), False


async def get(event_log: EventLog, subscription_id: uuid.UUID) -> Subscription | None:
    """One subscription, or None."""
    (found,) = await get_many(event_log, [subscription_id])
    return found


async def get_many(
    event_log: EventLog, subscription_ids: Sequence[uuid.UUID]
) -> list[Subscription | None]:
    """:func:`get` for each of ``subscription_ids`` in one query, in order."""
    if not subscription_ids:
        return []
    async with event_log.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(s).where(s.c.subscription_id.in_(set(subscription_ids)))
        )
        found = {row.subscription_id: _subscription(row) for row in rows}
    return [found.get(subscription_id) for subscription_id in subscription_ids]


async def listed(event_log: EventLog, station: str | None = None) -> list[Subscription]:
    """Subscriptions, of one station or all, oldest first."""
    query = sa.select(s).order_by(s.c.created_at, s.c.subscription_id)
    if station is not None:
        query = query.where(s.c.station == station)
    async with event_log.engine.connect() as conn:
        return [_subscription(r) for r in await conn.execute(query)]


async def active(conn: AsyncConnection, station: str) -> list[Subscription]:
    """Active subscriptions of ``station`` (in a transaction)."""
    rows = await conn.execute(sa.select(s).where(s.c.station == station, s.c.status == ACTIVE))
    return list(map(_subscription, rows))


async def set_status(
    event_log: EventLog, subscription_id: uuid.UUID, status: str
) -> Subscription | None:
    """Pause or resume (a person's doing: any reason notify gave is cleared); None if
    there is no such subscription. Resuming makes its held deliveries due at once."""
    async with event_log.writer.begin() as conn:
        await conn.execute(
            s.update()
            .where(s.c.subscription_id == subscription_id)
            .values(status=status, status_reason=None, updated_at=utcnow())
        )
        if status == ACTIVE:
            await outbox.due_now(conn, subscription_id)
        row = (
            await conn.execute(sa.select(s).where(s.c.subscription_id == subscription_id))
        ).first()
    return _subscription(row) if row else None


async def pause_gone(event_log: EventLog, subscription_id: uuid.UUID, reason: str) -> bool:
    """Pause an active subscription whose receiver said it is gone (HTTP 410), with the
    reason its head reads; False if it was not active (paused or deleted meanwhile)."""
    async with event_log.writer.begin() as conn:
        result = await conn.execute(
            s.update()
            .where(s.c.subscription_id == subscription_id, s.c.status == ACTIVE)
            .values(status=PAUSED, status_reason=reason[:500], updated_at=utcnow())
        )
    return result.rowcount == 1


async def delete(event_log: EventLog, subscription_id: uuid.UUID) -> int | None:
    """Delete it and cancel its pending deliveries (how many); None if it didn't exist."""
    async with event_log.writer.begin() as conn:
        result = await conn.execute(s.delete().where(s.c.subscription_id == subscription_id))
        if result.rowcount != 1:
            return None
        return await outbox.cancel(conn, subscription_id)
