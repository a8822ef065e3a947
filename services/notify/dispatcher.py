"""Sends the outbox's due deliveries over their channels, each channel on its own.

Every channel has its own concurrency limit and per-attempt timeout, and the dispatcher
claims for a channel only as many deliveries as it has free slots: a slow or failing
SMS gateway fills its own slots and nobody else's, and the consumer that plans
deliveries never waits for a channel at all.

Each delivery is tried with exponential backoff and jitter (stamina) up to
``max_attempts`` in all, counting attempts made before a restart. A permanent refusal
(a wrong address) or the last failed attempt ends it as a dead letter with a
``NotificationFailed`` event; success ends it with ``NotificationSent``. A webhook
receiver's 410 Gone pauses the subscription instead (with the reason for its head) and
holds its deliveries; before every attempt a webhook's subscription is looked up again,
so a pause holds deliveries already being retried too.

At most once to the receiver, as far as the protocol allows. Once a channel accepted a
message, recording that (``outbox.mark_sent`` and the case's ``NotificationSent``) is
retried until it sticks, through a database outage of any length (backoff capped at
``record_wait_max_seconds``, one log line per failed try naming the outage). Meanwhile
nothing sends it again:

- this dispatcher keeps the fact "accepted by the channel" in memory: a delivery it is
  still sending or recording is never started a second time, even when its lease ran
  out during the outage and a claim hands it back;
- each failed try renews the lease when the database answers, so another replica can't
  claim it while recording fails for another reason;
- a lease that ran out while the database was away is not taken over by another replica
  for ``takeover_grace_seconds`` after that replica reaches the database again (its
  holder is recording meanwhile: it retries every few seconds at most).

The attempts begun and the sends accepted at about the same moment are written in one
transaction, and the subscriptions they look up read in one query
(:mod:`services.notify.grouped`); a batch that fails is done one delivery at a time, as
above.

The one window left is a crash (or a stop during an outage) between the receiver's
acceptance and the record: the lease then runs out and the delivery is sent again, with
the same idempotency key (``Message-ID``, SMS ``SessionContext``, ``webhook-id``: the
delivery id), so a receiver that de-duplicates by it shows it once. Tencent's SMS API
does not de-duplicate: that SMS arrives twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

import stamina
import structlog
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from services.notify import outbox, subscriptions
from services.notify.channels import Channel
from services.notify.grouped import Grouped
from services.notify.model import DeliveryError, PermanentDeliveryError, ReceiverGone
from shared.adapters.eventlog import ConcurrencyError, EventLog
from shared.adapters.outages import log_failed_round, unavailable_dependency
from shared.adapters.tracing import continued
from shared.domain.events import utcnow

log = structlog.get_logger("caseflow.notify.dispatcher")

SENT = Counter("caseflow_notify_sent_total", "Deliveries sent", ["channel"])
FAILED = Counter("caseflow_notify_failed_total", "Deliveries given up (dead letters)", ["channel"])
ATTEMPT_ERRORS = Counter(
    "caseflow_notify_attempt_errors_total", "Failed delivery attempts", ["channel"]
)
IN_FLIGHT = Gauge("caseflow_notify_in_flight", "Deliveries being sent", ["channel"])

_DoneCallback = Callable[[asyncio.Task[None]], None]
_Finish = Callable[[], Awaitable[bool]]


class ChannelLimits(BaseModel):
    """How hard a channel may be pushed."""

    concurrency: int = Field(default=8, ge=1, le=1000)
    timeout_seconds: float = Field(default=10.0, gt=0, description="per attempt")


class DispatchSettings(BaseModel):
    """Retries and pacing of deliveries."""

    max_attempts: int = Field(default=5, ge=1, le=50)
    wait_initial_seconds: float = Field(default=1.0, ge=0)
    wait_max_seconds: float = Field(default=60.0, ge=0)
    wait_jitter_seconds: float = Field(default=1.0, ge=0)
    poll_seconds: float = Field(default=0.5, gt=0)
    paused_retry_seconds: float = Field(
        default=60.0, gt=0, description="look again at a paused subscription's deliveries"
    )
    record_wait_max_seconds: float = Field(
        default=3.0,
        gt=0,
        le=30,
        description="longest pause between tries to record a send the channel accepted",
    )
    takeover_grace_seconds: float = Field(
        default=15.0,
        ge=0,
        description="after the database was away, how long a lease that ran out meanwhile "
        "is left to its holder (recording its send) before this dispatcher takes it over",
    )
    lease_seconds: float = Field(
        default=15.0,
        ge=1,
        description="how long a claim holds unless renewed (renewed every third of it): "
        "how soon another dispatcher sends what a crashed one had claimed",
    )
    stop_record_seconds: float = Field(
        default=5.0,
        ge=0,
        description="on stopping, how long deliveries being recorded may still finish",
    )
    email: ChannelLimits = ChannelLimits(concurrency=4)
    sms: ChannelLimits = ChannelLimits(concurrency=8)
    webhook: ChannelLimits = ChannelLimits(concurrency=16, timeout_seconds=5.0)

    def limits(self, channel: str) -> ChannelLimits:
        """The limits of ``channel``."""
        limits: ChannelLimits = getattr(self, channel)
        return limits

    def lease(self, channel: str) -> timedelta:
        """How long a claim holds unless renewed (``lease_seconds``, any channel). The
        dispatcher renews its claims every third of it — during a send and while a
        delivery waits between attempts — so a crashed sender's deliveries are taken
        over within a lease."""
        return timedelta(seconds=self.lease_seconds)


ROUND_GAP = 0.005
"""Seconds between the starts of two dispatch rounds, at least."""


def _retryable(err: Exception) -> bool:
    return isinstance(err, DeliveryError) and not isinstance(err, PermanentDeliveryError)


class Dispatcher:
    """Claims due deliveries per channel and sends them, each in its own task."""

    def __init__(
        self,
        event_log: EventLog,
        channels: Mapping[str, Channel],
        settings: DispatchSettings | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        self.log = event_log
        self.channels = dict(channels)
        self.settings = settings or DispatchSettings()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.wakeup = asyncio.Event()
        self._in_flight: dict[str, dict[uuid.UUID, asyncio.Task[None]]] = {
            name: {} for name in ("email", "sms", "webhook")
        }
        self._recording: set[uuid.UUID] = set()
        """Accepted by their channel, not yet recorded: never sent again from here."""
        self._sending: set[uuid.UUID] = set()
        """In a channel's hands right now: the receiver may be accepting them."""
        # Group commit: the attempts begun, sends accepted and subscriptions looked up at
        # about the same moment go to the database as one batch each (one wait for the
        # disk, one connection, instead of one each).
        self._records = Grouped(
            functools.partial(outbox.mark_sent_many, self.log), name="notify-records"
        )
        self._subscriptions = Grouped(
            functools.partial(subscriptions.get_many, self.log), name="notify-subscriptions"
        )
        self._begins = {
            channel: Grouped(
                functools.partial(
                    outbox.begin_attempts,
                    self.log,
                    owner=self.owner,
                    lease=self.settings.lease(channel),
                ),
                name=f"notify-begin-{channel}",
            )
            for channel in self._in_flight
        }
        self._reached_at: datetime | None = None
        """When a dispatch round last reached the database (its start)."""
        self._away = False
        self._spare_leased_since: datetime | None = None
        self._spare_until = 0.0

    def wake(self) -> None:
        """Look for due deliveries now rather than at the next poll."""
        self.wakeup.set()

    @property
    def busy(self) -> int:
        """Deliveries being sent right now."""
        return sum(len(tasks) for tasks in self._in_flight.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set, then give back what was not finished."""
        keeper = asyncio.create_task(self._keep_leases(stop), name="notify-leases")
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                started = utcnow()
                began = loop.time()
                try:
                    await self.dispatch_due()
                except Exception as err:  # the database is away: try again shortly
                    away = unavailable_dependency(err) is not None
                    if not (away and self._away):  # one line as an outage begins, not a poll
                        log_failed_round(log, "dispatch round failed")
                    if away:
                        self._database_away()
                else:
                    if self._away:
                        log.info("database back; dispatching again")
                    self._database_reached(started)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), self.settings.poll_seconds)
                if (rest := began + ROUND_GAP - loop.time()) > 0:
                    # Under load every send that ends and every notice planned wakes the
                    # loop: what those few ms free and plan is claimed in one round.
                    await asyncio.sleep(rest)
                self.wakeup.clear()
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self.stop_sending()

    async def _keep_leases(self, stop: asyncio.Event) -> None:
        """Renew the leases of what is in flight every third of a lease (one statement per
        channel), so they hold however long a delivery waits between attempts."""
        every = self.settings.lease_seconds / 3
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            for channel, tasks in self._in_flight.items():
                if not tasks:
                    continue
                try:
                    await outbox.renew_leases(
                        self.log, list(tasks), self.owner, self.settings.lease(channel)
                    )
                except Exception:
                    log_failed_round(log, "renewing leases failed")

    def _database_away(self) -> None:
        """A round could not reach the database: leases still running when it last did
        may run out meanwhile while their holders can't record what they sent."""
        if self._away:
            return
        self._away = True
        last = self._reached_at or utcnow()
        if self._spare_leased_since is not None and time.monotonic() < self._spare_until:
            last = min(last, self._spare_leased_since)  # still sparing an earlier outage's
        self._spare_leased_since = last
        self._spare_until = float("inf")

    def _database_reached(self, at: datetime) -> None:
        """A round reached the database: after an outage, spare the leases that ran out
        during it for ``takeover_grace_seconds``, so their holders record their sends."""
        self._reached_at = at
        if self._away:
            self._away = False
            self._spare_until = time.monotonic() + self.settings.takeover_grace_seconds

    def _expired_before(self) -> datetime | None:
        """Claim only leases that ran out before this (None: any that ran out)."""
        if self._spare_leased_since is None or time.monotonic() >= self._spare_until:
            return None
        return self._spare_leased_since

    async def dispatch_due(self) -> int:
        """Claim what each channel has room for and start sending it; how many started."""
        started = 0
        for name, tasks in self._in_flight.items():
            free = self.settings.limits(name).concurrency - len(tasks)
            if free <= 0:
                continue
            claimed = await outbox.claim(
                self.log,
                name,
                free,
                self.owner,
                self.settings.lease(name),
                expired_before=self._expired_before(),
            )
            for delivery in claimed:
                if delivery.delivery_id in tasks:
                    continue  # ours, still being sent or recorded: its lease ran out meanwhile
                task = asyncio.create_task(self._deliver(delivery), name=f"deliver-{name}")
                tasks[delivery.delivery_id] = task
                IN_FLIGHT.labels(name).inc()
                task.add_done_callback(self._done(name, delivery.delivery_id))
                started += 1
        return started

    def _done(self, channel: str, delivery_id: uuid.UUID) -> _DoneCallback:
        def done(_task: asyncio.Task[None]) -> None:
            self._in_flight[channel].pop(delivery_id, None)
            IN_FLIGHT.labels(channel).dec()
            self.wakeup.set()  # a slot is free

        return done

    async def drain(self) -> None:
        """Send until nothing is due or in flight (tests and benchmarks; bound it with
        ``asyncio.timeout``)."""
        while True:
            idle = not self.busy  # before claiming: a send finishing meanwhile may leave more due
            started = await self.dispatch_due()
            if idle and not started:
                return
            await asyncio.sleep(0.02)

    async def stop_sending(self) -> None:
        """Cancel what is in flight and give the leases back for another dispatcher.

        Deliveries a channel accepted and that are being recorded get
        ``stop_record_seconds`` to finish first; those still unrecorded then keep their
        leases (given back, another dispatcher would send them again at once)."""
        tasks = {k: t for per in self._in_flight.values() for k, t in per.items()}
        # Sends under way finish (the receiver may be accepting them), and so does the
        # recording of sends accepted: a cancelled one given back would go out again.
        busy = [t for k, t in tasks.items() if k in self._recording or k in self._sending]
        longest = max(
            [self.settings.stop_record_seconds]
            + [self.settings.limits(c).timeout_seconds for c in self._in_flight]
        )
        if busy and self.settings.stop_record_seconds > 0:
            await asyncio.wait(busy, timeout=longest)
        unrecorded = [k for k in tasks if k in self._recording or k in self._sending]
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        if unrecorded:
            log.warning(
                "stopped before sent notices were recorded; they may be sent again",
                deliveries=[str(k) for k in unrecorded],
            )
        self._recording.difference_update(unrecorded)
        await self._records.stop()
        await self._subscriptions.stop()
        for begins in self._begins.values():
            await begins.stop()
        with contextlib.suppress(Exception):
            await outbox.release(self.log, [k for k in tasks if k not in unrecorded], self.owner)

    async def _deliver(self, delivery: outbox.Delivery) -> None:
        context = structlog.contextvars.bound_contextvars(
            delivery_id=str(delivery.delivery_id),
            channel=delivery.channel,
            recipient=delivery.masked,
            about=delivery.event_type,
        )
        traced = continued(
            f"send {delivery.channel} {delivery.event_type}",
            delivery.correlation_id,
            str(delivery.delivery_id),
            kind=SpanKind.CLIENT,
            attributes={"caseflow.delivery_id": str(delivery.delivery_id)},
        )
        with context, traced:
            pause = 0.25
            while True:
                try:
                    await self._attempts(delivery)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    # The database failed before the send. While it is away, this task
                    # waits and tries again (the lease stays ours: begin_attempt checks);
                    # anything else ends it, and the lease runs out for another round.
                    log_failed_round(log, "delivery interrupted; it will be tried again")
                    if unavailable_dependency(err) is None or await self._database_answers():
                        return
                while not await self._database_answers():
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, self.settings.record_wait_max_seconds)
                # Go on from the row as it is now: its attempts so far count.
                fresh = await outbox.get(self.log, delivery.delivery_id)
                if fresh is None or fresh.status != outbox.PENDING:
                    return
                delivery = fresh

    async def _database_answers(self) -> bool:
        """Whether the database takes a statement now."""
        try:
            async with self.log.writer.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception as err:
            return unavailable_dependency(err) is None  # away, or answering with an error
        return True

    async def _attempts(self, delivery: outbox.Delivery) -> None:
        channel = self.channels.get(delivery.channel)
        if channel is None:
            await self._finish_failed(
                delivery, delivery.attempts, f"the {delivery.channel} channel is not configured"
            )
            return
        limits = self.settings.limits(delivery.channel)
        lease = self.settings.lease(delivery.channel)
        remaining = max(1, self.settings.max_attempts - delivery.attempts)
        attempts = delivery.attempts
        try:
            async for attempt in stamina.retry_context(
                on=_retryable,
                attempts=remaining,
                timeout=None,
                wait_initial=self.settings.wait_initial_seconds,
                wait_max=self.settings.wait_max_seconds,
                wait_jitter=self.settings.wait_jitter_seconds,
            ):
                with attempt:
                    # Before every attempt: a subscription paused meanwhile (by its head,
                    # or by another delivery's 410) holds this one too.
                    go, secret = await self._subscription_allows(delivery)
                    if not go:
                        return
                    written, begun = await self._begins[delivery.channel].submit(
                        delivery.delivery_id
                    )
                    number = (
                        begun
                        if written and begun is not None
                        else await outbox.begin_attempt(
                            self.log, delivery.delivery_id, self.owner, lease
                        )
                    )
                    if number == 0:
                        return  # finished or taken over elsewhere
                    attempts = number
                    self._sending.add(delivery.delivery_id)
                    try:
                        async with asyncio.timeout(limits.timeout_seconds):
                            provider_id = await channel.send(
                                delivery.outgoing(secret=secret, attempt=number)
                            )
                    except TimeoutError:
                        ATTEMPT_ERRORS.labels(delivery.channel).inc()
                        raise DeliveryError(
                            f"timed out after {limits.timeout_seconds:g} s (超时)"
                        ) from None
                    except DeliveryError as err:
                        ATTEMPT_ERRORS.labels(delivery.channel).inc()
                        log.info(
                            "delivery attempt failed",
                            attempt=number,
                            error=str(err),
                            detail=err.detail,
                        )
                        if _retryable(err):
                            await outbox.note_error(self.log, delivery.delivery_id, str(err))
                        raise
                    finally:
                        self._sending.discard(delivery.delivery_id)
        except ReceiverGone as err:
            await self._receiver_gone(delivery, err)
            return
        except PermanentDeliveryError as err:
            await self._finish_failed(delivery, attempts, f"refused: {err}", err.detail)
            return
        except DeliveryError as err:
            await self._finish_failed(
                delivery, attempts, f"gave up after {attempts} attempts: {err}", err.detail
            )
            return
        await self._record_sent(delivery, attempts, provider_id)
        SENT.labels(delivery.channel).inc()
        log.info("notice delivered", attempts=attempts)

    async def _record_sent(
        self, delivery: outbox.Delivery, attempts: int, provider_id: str | None
    ) -> None:
        """Record that the channel accepted ``delivery``, trying until it sticks.

        Every failed try is logged (one line naming the outage, a traceback for anything
        else) and renews the lease if the database answers; a conflict with a staff
        action appended to the case meanwhile is tried again without a log line."""
        self._recording.add(delivery.delivery_id)
        written, _ = await self._records.submit(outbox.Sent(delivery, attempts, provider_id))
        if written:
            self._recording.discard(delivery.delivery_id)
            return
        lease = self.settings.lease(delivery.channel)
        failures = 0
        async for attempt in stamina.retry_context(
            on=Exception,
            attempts=None,
            timeout=None,
            wait_initial=0.05,
            wait_max=self.settings.record_wait_max_seconds,
            wait_jitter=min(0.5, self.settings.record_wait_max_seconds),
        ):
            with attempt:
                try:
                    await outbox.mark_sent(
                        self.log, delivery, attempts=attempts, provider_message_id=provider_id
                    )
                except (ConcurrencyError, IntegrityError):
                    raise
                except Exception:
                    failures += 1
                    log_failed_round(
                        log, "recording a sent notice failed; trying again", tries=failures
                    )
                    with contextlib.suppress(Exception):
                        await outbox.renew_lease(self.log, delivery.delivery_id, self.owner, lease)
                    raise
        self._recording.discard(delivery.delivery_id)
        if failures:
            log.info("sent notice recorded after failed tries", tries=failures + 1)

    async def _subscription_allows(self, delivery: outbox.Delivery) -> tuple[bool, str | None]:
        """Whether to attempt ``delivery`` now, and its subscription's secret (a webhook).

        A deleted subscription ends the delivery; a paused one holds it for a while."""
        if delivery.subscription_id is None:
            return True, None
        read, sub = await self._subscriptions.submit(delivery.subscription_id)
        if not read:
            sub = await subscriptions.get(self.log, delivery.subscription_id)
        if sub is None:
            await self._finish_failed(delivery, delivery.attempts, "subscription deleted")
            return False, None
        if sub.status != subscriptions.ACTIVE:
            later = utcnow() + timedelta(seconds=self.settings.paused_retry_seconds)
            await outbox.postpone(self.log, delivery.delivery_id, later)
            return False, None
        return True, sub.secret

    async def _receiver_gone(self, delivery: outbox.Delivery, err: ReceiverGone) -> None:
        """HTTP 410: the receiver retired the endpoint. Its subscription is paused with
        the reason for its head; this delivery waits with the others until it resumes."""
        if delivery.subscription_id is None:  # not a subscription's: nothing to pause
            await self._finish_failed(delivery, delivery.attempts, f"refused: {err}", err.detail)
            return
        reason = (
            f"paused by notify on {utcnow():%Y-%m-%d %H:%M} UTC: {err}; resume it once the "
            "receiver takes calls again (接收端已停用，恢复前不再推送)"
        )
        later = utcnow() + timedelta(seconds=self.settings.paused_retry_seconds)
        await outbox.postpone(self.log, delivery.delivery_id, later, error=str(err))
        paused = await subscriptions.pause_gone(self.log, delivery.subscription_id, reason)
        log.warning(
            "webhook receiver gone; subscription paused",
            subscription_id=str(delivery.subscription_id),
            newly_paused=paused,
            detail=err.detail,
        )

    async def _finish_failed(
        self, delivery: outbox.Delivery, attempts: int, reason: str, detail: str | None = None
    ) -> None:
        """A dead letter: ``reason`` in the record (heads read it), ``detail`` in the log."""
        await self._retry_conflicts(
            lambda: outbox.mark_failed(self.log, delivery, attempts=attempts, reason=reason)
        )
        FAILED.labels(delivery.channel).inc()
        log.warning(
            "notice given up; dead letter kept", attempts=attempts, reason=reason, detail=detail
        )

    @staticmethod
    async def _retry_conflicts(finish: _Finish) -> None:
        # A staff action appended to the same case between our read and our append.
        async for attempt in stamina.retry_context(
            on=(ConcurrencyError, IntegrityError), attempts=10, wait_initial=0.01, wait_max=0.5
        ):
            with attempt:
                await finish()
