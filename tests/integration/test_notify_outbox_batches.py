"""The outbox's batched writes, on both backends: attempts begun for several deliveries
in one statement, several accepted sends recorded in one transaction and several
subscriptions read in one query (the dispatcher's group commit), with the same outcome
as one by one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from bench.notify import CLERK, STATION, case_payload
from services.notify import outbox, subscriptions
from services.notify.channels.webhook import generate_secret
from services.notify.model import ChannelName, Recipient
from shared.adapters.eventlog import EventLog
from shared.domain.events import NewEvent
from tests.notify_helpers import plan_delivery

OWNER = "notify-a"
LEASE = timedelta(seconds=30)


async def _planned(log: EventLog) -> tuple[dict[uuid.UUID, uuid.UUID], list[uuid.UUID]]:
    """Two cases; the first gets an email and an SMS, the second an email. The deliveries'
    cases, and the deliveries in that order."""
    cases: dict[uuid.UUID, uuid.UUID] = {}
    ids = []
    per_case: tuple[tuple[ChannelName, ...], ...] = (("email", "sms"), ("email",))
    for number, channels in enumerate(per_case):
        case_id = uuid.uuid4()
        event = NewEvent(
            event_type="CaseReceived",
            schema_version=2,
            actor=CLERK,
            payload=case_payload(number, "batch"),
        )
        (stored,) = (await log.append(case_id, 0, [event], case_kind="application")).events
        async with log.writer.begin() as conn:
            for channel in channels:
                recipient = Recipient("applicant", f"{channel}-{number}", "***")
                planned = await plan_delivery(
                    conn, stored, channel, recipient, subject="受理通知", body="您的申请已受理。"
                )
                ids.append(planned)
                cases[planned] = case_id
    return cases, ids


async def test_attempts_begun_together_count_for_the_lease_holder_only(log: EventLog) -> None:
    _, ids = await _planned(log)
    claimed = [
        d.delivery_id
        for channel in ("email", "sms")
        for d in await outbox.claim(log, channel, 10, OWNER, LEASE)
    ]
    assert sorted(claimed) == sorted(ids)
    stranger = uuid.uuid4()
    assert await outbox.begin_attempts(log, [*ids, stranger], OWNER, LEASE) == [1, 1, 1, 0]
    assert await outbox.begin_attempts(log, ids, OWNER, LEASE) == [2, 2, 2]
    assert await outbox.begin_attempts(log, ids, "notify-b", LEASE) == [0, 0, 0]
    assert await outbox.begin_attempts(log, [], OWNER, LEASE) == []


async def test_sends_recorded_together_each_get_their_record_once(log: EventLog) -> None:
    cases, ids = await _planned(log)
    for channel in ("email", "sms"):
        await outbox.claim(log, channel, 10, OWNER, LEASE)
    rows = [await outbox.get(log, i) for i in ids]
    sent = [outbox.Sent(row, 1, f"<{row.delivery_id}>") for row in rows if row is not None]
    assert len(sent) == 3

    assert await outbox.mark_sent_many(log, sent) == [True, True, True]
    assert await outbox.mark_sent_many(log, sent) == [False, False, False]  # once only

    for row in sent:
        stored = await outbox.get(log, row.delivery.delivery_id)
        assert stored is not None and stored.status == outbox.SENT
    for case_id in set(cases.values()):
        history = await log.read_case(case_id)
        assert [e.version for e in history] == list(range(1, len(history) + 1))
        records = [e for e in history if e.event_type == "NotificationSent"]
        expected = sorted(str(i) for i, c in cases.items() if c == case_id)
        assert sorted(e.payload["delivery_id"] for e in records) == expected
        assert all(e.payload["attempts"] == 1 for e in records)


async def test_a_batch_records_each_send_once_with_its_own_figures(log: EventLog) -> None:
    cases, ids = await _planned(log)
    for channel in ("email", "sms"):
        await outbox.claim(log, channel, 10, OWNER, LEASE)
    rows = [await outbox.get(log, i) for i in ids]
    assert all(row is not None for row in rows)
    first, second, third = (r for r in rows if r is not None)
    # the third was finished elsewhere (another replica recorded it)
    assert await outbox.mark_sent_many(log, [outbox.Sent(third, 2, "<elsewhere>")]) == [True]
    batch = [
        outbox.Sent(second, 3, "<second>"),
        outbox.Sent(first, 1, None),
        outbox.Sent(third, 1, "<third>"),
        outbox.Sent(first, 1, None),  # the same send twice in one batch
    ]
    assert await outbox.mark_sent_many(log, batch) == [True, True, False, False]
    for row, attempts, provider in ((first, 1, None), (second, 3, "<second>")):
        stored = await outbox.get(log, row.delivery_id)
        assert stored is not None and stored.status == outbox.SENT
        assert (stored.attempts, stored.provider_message_id) == (attempts, provider)
    for case_id in set(cases.values()):
        history = await log.read_case(case_id)
        assert [e.version for e in history] == list(range(1, len(history) + 1))
        records = [e for e in history if e.event_type == "NotificationSent"]
        expected = sorted(str(i) for i, c in cases.items() if c == case_id)
        assert sorted(e.payload["delivery_id"] for e in records) == expected, "once each"
        for record in records:
            want = {first.delivery_id: 1, second.delivery_id: 3, third.delivery_id: 2}
            assert record.payload["attempts"] == want[uuid.UUID(record.payload["delivery_id"])]


async def test_subscriptions_read_together_come_back_in_the_order_asked(log: EventLog) -> None:
    made = []
    for number in range(2):
        sub, _ = await subscriptions.create(
            log,
            station=STATION,
            event_types=["*"],
            url=f"https://hooks{number}.example.cn/caseflow",
            secret=generate_secret(),
            created_by="test",
        )
        assert sub is not None
        made.append(sub.subscription_id)
    first, second = made
    asked = [second, uuid.uuid4(), first, second]
    found = await subscriptions.get_many(log, asked)
    assert [s.subscription_id if s else None for s in found] == [second, None, first, second]
    assert await subscriptions.get_many(log, []) == []


async def _many_planned(log: EventLog, count: int) -> set[uuid.UUID]:
    """``count`` pending emails about one case."""
    event = NewEvent(
        event_type="CaseReceived", schema_version=2, actor=CLERK, payload=case_payload(0, "many")
    )
    (stored,) = (await log.append(uuid.uuid4(), 0, [event], case_kind="application")).events
    planned = set()
    async with log.writer.begin() as conn:
        for n in range(count):
            recipient = Recipient("applicant", f"applicant-{n}@example.org", "***")
            planned.add(
                await plan_delivery(
                    conn, stored, "email", recipient, subject="受理通知", body="已受理"
                )
            )
    return planned


async def test_dispatchers_claiming_at_once_never_claim_the_same_delivery(log: EventLog) -> None:
    planned = await _many_planned(log, 60)
    owners = [f"notify-{n}" for n in range(6)]
    claimed: dict[uuid.UUID, str] = {}
    rounds = 0
    while len(claimed) < len(planned):
        rounds += 1
        assert rounds < 20, f"claimed {len(claimed)} of {len(planned)}"
        found = await asyncio.gather(*(outbox.claim(log, "email", 7, o, LEASE) for o in owners))
        for owner, deliveries in zip(owners, found, strict=True):
            assert len(deliveries) <= 7
            for delivery in deliveries:
                assert delivery.delivery_id not in claimed, "claimed twice"
                claimed[delivery.delivery_id] = owner
    assert set(claimed) == planned
    for owner in owners:  # each holds the lease of what it claimed
        mine = [i for i, o in claimed.items() if o == owner]
        assert await outbox.begin_attempts(log, mine, owner, LEASE) == [1] * len(mine)
    # every one held: nothing more to claim until a lease runs out
    assert await outbox.claim(log, "email", 100, "notify-late", LEASE) == []
