"""Notify's outbox of deliveries: planned in the consumer's transaction, claimed with a
lease by a dispatcher, finished together with the case's ``NotificationSent`` or
``NotificationFailed`` event.

Exactly once in effect:

- a delivery's id is derived from (event, channel, recipient) and inserted with ON
  CONFLICT DO NOTHING, so a redelivered event plans nothing new;
- a dispatcher claims due rows by setting a lease (PostgreSQL: ``FOR UPDATE SKIP
  LOCKED``; SQLite: in a ``BEGIN IMMEDIATE`` transaction), so two notify replicas never
  send the same delivery at the same time; a crashed sender's lease runs out and the
  delivery is sent again, with the same id as the receiver's idempotency key;
- finishing is ``UPDATE … WHERE status = 'pending'`` in the transaction that appends the
  event, so the case records each outcome once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.notify.model import ChannelName, Notice, Outgoing, Recipient
from services.notify.schema import deliveries as d
from shared.adapters.eventlog import EventLog, UnitOfWork
from shared.adapters.sql import insert_ignore
from shared.domain.events import NewEvent, utcnow
from shared.domain.messages import NotificationFailed, NotificationSent

_EVENTS = uuid.UUID("0b8f5d7e-2c4a-4d6e-8f1a-3b5c7d9e1f20")

PENDING, SENT, FAILED, CANCELLED = "pending", "sent", "failed", "cancelled"


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """One row of the outbox."""

    delivery_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    case_id: uuid.UUID
    case_kind: str
    station: str | None
    channel: ChannelName
    audience: str
    address: str
    masked: str
    language: str
    template: str | None
    subject: str
    body: str
    subscription_id: uuid.UUID | None
    status: str
    attempts: int
    rounds: int
    next_attempt_at: datetime
    last_error: str | None
    provider_message_id: str | None
    created_at: datetime
    sent_at: datetime | None
    failed_at: datetime | None
    correlation_id: str | None

    @property
    def recipient(self) -> Recipient:
        """Who it goes to."""
        return Recipient(self.audience, self.address, self.masked, self.language)

    def outgoing(self, *, secret: str | None = None, attempt: int = 1) -> Outgoing:
        """What the channel sends."""
        if self.channel == "webhook":
            return Outgoing(
                delivery_id=self.delivery_id,
                channel=self.channel,
                recipient=self.recipient,
                event_type=self.event_type,
                body=self.body.encode(),
                secret=secret,
                attempt=attempt,
            )
        return Outgoing(
            delivery_id=self.delivery_id,
            channel=self.channel,
            recipient=self.recipient,
            event_type=self.event_type,
            notice=Notice(self.subject, self.body, self.language),
            attempt=attempt,
        )

    def public(self) -> dict[str, Any]:
        """The row without personal data or message text, for the API and the CLI."""
        return {
            "delivery_id": str(self.delivery_id),
            "case_id": str(self.case_id),
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "station": self.station,
            "channel": self.channel,
            "audience": self.audience,
            "recipient": self.masked,
            "language": self.language,
            "template": self.template,
            "subject": self.subject if self.channel != "webhook" else None,
            "subscription_id": str(self.subscription_id) if self.subscription_id else None,
            "status": self.status,
            "attempts": self.attempts,
            "rounds": self.rounds,
            "last_error": self.last_error,
            "created_at": self.created_at.isoformat(),
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "failed_at": self.failed_at.isoformat() if self.failed_at else None,
        }


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=utcnow().tzinfo)


def _delivery(row: sa.Row[Any]) -> Delivery:
    m = row._mapping
    values = {f.name: m[f.name] for f in dataclasses.fields(Delivery)}
    for key in ("next_attempt_at", "created_at", "sent_at", "failed_at"):
        values[key] = _aware(values[key])
    return Delivery(**values)


async def plan(
    conn: AsyncConnection,
    *,
    delivery_id: uuid.UUID,
    event_id: uuid.UUID,
    event_type: str,
    case_id: uuid.UUID,
    case_kind: str,
    station: str | None,
    channel: ChannelName,
    recipient: Recipient,
    subject: str,
    body: str,
    template: str | None = None,
    subscription_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> bool:
    """Add a pending delivery in the caller's transaction; False if it exists already."""
    now = utcnow()
    return await insert_ignore(
        conn,
        d,
        {
            "delivery_id": delivery_id,
            "event_id": event_id,
            "event_type": event_type,
            "case_id": case_id,
            "case_kind": case_kind,
            "station": station,
            "channel": channel,
            "audience": recipient.audience,
            "address": recipient.address,
            "masked": recipient.masked,
            "language": recipient.language,
            "template": template,
            "subject": subject,
            "body": body,
            "subscription_id": subscription_id,
            "status": PENDING,
            "attempts": 0,
            "rounds": 0,
            "next_attempt_at": now,
            "created_at": now,
            "correlation_id": correlation_id,
        },
    )


async def claim(
    event_log: EventLog,
    channel: str,
    limit: int,
    owner: str,
    lease: timedelta,
    *,
    expired_before: datetime | None = None,
) -> list[Delivery]:
    """Lease up to ``limit`` due deliveries of ``channel`` to ``owner``: unleased ones and
    ones whose lease ran out (before ``expired_before`` too, if given: a lease that ran
    out later is spared, its holder may be recording a send after an outage)."""
    if limit <= 0:
        return []
    now = utcnow()
    ran_out = now if expired_before is None else min(now, expired_before)
    due = (
        sa.select(d.c.delivery_id)
        .where(
            d.c.status == PENDING,
            d.c.channel == channel,
            d.c.next_attempt_at <= now,
            sa.or_(d.c.leased_until.is_(None), d.c.leased_until < ran_out),
        )
        .order_by(d.c.next_attempt_at)
        .limit(limit)
    )
    leased = {"leased_until": now + lease, "lease_owner": owner}
    if event_log.autocommit is not None:
        # PostgreSQL: one statement, a transaction of its own (one round trip, where a
        # transaction of a SELECT and an UPDATE took four); rows another dispatcher is
        # claiming are skipped, not waited for.
        taking = due.with_for_update(skip_locked=True).scalar_subquery()
        async with event_log.autocommit.connect() as conn:
            result = await conn.execute(
                d.update().where(d.c.delivery_id.in_(taking)).values(leased).returning(*d.c)
            )
            found = [_delivery(r) for r in result]
    else:
        async with event_log.writer.begin() as conn:  # SQLite: the write lock from BEGIN
            ids = list((await conn.execute(due)).scalars())
            if not ids:
                return []
            result = await conn.execute(
                d.update().where(d.c.delivery_id.in_(ids)).values(leased).returning(*d.c)
            )
            found = [_delivery(r) for r in result]
    return sorted(found, key=lambda x: x.next_attempt_at)


async def begin_attempt(
    event_log: EventLog, delivery_id: uuid.UUID, owner: str, lease: timedelta
) -> int:
    """Count an attempt and renew the lease; the attempt's number (0: no longer ours)."""
    (number,) = await begin_attempts(event_log, [delivery_id], owner, lease)
    return number


async def begin_attempts(
    event_log: EventLog, delivery_ids: Sequence[uuid.UUID], owner: str, lease: timedelta
) -> list[int]:
    """:func:`begin_attempt` for each of ``delivery_ids`` in one statement, in order."""
    if not delivery_ids:
        return []
    async with event_log.writer.begin() as conn:
        result = await conn.execute(
            d.update()
            .where(*_held(delivery_ids, owner))
            .values(attempts=d.c.attempts + 1, leased_until=utcnow() + lease)
            .returning(d.c.delivery_id, d.c.attempts)
        )
        numbers = {row.delivery_id: int(row.attempts) for row in result}
    return [numbers.get(delivery_id, 0) for delivery_id in delivery_ids]


def _held(delivery_ids: Sequence[uuid.UUID], owner: str) -> tuple[sa.ColumnElement[bool], ...]:
    """Of ``delivery_ids``, the pending ones ``owner`` holds."""
    return (
        d.c.delivery_id.in_(list(delivery_ids)),
        d.c.status == PENDING,
        d.c.lease_owner == owner,
    )


async def renew_lease(
    event_log: EventLog, delivery_id: uuid.UUID, owner: str, lease: timedelta
) -> bool:
    """Hold a pending delivery another ``lease`` from now, if ``owner`` holds it still."""
    async with event_log.writer.begin() as conn:
        result = await conn.execute(
            d.update()
            .where(d.c.delivery_id == delivery_id, d.c.status == PENDING, d.c.lease_owner == owner)
            .values(leased_until=utcnow() + lease)
        )
    return bool(result.rowcount)


async def renew_leases(
    event_log: EventLog, delivery_ids: Sequence[uuid.UUID], owner: str, lease: timedelta
) -> int:
    """Hold the pending deliveries ``owner`` still holds another ``lease`` from now (one
    statement for all of them); how many it holds."""
    if not delivery_ids:
        return 0
    async with event_log.writer.begin() as conn:
        result = await conn.execute(
            d.update().where(*_held(delivery_ids, owner)).values(leased_until=utcnow() + lease)
        )
    return int(result.rowcount or 0)


async def note_error(event_log: EventLog, delivery_id: uuid.UUID, error: str) -> None:
    """Keep the latest error on the row (for operators), without ending the delivery."""
    async with event_log.writer.begin() as conn:
        await conn.execute(
            d.update().where(d.c.delivery_id == delivery_id).values(last_error=error[:2000])
        )


async def release(event_log: EventLog, delivery_ids: Sequence[uuid.UUID], owner: str) -> None:
    """Give leases back (shutting down): another dispatcher may send them at once."""
    if not delivery_ids:
        return
    async with event_log.writer.begin() as conn:
        await conn.execute(
            d.update()
            .where(
                d.c.delivery_id.in_(list(delivery_ids)),
                d.c.status == PENDING,
                d.c.lease_owner == owner,
            )
            .values(leased_until=None, lease_owner=None)
        )


async def postpone(
    event_log: EventLog, delivery_id: uuid.UUID, until: datetime, *, error: str | None = None
) -> None:
    """Leave a delivery pending until ``until`` (its subscription is paused), noting
    ``error`` if given."""
    values: dict[str, Any] = {"next_attempt_at": until, "leased_until": None, "lease_owner": None}
    if error is not None:
        values["last_error"] = error[:2000]
    async with event_log.writer.begin() as conn:
        await conn.execute(
            d.update().where(d.c.delivery_id == delivery_id, d.c.status == PENDING).values(**values)
        )


def _body_sha256(delivery: Delivery) -> str:
    return hashlib.sha256(delivery.body.encode()).hexdigest()


def _subject(delivery: Delivery) -> str:
    # A webhook has no subject: the record names the event it carried instead.
    return delivery.subject if delivery.channel != "webhook" else delivery.event_type


async def _finish(
    event_log: EventLog,
    delivery: Delivery,
    values: dict[str, Any],
    event: NewEvent,
) -> bool:
    """Set the row's outcome and append the case's event in one transaction."""
    async with event_log.transaction() as tx:
        return await _finish_in(UnitOfWork(tx, "notify-delivery"), delivery, values, event)


async def _finish_in(
    uow: UnitOfWork, delivery: Delivery, values: dict[str, Any], event: NewEvent
) -> bool:
    """:func:`_finish` within ``uow``'s transaction; False if the delivery was finished
    elsewhere (another replica, an operator): then nothing is written."""
    result = await uow.conn.execute(
        d.update()
        .where(d.c.delivery_id == delivery.delivery_id, d.c.status == PENDING)
        .values(leased_until=None, lease_owner=None, **values)
    )
    if result.rowcount != 1:
        return False
    history = await uow.read_case(delivery.case_id)
    head = history[-1].version if history else 0
    await uow.append(delivery.case_id, head, [event], case_kind=delivery.case_kind)
    return True


@dataclasses.dataclass(frozen=True)
class Sent:
    """A delivery its channel accepted, to be recorded (:func:`mark_sent_many`)."""

    delivery: Delivery
    attempts: int
    provider_message_id: str | None


async def mark_sent(
    event_log: EventLog,
    delivery: Delivery,
    *,
    attempts: int,
    provider_message_id: str | None,
) -> bool:
    """The receiver took it: the row is sent and the case records ``NotificationSent``."""
    (done,) = await mark_sent_many(event_log, [Sent(delivery, attempts, provider_message_id)])
    return done


async def mark_sent_many(event_log: EventLog, sent: Sequence[Sent]) -> list[bool]:
    """:func:`mark_sent` for each of ``sent`` in one transaction, in order; each True
    unless finished elsewhere. One read of the cases, one UPDATE of the rows and one INSERT
    of the ``NotificationSent`` events, whatever the batch's size. All or nothing: should
    one fail (a staff action appended to its case meanwhile, the database away), none is
    recorded and the error is raised."""
    if not sent:
        return []
    # In the order of their cases: two batches (two replicas) that touch the same cases
    # insert into them in the same order, and so never wait on each other in a circle.
    order = sorted(range(len(sent)), key=lambda i: (str(sent[i].delivery.case_id), i))
    first: dict[uuid.UUID, int] = {}  # a delivery twice in a batch is recorded once
    for i in order:
        first.setdefault(sent[i].delivery.delivery_id, i)
    done = [False] * len(sent)
    async with event_log.transaction() as tx:
        uow = UnitOfWork(tx, "notify-delivery")
        await uow.read_ahead(list(dict.fromkeys(sent[i].delivery.case_id for i in order)))
        result = await uow.conn.execute(
            d.update()
            .where(d.c.delivery_id.in_(list(first)), d.c.status == PENDING)
            .values(
                status=SENT,
                sent_at=utcnow(),
                leased_until=None,
                lease_owner=None,
                attempts=sa.case(
                    {k: sent[i].attempts for k, i in first.items()}, value=d.c.delivery_id
                ),
                provider_message_id=sa.case(
                    {k: _sent_values(sent[i])["provider_message_id"] for k, i in first.items()},
                    value=d.c.delivery_id,
                ),
            )
            .returning(d.c.delivery_id)
        )
        updated = set(result.scalars())
        events: dict[uuid.UUID, tuple[list[NewEvent], str]] = {}
        for delivery_id, i in first.items():
            if delivery_id in updated:
                delivery = sent[i].delivery
                events.setdefault(delivery.case_id, ([], delivery.case_kind))[0].append(
                    _sent_event(sent[i])
                )
                done[i] = True
        for case_id in events:
            await uow.read_case(case_id)  # read ahead: no query; sets the head to append at
        await uow.append_at_heads([(c, new, kind) for c, (new, kind) in events.items()])
    return done


def _sent_event(sent: Sent) -> NewEvent:
    delivery = sent.delivery
    payload = NotificationSent(
        channel=delivery.channel,
        recipient=delivery.masked,
        language=delivery.language,
        subject=_subject(delivery),
        body_sha256=_body_sha256(delivery),
        about_event_type=delivery.event_type,
        audience=delivery.audience,
        delivery_id=str(delivery.delivery_id),
        about_event_id=str(delivery.event_id),
        attempts=sent.attempts,
        provider_message_id=sent.provider_message_id,
    )
    return NewEvent(
        event_id=uuid.uuid5(_EVENTS, f"sent:{delivery.delivery_id}"),
        event_type="NotificationSent",
        correlation_id=delivery.correlation_id,
        causation_id=str(delivery.event_id),
        payload=payload.model_dump(mode="json"),
    )


def _sent_values(sent: Sent) -> dict[str, Any]:
    return {
        "status": SENT,
        "sent_at": utcnow(),
        "attempts": sent.attempts,
        "provider_message_id": (sent.provider_message_id or "")[:200] or None,
    }


async def mark_failed(
    event_log: EventLog, delivery: Delivery, *, attempts: int, reason: str
) -> bool:
    """Given up: the row becomes a dead letter and the case records ``NotificationFailed``."""
    payload = NotificationFailed(
        channel=delivery.channel,
        recipient=delivery.masked,
        language=delivery.language,
        subject=_subject(delivery),
        about_event_type=delivery.event_type,
        audience=delivery.audience,
        delivery_id=str(delivery.delivery_id),
        about_event_id=str(delivery.event_id),
        attempts=attempts,
        reason=reason[:1000],
    )
    event = NewEvent(
        event_id=uuid.uuid5(_EVENTS, f"failed:{delivery.delivery_id}:{delivery.rounds}"),
        event_type="NotificationFailed",
        correlation_id=delivery.correlation_id,
        causation_id=str(delivery.event_id),
        payload=payload.model_dump(mode="json"),
    )
    values = {
        "status": FAILED,
        "failed_at": utcnow(),
        "attempts": attempts,
        "last_error": reason[:2000],
    }
    return await _finish(event_log, delivery, values, event)


async def cancel(conn: AsyncConnection, subscription_id: uuid.UUID) -> int:
    """Cancel the pending deliveries of a deleted subscription."""
    result = await conn.execute(
        d.update()
        .where(d.c.subscription_id == subscription_id, d.c.status == PENDING)
        .values(status=CANCELLED, leased_until=None, lease_owner=None)
    )
    return int(result.rowcount or 0)


async def due_now(conn: AsyncConnection, subscription_id: uuid.UUID) -> int:
    """Make a resumed subscription's held deliveries due now (how many)."""
    result = await conn.execute(
        d.update()
        .where(d.c.subscription_id == subscription_id, d.c.status == PENDING)
        .values(next_attempt_at=utcnow())
    )
    return int(result.rowcount or 0)


async def get(event_log: EventLog, delivery_id: uuid.UUID) -> Delivery | None:
    """One delivery, or None."""
    async with event_log.engine.connect() as conn:
        row = (await conn.execute(sa.select(d).where(d.c.delivery_id == delivery_id))).first()
    return _delivery(row) if row else None


async def find(
    event_log: EventLog,
    *,
    status: str | None = None,
    station: str | None = None,
    case_id: uuid.UUID | None = None,
    channel: str | None = None,
    limit: int = 100,
) -> list[Delivery]:
    """Deliveries, newest first, filtered."""
    query = sa.select(d)
    if status:
        query = query.where(d.c.status == status)
    if station:
        query = query.where(d.c.station == station)
    if case_id:
        query = query.where(d.c.case_id == case_id)
    if channel:
        query = query.where(d.c.channel == channel)
    query = query.order_by(d.c.created_at.desc(), d.c.delivery_id).limit(limit)
    async with event_log.engine.connect() as conn:
        return [_delivery(r) for r in await conn.execute(query)]


async def redrive(
    event_log: EventLog, delivery_ids: Sequence[uuid.UUID], *, station: str | None = None
) -> list[uuid.UUID]:
    """Send dead letters again, from a fresh set of attempts; the ids taken up."""
    if not delivery_ids:
        return []
    query = (
        d.update()
        .where(d.c.delivery_id.in_(list(delivery_ids)), d.c.status == FAILED)
        .values(
            status=PENDING,
            attempts=0,
            rounds=d.c.rounds + 1,
            next_attempt_at=utcnow(),
            failed_at=None,
            leased_until=None,
            lease_owner=None,
        )
        .returning(d.c.delivery_id)
    )
    if station is not None:
        query = query.where(d.c.station == station)
    async with event_log.writer.begin() as conn:
        return list((await conn.execute(query)).scalars())


async def counts(event_log: EventLog) -> dict[str, int]:
    """How many deliveries are in each status."""
    async with event_log.engine.connect() as conn:
        rows = await conn.execute(sa.select(d.c.status, sa.func.count()).group_by(d.c.status))
        return {str(status): int(n) for status, n in rows}
