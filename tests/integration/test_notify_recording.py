"""At most once to the receiver, as far as the protocol allows: a send the channel accepted
is recorded however long the database is away, and nothing sends it again meanwhile (not
this dispatcher when the lease ran out during the outage, not another replica once the
database is back). Every retry and every restart of a delivery carries the same
idempotency key to the receiver: the email's ``Message-ID``, the SMS's ``SessionContext``
and the webhook's ``webhook-id``.

Real parts: an SMTP server (aiosmtpd), an SMS gateway and a webhook receiver over HTTP
(the sandbox's), and a PostgreSQL server of this test's own, stopped with ``pg_ctl`` right
after the receivers accepted and started again after longer than the claim's lease
(``own_postgres``: over its Unix socket and over TCP).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs

from bench.notify import CLERK, STATION, case_payload
from services.notify import outbox, subscriptions
from services.notify.channels import Channel
from services.notify.channels.email import EmailChannel
from services.notify.channels.sms import SmsChannel
from services.notify.channels.webhook import WebhookChannel, generate_secret
from services.notify.dispatcher import ChannelLimits, Dispatcher, DispatchSettings
from services.notify.egress import EgressPolicy
from services.notify.model import ChannelName, Outgoing, Recipient
from services.notify.planning import webhook_body
from services.notify.sandbox import Mailbox, SmsGateway, WebhookReceiver
from shared.adapters.db import create_engine, migrate
from shared.adapters.eventlog import EventLog
from shared.devtools.waiting import eventually
from shared.domain.events import NewEvent
from tests.conftest import _admin
from tests.notify_helpers import plan_delivery
from tests.own_postgres import OwnPostgres

DEADLINE = 120.0
EMAIL = "wang.xiuying@example.cn"
PHONE = "13812345678"


@dataclass
class Receivers:
    mailbox: Mailbox
    gateway: SmsGateway
    hooks: WebhookReceiver
    secret: str

    def channels(self) -> dict[str, Channel]:
        policy = EgressPolicy(allowed=(self.hooks.allowed_network(),))
        return {
            "email": EmailChannel(self.mailbox.settings()),
            "sms": SmsChannel(self.gateway.settings()),
            "webhook": WebhookChannel(timeout=10, policy=policy),
        }

    def arrivals(self) -> dict[str, int]:
        """Every message that reached each receiver, repeats included."""
        return {
            "email": len(self.mailbox.messages) + self.mailbox.duplicates,
            "sms": len(self.gateway.calls),
            "webhook": len(self.hooks.calls),
        }


@pytest.fixture
async def receivers(tmp_path: Path) -> AsyncIterator[Receivers]:
    secret = generate_secret()
    async with (
        Mailbox() as mailbox,
        SmsGateway() as gateway,
        WebhookReceiver(secret) as hooks,
    ):
        yield Receivers(mailbox, gateway, hooks, secret)


@pytest.fixture
def pg_url(own_postgres: OwnPostgres) -> str:
    server = make_url(own_postgres.server_url)
    url = server.set(database="caseflow").render_as_string(hide_password=False)
    asyncio.run(_admin(own_postgres.server_url, "CREATE DATABASE caseflow"))
    migrate(url)
    return url


@pytest.fixture
async def event_log(pg_url: str) -> AsyncIterator[EventLog]:
    engine = create_engine(pg_url)
    yield EventLog(engine)
    await engine.dispose()


async def case_with_deliveries(
    event_log: EventLog, receivers: Receivers
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A received case and one delivery of its event on each channel."""
    case_id = uuid.uuid4()
    event = NewEvent(
        event_type="CaseReceived", schema_version=2, actor=CLERK, payload=case_payload(1, "rec")
    )
    (stored,) = (await event_log.append(case_id, 0, [event], case_kind="application")).events
    url = receivers.hooks.endpoint()
    sub, _ = await subscriptions.create(
        event_log,
        station=STATION,
        event_types=["*"],
        url=url,
        secret=receivers.secret,
        created_by="test",
    )
    assert sub is not None
    plans: list[tuple[ChannelName, Recipient, uuid.UUID | None]] = [
        ("email", Recipient("applicant", EMAIL, "w***@example.cn"), None),
        ("sms", Recipient("applicant", PHONE, "138****5678"), None),
        (
            "webhook",
            Recipient(f"webhook:{sub.subscription_id}", url, "127.0.0.1"),
            sub.subscription_id,
        ),
    ]
    ids = []
    async with event_log.writer.begin() as conn:
        for channel, recipient, subscription_id in plans:
            webhook = channel == "webhook"
            planned = await plan_delivery(
                conn,
                stored,
                channel,
                recipient,
                subject=stored.event_type if webhook else "受理通知",
                body=webhook_body(stored).decode() if webhook else "您的申请已受理。",
                subscription_id=subscription_id,
            )
            ids.append(planned)
    return case_id, ids


class StopsTheDatabaseOnAcceptance:
    """A real channel; once a receiver accepted a message, the database is stopped before
    ``send`` returns (the window between the receiver's acceptance and the record)."""

    def __init__(
        self, channel: Channel, stop: Any, stopped: asyncio.Event, lock: asyncio.Lock
    ) -> None:
        self.name = channel.name
        self.channel = channel
        self.stop = stop
        self.stopped = stopped
        self.lock = lock
        """Shared by every channel: two sends accepted at once stop the database once (a
        lock per channel let two channels run ``pg_ctl stop`` together; the second failed,
        "is server running?", and its accepted send was counted as failed and repeated)."""

    async def send(self, message: Outgoing) -> str | None:
        answer = await self.channel.send(message)
        async with self.lock:
            if not self.stopped.is_set():
                await self.stop()
        return answer

    async def aclose(self) -> None:
        await self.channel.aclose()


OUTAGE_SETTINGS = DispatchSettings(
    max_attempts=3,
    wait_initial_seconds=0.05,
    wait_max_seconds=0.2,
    wait_jitter_seconds=0.0,
    poll_seconds=0.05,
    lease_seconds=5.0,
    # The send includes stopping PostgreSQL (pg_ctl, slow on a loaded machine): a send
    # timed out after the receiver accepted it would be tried again, under the same key.
    email=ChannelLimits(concurrency=2, timeout_seconds=60.0),
    sms=ChannelLimits(concurrency=2, timeout_seconds=60.0),
    webhook=ChannelLimits(concurrency=2, timeout_seconds=60.0),
)


async def test_a_send_accepted_while_the_database_goes_away_arrives_once_and_is_recorded_once(
    own_postgres: OwnPostgres, event_log: EventLog, receivers: Receivers
) -> None:
    case_id, ids = await case_with_deliveries(event_log, receivers)
    stopped = asyncio.Event()

    async def stop_database() -> None:
        await asyncio.to_thread(own_postgres.stop)
        stopped.set()

    lease = max(OUTAGE_SETTINGS.lease(c).total_seconds() for c in ("email", "sms", "webhook"))
    one_stop = asyncio.Lock()
    shared = {
        name: StopsTheDatabaseOnAcceptance(channel, stop_database, stopped, one_stop)
        for name, channel in receivers.channels().items()
    }
    # Two replicas on the same database: either may claim, neither may send twice.
    replicas = [Dispatcher(event_log, shared, OUTAGE_SETTINGS) for _ in range(2)]
    stop = asyncio.Event()
    with capture_logs() as logs:
        running = [asyncio.create_task(r.run(stop)) for r in replicas]
        try:
            async with asyncio.timeout(DEADLINE):
                await stopped.wait()
            away_since = time.monotonic()
            # Longer than the claim's lease: it runs out while the database is away.
            while time.monotonic() - away_since < lease + 3:
                await asyncio.sleep(0.2)
            await asyncio.to_thread(own_postgres.start)

            async def all_sent() -> bool:
                rows = [await outbox.get(event_log, d) for d in ids]
                return all(r is not None and r.status == outbox.SENT for r in rows)

            await eventually(
                all_sent, what="every delivery recorded as sent", timeout=DEADLINE, interval=0.1
            )

            async def idle() -> bool:
                return all(r.busy == 0 for r in replicas)

            await eventually(idle, what="both dispatchers idle", timeout=DEADLINE)
        finally:
            stop.set()
            await asyncio.gather(*running, return_exceptions=True)
            for channel in shared.values():
                await channel.aclose()

    assert receivers.arrivals() == {"email": 1, "sms": 1, "webhook": 1}
    history = await event_log.read_case(case_id)
    sent = [e for e in history if e.event_type == "NotificationSent"]
    assert sorted(e.payload["delivery_id"] for e in sent) == sorted(str(d) for d in ids)

    failed = [e for e in logs if e["event"] == "recording a sent notice failed; trying again"]
    assert failed, "the record never failed: the database was not away after the send"
    assert all(e.get("unavailable") == "database" for e in failed), failed[:3]
    assert not [e for e in failed if "exc_info" in e]
    texts = repr(logs)
    assert PHONE not in texts and EMAIL not in texts


async def test_a_retried_and_restarted_delivery_carries_the_same_key(
    sqlite_url: str, receivers: Receivers
) -> None:
    """Each receiver takes the first attempt but its answer is lost (the email is refused
    after DATA the first time its Message-ID comes; the SMS gateway and the webhook
    receiver answer after the sender gave up); the sender stops and another dispatcher
    (a restart) tries again."""
    engine = create_engine(sqlite_url)
    event_log = EventLog(engine)
    settings = DispatchSettings(
        max_attempts=5,
        wait_initial_seconds=60.0,  # the first dispatcher waits: it is stopped meanwhile
        wait_max_seconds=60.0,
        wait_jitter_seconds=0.0,
        poll_seconds=0.05,
        email=ChannelLimits(timeout_seconds=5.0),
        sms=ChannelLimits(timeout_seconds=0.5),
        webhook=ChannelLimits(timeout_seconds=0.5),
    )
    channels = receivers.channels()
    try:
        case_id, ids = await case_with_deliveries(event_log, receivers)
        receivers.mailbox.fail_first_attempt_of(1.0)  # every Message-ID: a new one never passes
        receivers.gateway.hang_next(1, seconds=1.5)
        receivers.hooks.hang_next(1, seconds=1.5)

        first = Dispatcher(event_log, channels, settings)
        assert await first.dispatch_due() == 3

        async def first_attempts_in() -> bool:
            rows = [await outbox.get(event_log, d) for d in ids]
            return (
                receivers.mailbox.first_attempt_failures == 1
                and len(receivers.gateway.calls) == 1
                and len(receivers.hooks.calls) == 1
                and all(r is not None and r.attempts == 1 for r in rows)
            )

        await eventually(
            first_attempts_in,
            what="the first attempts, their answers lost",
            timeout=DEADLINE,
            interval=0.1,
        )
        await first.stop_sending()  # a restart: the leases are given back

        second = Dispatcher(
            event_log, channels, settings.model_copy(update={"wait_initial_seconds": 0.05})
        )
        async with asyncio.timeout(DEADLINE):
            await second.drain()

        email_id, sms_id, hook_id = ids
        assert [m["Message-ID"] for m in receivers.mailbox.messages] == [f"<{email_id}@caseflow>"]
        assert receivers.mailbox.attempts == 2
        assert [c.session_context for c in receivers.gateway.calls] == [str(sms_id)] * 2
        assert [c.duplicate for c in receivers.gateway.calls] == [False, True]
        assert len(receivers.gateway.received) == 1
        assert [c.webhook_id for c in receivers.hooks.calls] == [str(hook_id)] * 2
        assert receivers.hooks.duplicates == 1
        for d in ids:
            row = await outbox.get(event_log, d)
            assert row is not None and row.status == outbox.SENT and row.attempts == 2
        sent = [e for e in await event_log.read_case(case_id) if e.event_type == "NotificationSent"]
        assert len(sent) == 3
    finally:
        for channel in channels.values():
            await channel.aclose()
        await engine.dispose()


class Counted:
    """A real channel that notes each send in ``sends`` (by channel name)."""

    def __init__(self, channel: Channel, sends: list[str]) -> None:
        self.name = channel.name
        self.channel = channel
        self.sends = sends

    async def send(self, message: Outgoing) -> str | None:
        self.sends.append(self.name)
        return await self.channel.send(message)

    async def aclose(self) -> None:
        pass  # the channels are closed by their owner


def counted(channels: dict[str, Channel], sends: list[str]) -> dict[str, Channel]:
    return {name: Counted(channel, sends) for name, channel in channels.items()}


async def test_a_live_dispatchers_claims_hold_however_long_it_waits_between_attempts(
    sqlite_url: str, receivers: Receivers
) -> None:
    """Claims are short (``lease_seconds``) and renewed while their dispatcher lives: one
    waiting longer than a lease between attempts keeps its deliveries (another replica
    sends none of them)."""
    engine = create_engine(sqlite_url)
    event_log = EventLog(engine)
    settings = DispatchSettings(
        max_attempts=3,
        wait_initial_seconds=8.0,  # longer than a lease: only renewals keep the claims
        wait_max_seconds=8.0,
        wait_jitter_seconds=0.0,
        poll_seconds=0.05,
        lease_seconds=3.0,
        email=ChannelLimits(timeout_seconds=0.5),
        sms=ChannelLimits(timeout_seconds=0.5),
        webhook=ChannelLimits(timeout_seconds=0.5),
    )
    lease = max(settings.lease(c).total_seconds() for c in ("email", "sms", "webhook"))
    assert lease < 8.0
    channels = receivers.channels()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        _, ids = await case_with_deliveries(event_log, receivers)
        receivers.mailbox.fail_first_attempt_of(1.0)
        receivers.gateway.hang_next(1, seconds=1.5)
        receivers.hooks.hang_next(1, seconds=1.5)
        senders: dict[str, list[str]] = {"first": [], "other": []}
        first = Dispatcher(event_log, counted(channels, senders["first"]), settings)
        tasks.append(asyncio.create_task(first.run(stop)))

        async def first_attempts_in() -> bool:
            rows = [await outbox.get(event_log, d) for d in ids]
            return all(r is not None and r.attempts == 1 for r in rows)

        await eventually(
            first_attempts_in, what="the first attempts, failed", timeout=DEADLINE, interval=0.1
        )
        other = Dispatcher(event_log, counted(channels, senders["other"]), settings)
        tasks.append(asyncio.create_task(other.run(stop)))

        async def all_sent() -> bool:
            rows = [await outbox.get(event_log, d) for d in ids]
            return all(r is not None and r.status == outbox.SENT for r in rows)

        await eventually(
            all_sent, what="the second attempts, after the wait", timeout=DEADLINE, interval=0.1
        )
        assert receivers.mailbox.attempts == 2 and len(receivers.mailbox.messages) == 1
        assert len(receivers.gateway.calls) == 2 and len(receivers.hooks.calls) == 2
        for d in ids:
            row = await outbox.get(event_log, d)
            assert row is not None and row.attempts == 2
        # Never taken over while it waited: the first sent both attempts of each.
        assert sorted(senders["first"]) == sorted(["email", "sms", "webhook"] * 2)
        assert senders["other"] == []

    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels.values():
            await channel.aclose()
        await engine.dispose()


async def test_a_dispatcher_stopping_mid_send_lets_the_send_finish_and_records_it(
    sqlite_url: str, receivers: Receivers
) -> None:
    """A clean stop (a rolling restart) while receivers are slow to answer: the sends
    under way finish and are recorded rather than cancelled and given back, so the
    dispatcher that takes over sends nothing again."""
    engine = create_engine(sqlite_url)
    event_log = EventLog(engine)
    settings = DispatchSettings(
        poll_seconds=0.05,
        email=ChannelLimits(timeout_seconds=10.0),
        sms=ChannelLimits(timeout_seconds=10.0),
        webhook=ChannelLimits(timeout_seconds=10.0),
    )
    channels = receivers.channels()
    try:
        _, ids = await case_with_deliveries(event_log, receivers)
        receivers.gateway.hang_next(1, seconds=2.0)
        receivers.hooks.hang_next(1, seconds=2.0)
        first = Dispatcher(event_log, channels, settings)
        assert await first.dispatch_due() == 3

        async def in_the_receivers_hands() -> bool:
            # The receivers took the requests and hold them (their injected hang is used).
            return not receivers.gateway._faults and not receivers.hooks._faults

        await eventually(
            in_the_receivers_hands,
            what="the SMS and the webhook under way",
            timeout=DEADLINE,
            interval=0.1,
        )
        await first.stop_sending()
        for d in ids:
            row = await outbox.get(event_log, d)
            assert row is not None and row.status == outbox.SENT
        second = Dispatcher(event_log, channels, settings)
        async with asyncio.timeout(DEADLINE):
            await second.drain()
        assert receivers.arrivals() == {"email": 1, "sms": 1, "webhook": 1}
    finally:
        for channel in channels.values():
            await channel.aclose()
        await engine.dispose()


async def test_a_crashed_dispatchers_claims_are_sent_by_another_after_a_lease(
    sqlite_url: str, receivers: Receivers
) -> None:
    """A dispatcher that crashed after claiming (no goodbye: its claims just stop being
    renewed): another sends its deliveries once a lease ran out, not after the longest
    backoff between attempts (60 s by default)."""
    engine = create_engine(sqlite_url)
    event_log = EventLog(engine)
    settings = DispatchSettings(poll_seconds=0.05, lease_seconds=3.0)
    lease = settings.lease_seconds
    channels = receivers.channels()
    stop = asyncio.Event()
    senders: list[str] = []
    try:
        crashed_case, crashed_ids = await case_with_deliveries(event_log, receivers)
        claimed = [
            d
            for c in ("email", "sms", "webhook")
            for d in await outbox.claim(event_log, c, 5, "crashed", settings.lease(c))
        ]
        assert {d.delivery_id for d in claimed} == set(crashed_ids)
        crashed_at = time.monotonic()
        live = Dispatcher(event_log, counted(channels, senders), settings)
        task = asyncio.create_task(live.run(stop))

        async def taken_over() -> bool:
            rows = [await outbox.get(event_log, d) for d in crashed_ids]
            return all(r is not None and r.status == outbox.SENT for r in rows)

        await eventually(
            taken_over,
            what="the crashed dispatcher's deliveries sent",
            timeout=DEADLINE,
            interval=0.1,
        )
        took = time.monotonic() - crashed_at
        print(f"crashed dispatcher's deliveries sent after {took:.1f} s (lease {lease:.1f} s)")
        assert took >= lease - 0.5  # not before its lease ran out
        assert sorted(senders) == ["email", "sms", "webhook"]
        sent = [
            e for e in await event_log.read_case(crashed_case) if e.event_type == "NotificationSent"
        ]
        assert len(sent) == 3
        stop.set()
        await task
    finally:
        stop.set()
        for channel in channels.values():
            await channel.aclose()
        await engine.dispose()
