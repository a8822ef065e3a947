"""Notify's deliveries on /metrics (issue 16): due, pending and failed, per channel, on
both backends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from services.notify import outbox
from services.notify.backlog import delivery_counts
from services.notify.model import Recipient
from services.notify.schema import deliveries
from shared.adapters.eventlog import EventLog


async def test_deliveries_are_counted_by_channel_and_state(log: EventLog) -> None:
    planned = []
    async with log.writer.begin() as conn:
        for channel in ("email", "email", "email", "webhook"):
            delivery = uuid.uuid4()
            planned.append(delivery)
            await outbox.plan(
                conn,
                delivery_id=delivery,
                event_id=uuid.uuid4(),
                event_type="CaseAccepted",
                case_id=uuid.uuid4(),
                case_kind="application",
                station="xuefeng_station",
                channel=channel,
                recipient=Recipient("applicant", "a@example.cn", "a***@example.cn"),
                subject="受理通知",
                body="…",
            )
        later = datetime.now(UTC) + timedelta(hours=1)  # a retry waiting for its time
        await conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.delivery_id == planned[1])
            .values(next_attempt_at=later)
        )
        await conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.delivery_id == planned[2])
            .values(status=outbox.FAILED, failed_at=datetime.now(UTC))
        )
    counts = await delivery_counts(log.engine)
    assert (
        counts[("email", "pending")],
        counts[("email", "due")],
        counts[("email", "failed")],
    ) == (2, 1, 1)
    assert (counts[("webhook", "pending")], counts[("webhook", "due")]) == (1, 1)
    assert counts[("sms", "pending")] == 0
