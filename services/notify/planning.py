"""Notify's consumer: for each event, plan who is told what, over which channel.

Planning only writes the outbox, in the consumer's transaction (with the inbox record),
so a redelivered event plans nothing twice and no channel can hold the consumer up;
the :class:`~services.notify.dispatcher.Dispatcher` sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import orjson

from services.notify import outbox, subscriptions
from services.notify.egress import TargetInvalid, parse_target
from services.notify.model import PlannedNotice, Recipient, delivery_id
from shared.adapters.bus.consumer import REDRIVEN, ConsumerSpec
from shared.adapters.eventlog import UnitOfWork
from shared.domain.events import StoredEvent, utcnow
from shared.domain.privacy import masked_envelope

NOT_NOTIFIED = frozenset(
    {"NotificationSent", "NotificationFailed", "PersonalDataViewed", "PersonalDataDisclosed"}
)
"""notify's own records (telling somebody about them would never end) and the audit's
records of personal data read by staff or disclosed to a department (for auditors, not
for subscribers)."""


class NoticePlanner(Protocol):
    """The rules: which notices an event calls for (see services/notify/rules.py)."""

    def plan(self, event: StoredEvent, history: Sequence[StoredEvent]) -> list[PlannedNotice]:
        """The notices for ``event``; ``history`` ends with it."""
        ...


def webhook_body(event: StoredEvent) -> bytes:
    """What a webhook carries: the event's envelope, personal data masked (the same
    masked view as on the bus, ``personal_data: masked``).

    The shape follows Standard Webhooks: ``type``, ``timestamp`` and ``data``.
    """
    envelope = masked_envelope(event)
    return orjson.dumps(
        {"type": event.event_type, "timestamp": event.recorded_at.isoformat(), "data": envelope}
    )


def worth_notifying(event: StoredEvent, max_age: timedelta, *, now: datetime | None = None) -> bool:
    """Whether ``event`` calls for notices at all: not notify's own records nor the
    audit's, and recorded within ``max_age`` unless it is being re-driven from the dead
    letters (:data:`~shared.adapters.bus.consumer.REDRIVEN`: an operator asked for it now,
    whatever its age; its applicants were never told)."""
    if event.event_type in NOT_NOTIFIED:
        return False
    if REDRIVEN.get():
        return True
    return (now or utcnow()) - event.recorded_at <= max_age


def station_of(history: Sequence[StoredEvent]) -> str | None:
    """The station the case belongs to."""
    if not history:
        return None
    first = history[0]
    station = first.payload.get("station")
    return str(station) if station else first.actor_station


def planning_consumer(
    planner: NoticePlanner,
    *,
    wake: Callable[[], None] | None = None,
    max_age: timedelta = timedelta(days=3),
    name: str = "notify",
) -> ConsumerSpec:
    """The consumer that plans deliveries for every event on the bus.

    Events recorded more than ``max_age`` ago are not notified: a notice about last
    month's acceptance, sent because a new notify replays the stream, would only confuse.
    An event re-driven from the dead letters is notified whatever its age
    (:func:`worth_notifying`).
    """

    async def handle(event: StoredEvent, uow: UnitOfWork) -> None:
        if not worth_notifying(event, max_age):
            return
        history = [e for e in await uow.read_case(event.case_id) if e.version <= event.version]
        station = station_of(history)
        planned = 0
        for notice in planner.plan(event, history):
            planned += await outbox.plan(
                uow.conn,
                delivery_id=delivery_id(event.event_id, notice.channel, notice.recipient),
                event_id=event.event_id,
                event_type=event.event_type,
                case_id=event.case_id,
                case_kind=event.case_kind,
                station=station,
                channel=notice.channel,
                recipient=notice.recipient,
                subject=notice.notice.subject,
                body=notice.notice.body,
                template=notice.template,
                correlation_id=event.correlation_id,
            )
        if station is not None:
            body: bytes | None = None
            # read once per batch (one transaction) and station, not once per event
            key = ("webhook subscriptions", station)
            if key not in uow.memo:
                uow.memo[key] = await subscriptions.active(uow.conn, station)
            wanted = [sub for sub in uow.memo[key] if sub.wants(event.event_type)]
            for sub in wanted:
                body = body or webhook_body(event)
                recipient = Recipient(
                    audience=f"webhook:{sub.subscription_id}",
                    address=sub.url,
                    masked=_host(sub.url),
                )
                planned += await outbox.plan(
                    uow.conn,
                    delivery_id=delivery_id(event.event_id, "webhook", recipient),
                    event_id=event.event_id,
                    event_type=event.event_type,
                    case_id=event.case_id,
                    case_kind=event.case_kind,
                    station=station,
                    channel="webhook",
                    recipient=recipient,
                    subject=event.event_type,
                    body=body.decode(),
                    subscription_id=sub.subscription_id,
                    correlation_id=event.correlation_id,
                )
        if planned and wake is not None:
            # The rows are visible once this transaction commits, a moment from now.
            asyncio.get_running_loop().call_later(0.05, wake)

    return ConsumerSpec(
        name=name, subjects=("caseflow.events.>",), handler=handle, ignores=NOT_NOTIFIED
    )


def _host(url: str) -> str:
    """What the record shows of a webhook's URL: ``scheme://host[:port]``, as the
    channel reads it."""
    try:
        return parse_target(url).display
    except TargetInvalid:
        return "(not a valid web address)"
