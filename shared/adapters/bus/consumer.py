"""Durable pull consumers with exactly-once effects.

A handler receives one event and a :class:`UnitOfWork`. The consumer records
``(consumer, event_id)`` in the inbox table in the same transaction as whatever the
handler appends, so a message that NATS redelivers changes nothing the second time.
A fetched batch is handled in one transaction (one commit, one fsync); if any message of
it fails, the batch is rolled back and handled one message at a time, so one bad message
can't hold back the others.

**A message is a reference; the log is the record.** The relay publishes a masked view
of each event (``shared.domain.privacy``), and anybody who may publish on the bus could publish
anything. So a handler is never given the message: the consumer reads the cases of the
batch ahead in its transaction and hands each handler the log's own copy of the event
the message names (by case and event id), with the personal data the handler may need.
A message whose event is not in the log is not a caseflow event: it is dead-lettered at
once, before anything is recorded of it (not even in the inbox, where a forged id could
otherwise shadow a real event still to come). So is one whose subject is not the one its
event is published on.

Handlers see every event at the current version of its payload: the log's copy and the
histories a :class:`UnitOfWork` reads are upcast (``shared.domain.upcasting``); the log itself
keeps what was stored.

**Outages are waited out, not counted.** When handling fails because the database (or
NATS) can't be reached — and a probe confirms it — the consumer stops fetching, keeps the
messages in hand (telling JetStream they are in progress, so none is redelivered
meanwhile) and handles the same batch again once the probe answers. A conflict with
another writer (the case moved on) or an outage the probe did not see (a stream electing
its leader) is retried and counted only a little. A handler's own error counts: after
``max_deliver`` of them (counted by this process, not by JetStream's deliveries, which
outages and restarts also make) the message goes to
``caseflow.dlq.<consumer>`` with the reason. Messages that can't be decoded go there at
once, and so do events of a schema version newer than the code knows.

**Dead letters can be handled again.** ``caseflow bus redrive`` puts a request naming a
dead letter (its sequence in ``CASEFLOW_DLQ``) on ``caseflow.redrive.<consumer>``; the
consumer reads that dead letter from the dead-letter stream (which only services write),
handles the event it names as the log holds it with :data:`REDRIVEN` set (notify tells
whatever the event's age), and deletes the dead letter once handled. Handled before?
The inbox says so and nothing happens twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import nats.errors
import orjson
import sqlalchemy as sa
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Gauge
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from shared.adapters.bus.headers import (
    DLQ_CONSUMER_HEADER,
    DLQ_REASON_HEADER,
    DLQ_SUBJECT_HEADER,
    MSG_ID_HEADER,
    header_value,
)
from shared.adapters.bus.streams import (
    DLQ_STREAM,
    EVENTS_STREAM,
    REDRIVE_STREAM,
    dlq_subject,
    event_subject,
    redrive_durable,
    redrive_subject,
)
from shared.adapters.eventlog import ConcurrencyError, EventLog, EventRef, UnitOfWork
from shared.adapters.outages import unavailable_dependency
from shared.adapters.tracing import continued
from shared.domain.events import StoredEvent
from shared.domain.upcasting import UpcastError

log = structlog.get_logger("caseflow.consumer")

ACK_WAIT = 5.0
"""Seconds the server waits for an ack (or an in-progress beat) before delivering again."""

HANDLED = Counter("caseflow_consumer_handled_total", "Events handled", ["consumer"])
REPEATS = Counter("caseflow_consumer_repeats_total", "Redelivered events skipped", ["consumer"])
IGNORED = Counter(
    "caseflow_consumer_ignored_total",
    "Events of types the consumer does nothing with, acknowledged unread",
    ["consumer"],
)
FAILED = Counter("caseflow_consumer_failures_total", "Handler failures", ["consumer"])
DEAD = Counter("caseflow_consumer_dead_letters_total", "Events dead-lettered", ["consumer"])
REDRIVEN_TOTAL = Counter(
    "caseflow_consumer_redriven_total", "Dead letters handled again", ["consumer"]
)
WAITING = Gauge(
    "caseflow_consumer_waiting_out",
    "1 while the consumer waits for an unreachable database or NATS",
    ["consumer"],
)

REDRIVEN: contextvars.ContextVar[bool] = contextvars.ContextVar("caseflow_redriven", default=False)
"""True while a handler handles an event re-driven from the dead letters (``caseflow bus
redrive``): an operator asked for it to be handled now, whatever its age."""


Handler = Callable[[StoredEvent, UnitOfWork], Awaitable[None]]


class PoisonMessage(Exception):
    """The message can't be decoded as an event envelope."""


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Delivery:
    """A fetched message and the event it names (each delivery is itself: compared and
    hashed by identity). For a re-driven dead letter, ``msg`` is the redrive request
    (acked, nak'ed, terminated) and the rest comes from the dead letter."""

    msg: Msg
    ref: EventRef
    subject: str
    """The subject the event was published on."""
    data: bytes
    msg_id: str | None = None
    """The published message's ``Nats-Msg-Id``."""
    dead_letter: int | None = None
    """The dead letter's sequence in ``CASEFLOW_DLQ``, if re-driven from there."""

    @classmethod
    def of(cls, msg: Msg) -> Delivery:
        """The delivery of a message fetched from the stream (PoisonMessage if it names
        no event)."""
        msg_id = (msg.headers or {}).get(MSG_ID_HEADER)
        return cls(msg, _decode(msg.data), msg.subject, msg.data, msg_id)


def _not_logged(delivery: Delivery) -> str:
    ref = delivery.ref
    return (
        f"not in the log: case {ref.case_id} has no event {ref.event_id}; the message is "
        "not a caseflow event and was not handled"
    )


@dataclasses.dataclass(frozen=True)
class ConsumerSpec:
    """What a consumer listens to and how it retries."""

    name: str
    subjects: tuple[str, ...]
    handler: Handler
    max_deliver: int = 5
    backoff: tuple[float, ...] = (0.5, 2.0, 5.0, 15.0, 30.0)
    batch_size: int = 100
    ack_wait: float = 30.0
    ignores: frozenset[str] = frozenset()
    """Event types the handler does nothing with: acknowledged as they come, without
    reading the log or keeping them in the inbox (notify's own records, for most)."""

    def delay(self, attempt: int) -> float:
        """Backoff before redelivery number ``attempt + 1``."""
        return self.backoff[min(attempt, len(self.backoff)) - 1]


def _decode(data: bytes) -> EventRef:
    """The event the message names."""
    try:
        envelope = orjson.loads(data)
        return EventRef(uuid.UUID(envelope["event_id"]), uuid.UUID(envelope["case_id"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise PoisonMessage(f"not a caseflow event envelope: {err!r}") from err


_CONFLICTS = ("uq_events_case_version", "events.case_id, events.version", "database is locked")
"""How a conflict with another writer reads: the case's next version taken (PostgreSQL's
constraint, SQLite's columns), or SQLite's file locked by another writer."""


def _weight(err: BaseException) -> float:
    """How much a failure counts toward the dead letter (``max_deliver`` of 1 each).

    A conflict with another writer says nothing about the message (the case moved on);
    an outage the probe did not see (a JetStream stream electing its leader while the
    connection stands, a database coming back) says little. Both are retried, but counted
    a little, so that a handler's bug disguised as one still ends as a dead letter."""
    if isinstance(err, ConcurrencyError) or (
        isinstance(err, IntegrityError | OperationalError)
        and any(mark in str(err) for mark in _CONFLICTS)
    ):
        return 0.02
    if unavailable_dependency(err) is not None or (
        isinstance(err, DBAPIError) and err.connection_invalidated
    ):
        return 0.1
    return 1.0


FAILURES_REMEMBERED = 10_000
"""How many messages' failure counts a consumer keeps (the oldest are forgotten: a
forgotten message is retried more often, never dead-lettered sooner)."""


class Consumer:
    """Fetches from a durable pull consumer and handles each event exactly once in effect."""

    def __init__(self, spec: ConsumerSpec, event_log: EventLog, nc: NATS) -> None:
        self.spec = spec
        self.log = event_log
        self.nc = nc
        self.js = nc.jetstream()
        self.reconnects = 0
        self.idle = asyncio.Event()
        self.stop = asyncio.Event()
        """Set by :meth:`run`'s caller: an outage being waited out ends with it."""
        self._failures: dict[str, float] = {}
        """The handler's own failures per message (outages and conflicts don't count)."""

    def config(self) -> api.ConsumerConfig:
        """The durable consumer's configuration (redelivery is bounded by our own code)."""
        return api.ConsumerConfig(
            durable_name=self.spec.name,
            name=self.spec.name,
            filter_subjects=list(self.spec.subjects),
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            # Short, so that messages a NATS restart lost on their way to us come again within
            # seconds; run() reports a longer batch in progress (spec.ack_wait bounds it).
            ack_wait=min(self.spec.ack_wait, ACK_WAIT),
            max_ack_pending=10_000,
        )

    async def declare(self) -> None:
        """Create or update the durable consumer (idempotent)."""
        await self.js.add_consumer(EVENTS_STREAM, self.config())

    def on_reconnect(self) -> None:
        """Called by the NATS client after a reconnect: recreate the pull subscription."""
        self.reconnects += 1

    def redrive_config(self) -> api.ConsumerConfig:
        """The durable that takes this consumer's redrive requests."""
        durable = redrive_durable(self.spec.name)
        return api.ConsumerConfig(
            durable_name=durable,
            name=durable,
            filter_subject=redrive_subject(self.spec.name),
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=min(self.spec.ack_wait, ACK_WAIT),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and handle until ``stop`` is set; the batch in hand is finished first.
        Redrive requests are taken beside the stream's messages."""
        self.stop = stop
        await asyncio.gather(
            self._pull(stop, EVENTS_STREAM, self.config(), self.handle_batch, wait=0.5),
            self._pull(stop, REDRIVE_STREAM, self.redrive_config(), self.handle_redrives, wait=1),
        )

    async def _pull(
        self,
        stop: asyncio.Event,
        stream: str,
        config: api.ConsumerConfig,
        handle: Callable[[list[Msg]], Awaitable[None]],
        *,
        wait: float,
    ) -> None:
        durable = config.durable_name or ""
        while not stop.is_set():
            seen_reconnects = self.reconnects
            try:
                await self.js.add_consumer(stream, config)
                sub = await self.js.pull_subscribe_bind(durable=durable, stream=stream)
            except Exception as err:
                log.warning("consumer subscribe failed", consumer=durable, error=repr(err))
                await _sleep_unless(stop, 1.0)
                continue
            try:
                while not stop.is_set() and self.reconnects == seen_reconnects:
                    try:
                        msgs = await sub.fetch(self.spec.batch_size, timeout=wait)
                    except TimeoutError:
                        if stream == EVENTS_STREAM:
                            self.idle.set()
                        continue
                    except nats.errors.Error as err:
                        log.warning("fetch failed", consumer=durable, error=repr(err))
                        await _sleep_unless(stop, 0.5)
                        break
                    if stream == EVENTS_STREAM:
                        self.idle.clear()
                    try:
                        async with _in_progress(msgs, min(self.spec.ack_wait, ACK_WAIT) / 3):
                            await handle(msgs)
                    except Exception as err:
                        # NATS went away while acking or dead-lettering: the messages come
                        # again (the inbox knows those handled) on a new subscription.
                        log.warning("batch interrupted", consumer=durable, error=repr(err)[:300])
                        await _sleep_unless(stop, 0.5)
                        break
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def handle_batch(self, msgs: list[Msg]) -> None:
        """Handle a batch in one transaction, or one by one if any of it fails."""
        decoded: list[Delivery] = []
        ignored: list[Msg] = []
        for msg in msgs:
            if msg.subject.rpartition(".")[2] in self.spec.ignores:
                ignored.append(msg)  # nothing to do for it: not even reading the log
                continue
            try:
                decoded.append(Delivery.of(msg))
            except PoisonMessage as err:
                await self._dead_letter_msg(msg, str(err))
        if ignored:
            await asyncio.gather(*(msg.ack() for msg in ignored))
            IGNORED.labels(self.spec.name).inc(len(ignored))
        await self._handle_deliveries(decoded)

    async def _handle_deliveries(self, decoded: list[Delivery]) -> None:
        while decoded:
            try:
                refused = await self._transaction(decoded)
            except Exception as err:
                if await self._waited_out(err, decoded):
                    if self.stop.is_set():
                        await self._give_back(decoded)
                        return
                    continue  # the dependency is back: the same batch again
                for delivery in decoded:
                    await self._handle_one(delivery)
                return
            await self._settle(decoded, refused)
            return

    async def handle_redrives(self, msgs: list[Msg]) -> None:
        """Take redrive requests: each names a dead letter of this consumer, which is
        handled again as the log holds its event, then deleted from the dead letters."""
        for msg in msgs:
            delivery = await self._redriven(msg)
            if delivery is None:
                continue
            token = REDRIVEN.set(True)
            try:
                await self._handle_deliveries([delivery])
            finally:
                REDRIVEN.reset(token)

    async def _redriven(self, request: Msg) -> Delivery | None:
        """The dead letter a redrive request names, or None (the request settled) if
        there is none of this consumer's by that sequence."""
        try:
            sequence = int(orjson.loads(request.data)["dead_letter"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("redrive request names no dead letter", consumer=self.spec.name)
            await request.term()
            return None
        try:
            letter = await self.js.get_msg(DLQ_STREAM, sequence)
        except NotFoundError:
            log.info("redrive: no such dead letter (handled already?)", sequence=sequence)
            await request.ack()
            return None
        headers = letter.headers or {}
        mine = letter.subject == dlq_subject(self.spec.name)
        if not mine or headers.get(DLQ_CONSUMER_HEADER) != self.spec.name or letter.data is None:
            log.warning("redrive: not this consumer's dead letter", sequence=sequence)
            await request.term()
            return None
        subject = headers.get(DLQ_SUBJECT_HEADER) or ""
        msg_id = headers.get(MSG_ID_HEADER)
        prefix = f"{self.spec.name}:"
        original_id = msg_id.split(":again-")[0].removeprefix(prefix) if msg_id else None
        try:
            ref = _decode(letter.data)
        except PoisonMessage as err:
            # Still not an event: it stays a dead letter (under its new sequence).
            await self._publish_dead_letter(letter.data, subject, original_id, str(err), sequence)
            await self._delete_dead_letter(sequence)
            await request.term()
            return None
        return Delivery(request, ref, subject, letter.data, original_id, dead_letter=sequence)

    async def _waited_out(self, err: BaseException, deliveries: list[Delivery]) -> bool:
        """If ``err`` is an outage of the database or NATS — and a probe confirms it —
        wait until the probe answers again, keeping the messages in progress; True then.
        False for anything else (an error of the handler's own, a conflict)."""
        down = unavailable_dependency(err)
        if down is None or await self._reachable():
            return False
        dependency, cause = down
        WAITING.labels(self.spec.name).set(1)
        started = time.monotonic()
        log.warning(
            "waiting out an outage; nothing is dead-lettered for it",
            consumer=self.spec.name,
            unavailable=dependency,
            error=repr(cause)[:300],
            messages=len(deliveries),
        )
        pause = 0.25
        try:
            # The messages stay in hand: _pull beats "in progress" for them meanwhile.
            while not self.stop.is_set() and not await self._reachable():
                await _sleep_unless(self.stop, pause)
                pause = min(pause * 2, 2.0)
        finally:
            WAITING.labels(self.spec.name).set(0)
        log.info(
            "outage over; handling again",
            consumer=self.spec.name,
            unavailable=dependency,
            seconds=round(time.monotonic() - started, 1),
        )
        return True

    async def _reachable(self) -> bool:
        """Whether NATS and the database answer now."""
        if not self.nc.is_connected:
            return False
        try:
            async with self.log.writer.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception as err:
            return unavailable_dependency(err) is None
        return True

    @staticmethod
    async def _give_back(deliveries: Sequence[Delivery]) -> None:
        """Stopping while an outage lasts: the messages go back at once (best effort)."""
        with contextlib.suppress(Exception):
            await asyncio.gather(*(d.msg.nak() for d in deliveries))

    async def _settle(self, deliveries: list[Delivery], refused: dict[Delivery, str]) -> None:
        """After the commit: dead-letter what was refused, ack the rest (and delete the
        dead letters they were re-driven from)."""
        for delivery, reason in refused.items():
            await self.dead_letter(delivery, reason)
        done = [d for d in deliveries if d not in refused]
        for delivery in done:
            self._failures.pop(_failure_key(delivery), None)
            if delivery.dead_letter is not None:
                # Deleted before the request is acked: should the delete fail, the request
                # comes again and the inbox makes handling it again a no-op.
                await self._delete_dead_letter(delivery.dead_letter)
                REDRIVEN_TOTAL.labels(self.spec.name).inc()
                log.info(
                    "dead letter handled again",
                    consumer=self.spec.name,
                    event_id=str(delivery.ref.event_id),
                    dead_letter=delivery.dead_letter,
                )
        await asyncio.gather(*(d.msg.ack() for d in done))

    async def _delete_dead_letter(self, sequence: int) -> None:
        """Delete a dead letter handled again (or dead again under a new sequence); gone
        already (a twin request handled it) is fine."""
        with contextlib.suppress(NotFoundError):
            await self.js.delete_msg(DLQ_STREAM, sequence)

    async def _transaction(self, deliveries: list[Delivery]) -> dict[Delivery, str]:
        """Handle the events the messages name, as the log holds them, in one transaction.

        Returns the messages refused (to dead-letter once this commits), with the reason."""
        refused: dict[Delivery, str] = {}
        events: list[StoredEvent] = []
        async with self.log.transaction() as tx:
            uow = UnitOfWork(tx, self.spec.name)
            # Handlers read their event's case: read those cases ahead in one query, and
            # take each event from there.
            logged = await uow.logged([d.ref for d in deliveries])
            for delivery in deliveries:
                found = logged.get(delivery.ref.event_id)
                if found is None:
                    refused[delivery] = _not_logged(delivery)
                elif isinstance(found, UpcastError):
                    refused[delivery] = str(found)
                elif delivery.subject != event_subject(found.case_kind, found.event_type):
                    refused[delivery] = (
                        f"the log's event {found.event_id} is {found.event_type} "
                        f"({found.case_kind}), published on "
                        f"{event_subject(found.case_kind, found.event_type)}, not on "
                        f"{delivery.subject}; the message was not handled"
                    )
                else:
                    events.append(found)
            # One statement records the whole batch in the inbox (same transaction, so the
            # same all-or-nothing as claiming each event before handling it). Only events
            # in the log: a forged id recorded here would shadow a real event to come.
            claimed = await uow.claim_all([event.event_id for event in events])
            for event in events:
                if event.event_id not in claimed:
                    REPEATS.labels(self.spec.name).inc()
                    continue
                claimed.discard(event.event_id)  # a second copy in this batch is a repeat
                bound = structlog.contextvars.bound_contextvars(
                    correlation_id=event.correlation_id, event_id=str(event.event_id)
                )
                traced = continued(
                    f"{self.spec.name} {event.event_type}",
                    event.correlation_id,
                    str(event.event_id),
                    attributes={
                        "caseflow.event_id": str(event.event_id),
                        "caseflow.case_id": str(event.case_id),
                    },
                )
                with bound, traced:
                    await self.spec.handler(event, uow)
        HANDLED.labels(self.spec.name).inc(len(events))
        return refused

    async def _handle_one(self, delivery: Delivery) -> None:
        while True:
            try:
                refused = await self._transaction([delivery])
            except Exception as err:
                if await self._waited_out(err, [delivery]):
                    if self.stop.is_set():
                        await self._give_back([delivery])
                        return
                    continue
                await self._failed(delivery, err)
                return
            await self._settle([delivery], refused)
            return

    async def _failed(self, delivery: Delivery, err: Exception) -> None:
        """The handler failed on this message: retry it later, or dead-letter it after
        ``max_deliver`` failures of its own."""
        msg = delivery.msg
        FAILED.labels(self.spec.name).inc()
        weight = _weight(err)
        key = _failure_key(delivery)
        failures = self._failures.pop(key, 0.0) + weight
        if failures >= self.spec.max_deliver:
            await self.dead_letter(delivery, f"{type(err).__name__}: {err}")
            return
        self._failures[key] = failures
        while len(self._failures) > FAILURES_REMEMBERED:
            del self._failures[next(iter(self._failures))]
        if weight < 1:
            # Another writer moved the case on, or a dependency was away for a moment.
            log.warning(
                "conflict or short outage; will retry",
                consumer=self.spec.name,
                event_id=str(delivery.ref.event_id),
                error=repr(err)[:300],
            )
            await msg.nak(delay=random.uniform(0.05, 0.5) + (1.0 if weight > 0.05 else 0.0))  # noqa: S311
            return
        log.warning(
            "handler failed; will retry",
            consumer=self.spec.name,
            event_id=str(delivery.ref.event_id),
            failures=round(failures, 2),
            error=repr(err),
        )
        await msg.nak(delay=self.spec.delay(max(1, int(failures))))

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the event's message to ``caseflow.dlq.<consumer>`` with the reason, then
        drop it (a re-driven one: its earlier dead letter is deleted)."""
        await self._publish_dead_letter(
            delivery.data, delivery.subject, delivery.msg_id, reason, delivery.dead_letter
        )
        if delivery.dead_letter is not None:
            await self._delete_dead_letter(delivery.dead_letter)
        await delivery.msg.term()
        self._failures.pop(_failure_key(delivery), None)

    async def _dead_letter_msg(self, msg: Msg, reason: str) -> None:
        """Dead-letter a message that names no event."""
        await self._publish_dead_letter(
            msg.data, msg.subject, (msg.headers or {}).get(MSG_ID_HEADER), reason, None
        )
        await msg.term()

    async def _publish_dead_letter(
        self, data: bytes, subject: str, msg_id: str | None, reason: str, again: int | None
    ) -> None:
        headers = {
            DLQ_REASON_HEADER: header_value(reason),
            DLQ_SUBJECT_HEADER: subject,
            DLQ_CONSUMER_HEADER: self.spec.name,
        }
        if msg_id:
            # A letter dead again after a redrive is a new one (not a duplicate to drop).
            suffix = f":again-{again}" if again is not None else ""
            headers[MSG_ID_HEADER] = f"{self.spec.name}:{msg_id}{suffix}"
        await self.js.publish(dlq_subject(self.spec.name), data, headers=headers)
        DEAD.labels(self.spec.name).inc()
        log.error("dead-lettered", consumer=self.spec.name, subject=subject, reason=reason)


def _failure_key(delivery: Delivery) -> str:
    return str(delivery.ref.event_id)


@contextlib.asynccontextmanager
async def _in_progress(msgs: list[Msg], every: float) -> AsyncIterator[None]:
    """While the block runs, tell the server every ``every`` seconds that ``msgs`` are in
    hand (``+WPI``), so that the short ack wait does not redeliver a long batch."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            for msg in msgs:
                if msg.is_acked:  # acked, nak'ed or terminated already: leave it be
                    continue
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
