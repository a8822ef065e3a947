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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta

import stamina
import structlog
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from services.notify import outbox, subscriptions
from services.notify.channels import Channel
from services.notify.model import DeliveryError, PermanentDeliveryError, ReceiverGone
from shared.eventlog import ConcurrencyError, EventLog
from shared.events import utcnow

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
    email: ChannelLimits = ChannelLimits(concurrency=4)
    sms: ChannelLimits = ChannelLimits(concurrency=8)
    webhook: ChannelLimits = ChannelLimits(concurrency=16, timeout_seconds=5.0)

    def limits(self, channel: str) -> ChannelLimits:
        """The limits of ``channel``."""
        limits: ChannelLimits = getattr(self, channel)
        return limits

    def lease(self, channel: str) -> timedelta:
        """How long a claim holds: one attempt and the longest wait after it, and slack."""
        return timedelta(
            seconds=self.limits(channel).timeout_seconds
            + self.wait_max_seconds
            + self.wait_jitter_seconds
            + 5.0
        )


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

    def wake(self) -> None:
        """Look for due deliveries now rather than at the next poll."""
        self.wakeup.set()

    @property
    def busy(self) -> int:
        """Deliveries being sent right now."""
        return sum(len(tasks) for tasks in self._in_flight.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set, then give back what was not finished."""
        try:
            while not stop.is_set():
                try:
                    await self.dispatch_due()
                except Exception as err:  # the database is away: try again shortly
                    log.warning("dispatch round failed", error=repr(err))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), self.settings.poll_seconds)
                self.wakeup.clear()
        finally:
            await self.stop_sending()

    async def dispatch_due(self) -> int:
        """Claim what each channel has room for and start sending it; how many started."""
        started = 0
        for name, tasks in self._in_flight.items():
            free = self.settings.limits(name).concurrency - len(tasks)
            if free <= 0:
                continue
            claimed = await outbox.claim(
                self.log, name, free, self.owner, self.settings.lease(name)
            )
            for delivery in claimed:
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
        """Cancel what is in flight and give the leases back for another dispatcher."""
        tasks = {k: t for per in self._in_flight.values() for k, t in per.items()}
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        with contextlib.suppress(Exception):
            await outbox.release(self.log, list(tasks), self.owner)

    async def _deliver(self, delivery: outbox.Delivery) -> None:
        context = structlog.contextvars.bound_contextvars(
            delivery_id=str(delivery.delivery_id),
            channel=delivery.channel,
            recipient=delivery.masked,
            about=delivery.event_type,
        )
        with context:
            try:
                await self._attempts(delivery)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the database failed mid-way: the lease runs out
                log.warning("delivery interrupted; it will be tried again", error=repr(err))

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
                    number = await outbox.begin_attempt(
                        self.log, delivery.delivery_id, self.owner, lease
                    )
                    if number == 0:
                        return  # finished or taken over elsewhere
                    attempts = number
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
        await self._retry_conflicts(
            lambda: outbox.mark_sent(
                self.log, delivery, attempts=attempts, provider_message_id=provider_id
            )
        )
        SENT.labels(delivery.channel).inc()
        log.info("notice delivered", attempts=attempts)

    async def _subscription_allows(self, delivery: outbox.Delivery) -> tuple[bool, str | None]:
        """Whether to attempt ``delivery`` now, and its subscription's secret (a webhook).

        A deleted subscription ends the delivery; a paused one holds it for a while."""
        if delivery.subscription_id is None:
            return True, None
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
