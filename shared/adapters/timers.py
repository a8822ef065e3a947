"""Durable timers: scheduled with the change that needs them, fired exactly once.

A timer is a row in ``timers``. :func:`schedule` inserts it in the caller's transaction,
so a timer exists exactly when the change that asked for it committed; scheduling the
same id again does nothing (derive ids with :func:`make_timer_id` so a retried command
asks for the same timer). A :class:`TimerWheel` in each process claims due timers and
runs each one's handler with a :class:`UnitOfWork` in the transaction that marks the
timer fired: the handler's appends and the ``fired_at`` mark commit together or not at all.

Exactly once, across replicas and restarts:

- PostgreSQL: the claim is ``SELECT … FOR UPDATE SKIP LOCKED``. A claimed row stays
  locked until its wheel's transaction ends and other wheels skip it; after the commit
  its ``fired_at`` excludes it (under READ COMMITTED a locking read re-checks its
  condition against the row's newest version, so a stale snapshot can't claim it again).
- SQLite: the claim runs in a ``BEGIN IMMEDIATE`` transaction (the log's writer engine):
  one writer at a time across every process on the file, so claim, handlers and mark are
  serialised and the next wheel sees the mark.
- Either way the timer id is also recorded in the inbox under ``timer:<kind>`` in the
  same transaction, so a second firing would be refused by a primary key as well.
- A crash before the commit loses the handler's work together with the mark: the timer
  is still due and fires after the restart.

A handler error rolls back that timer's savepoint only. Its attempts, the error and a
later due time (exponential backoff, capped) are stored in the same transaction, so the
timer is retried and never lost. Conflicts with another writer (``ConcurrencyError``, a
unique violation) are retried within tens of milliseconds (doubling while they recur).

Handlers must do their work through the unit of work (appends, reads, ``schedule`` on
``uow.conn``); anything outside the database is not covered by the transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import socket
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from opentelemetry.trace import SpanKind
from prometheus_client import Counter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters.eventlog import ConcurrencyError, EventLog, Transaction, UnitOfWork
from shared.adapters.outages import log_failed_round
from shared.adapters.sql import insert_ignore
from shared.adapters.tables.timers import timers as t
from shared.adapters.tracing import continued
from shared.domain.events import utcnow

log = structlog.get_logger("caseflow.timers")

FIRED = Counter("caseflow_timers_fired_total", "Timers fired", ["kind"])
FAILED = Counter("caseflow_timers_failures_total", "Timer handler failures", ["kind"])
REPEATS = Counter(
    "caseflow_timers_repeats_total", "Timers claimed again though in the inbox", ["kind"]
)

TIMER_NAMESPACE = uuid.UUID("d6356b49-92da-4bb5-91ef-31216cad9b47")
"""Namespace of :func:`make_timer_id`."""

_KIND = re.compile(r"^[a-z][a-z0-9_.-]{0,57}$")
"""Timer kinds: short lowercase names (``timer:<kind>`` must fit the inbox's 64 characters)."""

_MAX_ERROR = 2000


@dataclasses.dataclass(frozen=True, slots=True)
class Timer:
    """A timer as stored. Handlers get it as claimed (not yet fired)."""

    timer_id: uuid.UUID
    case_id: uuid.UUID
    kind: str
    due_at: datetime
    payload: dict[str, Any]
    created_at: datetime
    fired_at: datetime | None = None
    cancelled_at: datetime | None = None
    attempts: int = 0
    """How many times the handler ran: failed attempts, and the one that fired it."""
    last_error: str | None = None
    correlation_id: str | None = None


TimerHandler = Callable[[Timer, UnitOfWork], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class TimerSpec:
    """What to do when a timer of ``kind`` is due."""

    kind: str
    handler: TimerHandler

    def __post_init__(self) -> None:
        _check_kind(self.kind)

    @property
    def consumer(self) -> str:
        """The unit of work's consumer name (and the inbox's) for this kind."""
        return f"timer:{self.kind}"


def _check_kind(kind: str) -> None:
    if not _KIND.match(kind):
        raise ValueError(
            f"timer kind {kind!r} must be 1-58 characters: a-z first, then a-z, 0-9, '_', '.', '-'"
        )


def make_timer_id(case_id: uuid.UUID, kind: str, key: str = "") -> uuid.UUID:
    """A deterministic timer id: the same case, kind and key always name the same timer."""
    return uuid.uuid5(TIMER_NAMESPACE, f"{case_id}/{kind}/{key}")


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)  # SQLite stores UTC without a zone


def _maybe_aware(ts: datetime | None) -> datetime | None:
    return None if ts is None else _aware(ts)


def _timer(row: sa.Row[Any]) -> Timer:
    m = row._mapping
    return Timer(
        timer_id=m["timer_id"],
        case_id=m["case_id"],
        kind=m["kind"],
        due_at=_aware(m["due_at"]),
        payload=m["payload"],
        created_at=_aware(m["created_at"]),
        fired_at=_maybe_aware(m["fired_at"]),
        cancelled_at=_maybe_aware(m["cancelled_at"]),
        attempts=m["attempts"],
        last_error=m["last_error"],
        correlation_id=m["correlation_id"],
    )


async def schedule(
    conn: AsyncConnection,
    *,
    timer_id: uuid.UUID,
    case_id: uuid.UUID,
    kind: str,
    due_at: datetime,
    payload: dict[str, Any],
    correlation_id: str | None = None,
) -> bool:
    """Schedule a timer in the caller's transaction; False if ``timer_id`` exists already.

    A timer id is used once: scheduling it again, even after it fired or was cancelled,
    changes nothing. ``due_at`` must be timezone-aware.
    """
    if due_at.tzinfo is None:
        raise ValueError("due_at must be timezone-aware")
    _check_kind(kind)
    due = due_at.astimezone(UTC)  # SQLite keeps the wall time only: always store UTC
    inserted = await insert_ignore(
        conn,
        t,
        {
            "timer_id": timer_id,
            "case_id": case_id,
            "kind": kind,
            "due_at": due,
            "payload": payload,
            "created_at": utcnow(),
            "attempts": 0,
            "correlation_id": correlation_id,
        },
    )
    if inserted:
        _announce(due)
    return inserted


async def cancel(conn: AsyncConnection, timer_id: uuid.UUID) -> bool:
    """Cancel a pending timer in the caller's transaction; False if none was pending.

    On PostgreSQL a cancel that races a wheel firing the timer waits for the wheel's
    transaction, then finds the timer fired (False) — or the wheel skips it.
    """
    result = await conn.execute(
        sa.update(t)
        .where(t.c.timer_id == timer_id, t.c.fired_at.is_(None), t.c.cancelled_at.is_(None))
        .values(cancelled_at=utcnow())
    )
    return bool(result.rowcount == 1)


async def get(conn: AsyncConnection, timer_id: uuid.UUID) -> Timer | None:
    """The stored timer, or None."""
    row = (await conn.execute(sa.select(*t.c).where(t.c.timer_id == timer_id))).first()
    return _timer(row) if row is not None else None


_wheels: weakref.WeakSet[TimerWheel] = weakref.WeakSet()
"""The running wheels of this process (schedule() tells them of new timers)."""


def _announce(due_at: datetime) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # pragma: no cover - schedule() is a coroutine
        return
    for wheel in list(_wheels):
        if wheel.loop is loop:
            wheel.notify(due_at)


_MARK_FIRED = (
    sa.update(t)
    .where(t.c.timer_id == sa.bindparam("tid", type_=t.c.timer_id.type))
    .values(fired_at=sa.bindparam("at", type_=t.c.fired_at.type), attempts=t.c.attempts + 1)
)
_RECORD_FAILURE = (
    sa.update(t)
    .where(t.c.timer_id == sa.bindparam("tid", type_=t.c.timer_id.type), t.c.fired_at.is_(None))
    .values(
        attempts=t.c.attempts + 1,
        last_error=sa.bindparam("error", type_=t.c.last_error.type),
        due_at=sa.bindparam("due", type_=t.c.due_at.type),
    )
)


def _is_conflict(err: BaseException) -> bool:
    """Another writer moved a case on under the handler: worth retrying at once."""
    return isinstance(err, ConcurrencyError | IntegrityError)


class TimerWheel:
    """Fires the due timers of the given kinds, each exactly once (see the module docstring).

    One per process is plenty; several (replicas) share the work safely. It polls at
    least every ``poll_interval`` seconds, sleeps only until the next due time when that
    is sooner, and a :func:`schedule` in this process of an earlier timer wakes it.
    """

    def __init__(
        self,
        log: EventLog,
        specs: Iterable[TimerSpec],
        *,
        poll_interval: float = 1.0,
        batch: int = 50,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        name: str | None = None,
    ) -> None:
        self.log = log
        self.specs: dict[str, TimerSpec] = {}
        for spec in specs:
            if spec.kind in self.specs:
                raise ValueError(f"two handlers for timer kind {spec.kind!r}")
            self.specs[spec.kind] = spec
        if not self.specs:
            raise ValueError("a timer wheel needs at least one TimerSpec")
        if poll_interval <= 0 or batch < 1 or backoff_base <= 0 or backoff_cap < backoff_base:
            raise ValueError("poll_interval, batch and backoff must be positive")
        self.poll_interval = poll_interval
        self.batch = batch
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.name = name or f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self.wakeup = asyncio.Event()
        """Set to make the wheel look for due timers now."""
        self.fired = 0
        """Timers this wheel fired (committed)."""
        self.repeats = 0
        """Claimed timers the inbox knew as fired (0 unless fired_at was cleared by hand)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop the wheel runs on, while it runs."""
        self._hint: datetime | None = None
        """The earliest due time announced by schedule() and not yet seen in the table."""
        self._wake_at: datetime | None = None
        """When the sleeping wheel will look next (None: awake)."""

        postgres = log.engine.dialect.name == "postgresql"
        # A single-statement read sees one snapshot in autocommit too (as the log reads).
        self._reader = (
            log.engine.execution_options(isolation_level="AUTOCOMMIT") if postgres else log.engine
        )
        pending = sa.and_(
            t.c.fired_at.is_(None), t.c.cancelled_at.is_(None), t.c.kind.in_(sorted(self.specs))
        )
        self._next_due_query = sa.select(sa.func.min(t.c.due_at)).where(pending)
        claim = (
            sa.select(*t.c)
            .where(pending, t.c.due_at <= sa.bindparam("now", type_=t.c.due_at.type))
            .order_by(t.c.due_at)
            .limit(batch)
        )
        # SQLite: the writer's BEGIN IMMEDIATE already excludes every other writer.
        self._claim_query = claim.with_for_update(skip_locked=True) if postgres else claim

    def notify(self, due_at: datetime) -> None:
        """A timer due at ``due_at`` was scheduled: look for it if it's due before our next look.

        The scheduling transaction may not have committed yet; the wheel then looks again
        a few times within the next second (10 ms, doubling) before relying on its poll.
        """
        if self._hint is None or due_at < self._hint:
            self._hint = due_at
        if self._wake_at is None or due_at < self._wake_at:
            self.wakeup.set()

    async def next_due(self) -> datetime | None:
        """When the earliest pending timer of our kinds is due (None: none is pending)."""
        async with self._reader.connect() as conn:
            value = (await conn.execute(self._next_due_query)).scalar()
        return None if value is None else _aware(value)

    async def run(self, stop: asyncio.Event) -> None:
        """Fire due timers until ``stop`` is set; the timer in hand is finished first."""
        self.loop = asyncio.get_running_loop()
        _wheels.add(self)
        log.info("timer wheel started", wheel=self.name, kinds=sorted(self.specs))
        quick: float | None = None  # the next quick look's delay, while looking quickly
        try:
            while not stop.is_set():
                self.wakeup.clear()
                hint, self._hint = self._hint, None
                claimed_nothing = False
                try:
                    due = await self.next_due()
                    if due is not None and due <= utcnow():
                        if await self.fire_due(stop):
                            quick = None
                            continue  # more may be due; the next look also finds the next due
                        # Due, yet nothing to claim: another wheel has them in hand.
                        claimed_nothing = True
                except Exception:
                    log_failed_round(log, "timer round failed; retrying", wheel=self.name)
                    await self._sleep(stop, self.poll_interval)
                    continue
                now = utcnow()
                delay = self.poll_interval
                if due is not None:
                    delay = min(delay, (due - now).total_seconds())
                # Announced by schedule() for before our next look, but not in the table
                # yet: its transaction has probably not committed.
                unseen = None
                if hint is not None and (due is None or hint < due):
                    unseen = hint if (hint - now).total_seconds() < delay else None
                if claimed_nothing or unseen is not None:
                    # Look again soon (10 ms, doubling): the timers in other hands will be
                    # done, or the announced one's transaction will have committed.
                    quick = 0.01 if quick is None else quick * 2
                    if quick >= self.poll_interval:
                        quick = None  # the poll will do
                    elif unseen is not None:
                        self._hint = unseen if self._hint is None else min(unseen, self._hint)
                        delay = max((unseen - now).total_seconds(), quick)
                    else:
                        delay = quick
                else:
                    quick = None
                await self._sleep(stop, delay)
        finally:
            _wheels.discard(self)
            self.loop = None
            log.info("timer wheel stopped", wheel=self.name, fired=self.fired)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        """Sleep up to ``seconds``; a wakeup or ``stop`` ends it sooner."""
        if self.wakeup.is_set() or stop.is_set():
            return
        self._wake_at = utcnow() + timedelta(seconds=seconds)
        waiters = [asyncio.ensure_future(self.wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(
                waiters, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._wake_at = None
            for waiter in waiters:
                waiter.cancel()

    async def fire_due(self, stop: asyncio.Event | None = None) -> int:
        """One round: claim up to ``batch`` due timers and fire them in one transaction.

        Returns how many were handled (fired or failed and rescheduled). Once ``stop`` is
        set no further timer of the batch is started; those are left due.
        """
        fired: list[Timer] = []
        failed = 0
        async with self.log.transaction() as tx:
            result = await tx.conn.execute(self._claim_query, {"now": utcnow()})
            for timer in [_timer(row) for row in result]:
                if stop is not None and stop.is_set():
                    break
                if await self._fire(tx, timer):
                    fired.append(timer)
                else:
                    failed += 1
        for timer in fired:
            FIRED.labels(timer.kind).inc()
        self.fired += len(fired)
        return len(fired) + failed

    async def _fire(self, tx: Transaction, timer: Timer) -> bool:
        """Run the handler and mark the timer fired, in a savepoint; False if it failed."""
        spec = self.specs[timer.kind]
        conn = tx.conn
        appended_before = tx.appended  # a failed handler's appends are rolled back
        uow = UnitOfWork(tx, spec.consumer)
        context = structlog.contextvars.bound_contextvars(
            timer_id=str(timer.timer_id), timer_kind=timer.kind, correlation_id=timer.correlation_id
        )
        # The timer continues the trace of the request whose events scheduled it.
        traced = continued(
            f"timer {timer.kind}",
            timer.correlation_id,
            str(timer.timer_id),
            kind=SpanKind.INTERNAL,
            attributes={"caseflow.timer_id": str(timer.timer_id)},
        )
        with context, traced:
            try:
                async with conn.begin_nested():
                    if await uow.claim(timer.timer_id):
                        await spec.handler(timer, uow)
                    else:  # only if fired_at was cleared by hand: never run it twice
                        self.repeats += 1
                        REPEATS.labels(timer.kind).inc()
                        log.warning("timer is in the inbox already; not run again")
                    await conn.execute(_MARK_FIRED, {"tid": timer.timer_id, "at": utcnow()})
            except Exception as err:
                tx.appended = appended_before
                await self._record_failure(conn, timer, err)
                return False
        return True

    async def _record_failure(self, conn: AsyncConnection, timer: Timer, err: Exception) -> None:
        attempts = timer.attempts + 1
        conflict = _is_conflict(err)
        # Conflicts start at 10-50 ms (jittered, so two wheels don't collide again), the
        # others at backoff_base; both double with each attempt, up to backoff_cap.
        base = random.uniform(0.01, 0.05) if conflict else self.backoff_base  # noqa: S311
        delay = min(self.backoff_cap, base * 2 ** min(attempts - 1, 30))
        due = utcnow() + timedelta(seconds=delay)
        error = f"{type(err).__name__}: {err}"[:_MAX_ERROR]
        await conn.execute(_RECORD_FAILURE, {"tid": timer.timer_id, "error": error, "due": due})
        FAILED.labels(timer.kind).inc()
        log.warning(
            "timer handler failed; will retry",
            wheel=self.name,
            attempts=attempts,
            retry_in_seconds=round(delay, 3),
            conflict=conflict,
            error=repr(err),
        )
