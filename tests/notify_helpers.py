"""Deliveries put straight into notify's outbox, as its planning consumer would (no NATS,
no rules): for tests of what the dispatcher and the outbox do with them."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncConnection

from bench.notify import STATION
from services.notify import outbox
from services.notify.model import ChannelName, Recipient, delivery_id
from shared.domain.events import StoredEvent


async def plan_delivery(
    conn: AsyncConnection,
    about: StoredEvent,
    channel: ChannelName,
    recipient: Recipient,
    *,
    subject: str,
    body: str,
    subscription_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A pending delivery of the Xuefeng application event ``about`` on ``channel``; its id."""
    planned = delivery_id(about.event_id, channel, recipient)
    await outbox.plan(
        conn,
        delivery_id=planned,
        event_id=about.event_id,
        event_type=about.event_type,
        case_id=about.case_id,
        case_kind="application",
        station=STATION,
        channel=channel,
        recipient=recipient,
        subject=subject,
        body=body,
        subscription_id=subscription_id,
    )
    return planned
