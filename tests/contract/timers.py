"""Durable timers on both backends: fired once, on time, across replicas and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from shared.adapters.db import create_engine
from shared.adapters.eventlog import ConcurrencyError, EventLog, UnitOfWork
from shared.adapters.tables.eventlog import inbox
from shared.adapters.tables.timers import timers
from shared.adapters.timers import (
    Timer,
    TimerSpec,
    TimerWheel,
    cancel,
    get,
    make_timer_id,
    schedule,
)
from shared.devtools.waiting import eventually, scaled
from shared.domain.events import NewEvent, utcnow
from shared.settings import ServiceSettings
from shared.web.runtime import Runtime
from tests.services import NOT_LISTENING

KIND = "test_due"
FAST = 0.02  # poll interval of the wheels under test
SLEEPY = scaled(30)
"""A poll interval far longer than any wait of these tests (scaled like them): only a due
time or a schedule() can wake such a wheel in time."""


async def record(timer: Timer, uow: UnitOfWork) -> None:
    """A handler with a visible effect: one 'TimerFired' event on the timer's case.

    It appends at the case's current version, so a second firing would add a second
    event rather than fail on a version conflict.
    """
    version = len(await uow.read_case(timer.case_id))
    await uow.append(
        timer.case_id,
        version,
        [NewEvent(event_type="TimerFired", payload={"timer_id": str(timer.timer_id)})],
        case_kind="timer_test",
    )


def wheel(
    log: EventLog, handler: Callable[[Timer, UnitOfWork], Awaitable[None]] = record, **options: Any
) -> TimerWheel:
    params: dict[str, Any] = {"poll_interval": FAST, "backoff_base": 0.05}
    params.update(options)
    return TimerWheel(log, [TimerSpec(KIND, handler)], **params)


@contextlib.asynccontextmanager
async def running(*wheels: TimerWheel) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in wheels]
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def add(
    log: EventLog, due_at: datetime, *, case_id: uuid.UUID | None = None, **kw: Any
) -> uuid.UUID:
    """Schedule one timer of KIND in a transaction of its own; its case id."""
    case_id = case_id or uuid.uuid4()
    async with log.writer.begin() as conn:
        assert await schedule(
            conn,
            timer_id=kw.pop("timer_id", make_timer_id(case_id, KIND)),
            case_id=case_id,
            kind=KIND,
            due_at=due_at,
            payload=kw.pop("payload", {"n": 1}),
            **kw,
        )
    return case_id


async def stored(log: EventLog, case_id: uuid.UUID) -> Timer:
    async with log.engine.connect() as conn:
        timer = await get(conn, make_timer_id(case_id, KIND))
    assert timer is not None
    return timer


async def fired_events(log: EventLog, case_id: uuid.UUID) -> int:
    return len([e for e in await log.read_case(case_id) if e.event_type == "TimerFired"])


async def inbox_rows(log: EventLog) -> int:
    async with log.engine.connect() as conn:
        query = sa.select(sa.func.count()).where(inbox.c.consumer == f"timer:{KIND}")
        return int((await conn.execute(query)).scalar_one())


def has_fired(log: EventLog, case_id: uuid.UUID) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await stored(log, case_id)).fired_at is not None

    return check


async def test_due_timer_fires_once_and_its_event_is_in_the_log(log: EventLog) -> None:
    due = utcnow() - timedelta(seconds=1)
    case_id = await add(log, due, payload={"clock": "yellow"}, correlation_id="corr-1")
    w = wheel(log)
    async with running(w):
        await eventually(has_fired(log, case_id), what="the timer to fire", interval=FAST)
        await asyncio.sleep(10 * FAST)  # a few more rounds: nothing fires again
    timer = await stored(log, case_id)
    assert timer.attempts == 1
    assert timer.last_error is None
    assert timer.payload == {"clock": "yellow"}
    assert timer.correlation_id == "corr-1"
    assert timer.due_at == due
    events = await log.read_case(case_id)
    assert [e.event_type for e in events] == ["TimerFired"]
    assert events[0].payload == {"timer_id": str(timer.timer_id)}
    assert await inbox_rows(log) == 1
    assert w.fired == 1


async def test_future_timer_does_not_fire_early(log: EventLog) -> None:
    due = utcnow() + timedelta(seconds=3)
    case_id = await add(log, due)
    async with running(wheel(log)):
        await asyncio.sleep(0.3)
        assert utcnow() < due, "the machine was too slow to check before the due time"
        assert (await stored(log, case_id)).fired_at is None
        assert await fired_events(log, case_id) == 0
        await eventually(
            has_fired(log, case_id), what="the timer to fire", timeout=15, interval=FAST
        )
    timer = await stored(log, case_id)
    assert timer.fired_at is not None and timer.fired_at >= due
    (event,) = await log.read_case(case_id)
    assert event.recorded_at >= due


async def test_wheel_sleeps_only_until_the_next_due_time(log: EventLog) -> None:
    due = utcnow() + timedelta(seconds=0.3)
    case_id = await add(log, due)
    # A poll interval far longer than the test: only the due time can wake the wheel.
    async with running(wheel(log, poll_interval=SLEEPY)):
        await eventually(
            has_fired(log, case_id), what="the timer to fire", timeout=3, interval=FAST
        )
    timer = await stored(log, case_id)
    assert timer.fired_at is not None and timer.fired_at >= due


async def test_schedule_wakes_a_sleeping_wheel(log: EventLog) -> None:
    w = wheel(log, poll_interval=SLEEPY)
    async with running(w):
        await asyncio.sleep(0.2)  # the wheel found nothing and sleeps for 30 s
        case_id = await add(log, utcnow())
        await eventually(
            has_fired(log, case_id), what="the timer to fire", timeout=3, interval=FAST
        )


async def test_schedule_wakes_the_wheel_even_before_it_commits(log: EventLog) -> None:
    """schedule() tells the wheel before the commit; the wheel looks again until it's there."""
    w = wheel(log, poll_interval=SLEEPY)
    async with running(w):
        await asyncio.sleep(0.2)  # the wheel found nothing and sleeps for 30 s
        case_id = uuid.uuid4()
        async with log.writer.begin() as conn:
            await schedule(
                conn,
                timer_id=make_timer_id(case_id, KIND),
                case_id=case_id,
                kind=KIND,
                due_at=utcnow(),
                payload={},
            )
            await asyncio.sleep(0.15)  # the wheel wakes and finds nothing committed yet
            async with log.engine.connect() as other:
                assert await get(other, make_timer_id(case_id, KIND)) is None
        await eventually(
            has_fired(log, case_id), what="the timer to fire", timeout=3, interval=FAST
        )


async def test_two_wheels_fire_each_of_200_timers_exactly_once(log: EventLog, db_url: str) -> None:
    now = utcnow()
    case_ids = [uuid.uuid4() for _ in range(200)]
    async with log.writer.begin() as conn:
        for i, case_id in enumerate(case_ids):
            await schedule(
                conn,
                timer_id=make_timer_id(case_id, KIND),
                case_id=case_id,
                kind=KIND,
                due_at=now - timedelta(milliseconds=i),
                payload={"i": i},
            )

    async def slow_record(timer: Timer, uow: UnitOfWork) -> None:
        await record(timer, uow)
        await asyncio.sleep(0.001)  # let the two wheels' batches overlap

    other_engine = create_engine(db_url)  # a second replica: its own engine and pool
    try:
        other_log = EventLog(other_engine)
        a = wheel(log, slow_record, batch=10, name="a")
        b = wheel(other_log, slow_record, batch=10, name="b")
        async with running(a, b):

            async def all_fired() -> bool:
                async with log.engine.connect() as conn:
                    query = sa.select(sa.func.count()).where(timers.c.fired_at.is_(None))
                    return int((await conn.execute(query)).scalar_one()) == 0

            await eventually(all_fired, what="every timer to fire", timeout=60, interval=FAST)
            await asyncio.sleep(10 * FAST)
    finally:
        await other_engine.dispose()

    counts = [await fired_events(log, case_id) for case_id in case_ids]
    assert counts == [1] * 200
    assert await inbox_rows(log) == 200
    assert a.fired + b.fired == 200
    # The claim itself is exclusive: the inbox never had to stop a second firing.
    assert a.repeats + b.repeats == 0
    async with log.engine.connect() as conn:
        attempts = (await conn.execute(sa.select(timers.c.attempts))).scalars().all()
    assert sorted(attempts) == [1] * 200
    if log.engine.dialect.name == "postgresql":
        # Both replicas took part (SKIP LOCKED lets them work side by side).
        assert a.fired > 0 and b.fired > 0, (a.fired, b.fired)
    print(f"fired by wheel a: {a.fired}, by wheel b: {b.fired}")


async def test_a_timer_in_the_inbox_is_not_run_again(log: EventLog) -> None:
    """The inbox is a second guard: even a timer whose mark was cleared by hand won't rerun."""
    case_id = await add(log, utcnow())
    w = wheel(log)
    assert await w.fire_due() == 1
    async with log.writer.begin() as conn:
        await conn.execute(sa.update(timers).values(fired_at=None))
    assert await w.fire_due() == 1
    assert w.repeats == 1
    assert await fired_events(log, case_id) == 1
    assert (await stored(log, case_id)).fired_at is not None


async def test_timer_survives_a_restart(db_url: str) -> None:
    first = create_engine(db_url)
    first_log = EventLog(first)
    due = utcnow() + timedelta(seconds=0.3)
    case_id = await add(first_log, due)
    async with running(wheel(first_log)):
        await asyncio.sleep(0.05)  # running, then stopped before the timer is due
    await first.dispose()

    second = create_engine(db_url)  # the restarted process
    second_log = EventLog(second)
    try:
        assert (await stored(second_log, case_id)).fired_at is None
        async with running(wheel(second_log)):
            await eventually(
                has_fired(second_log, case_id), what="the restarted wheel to fire", interval=FAST
            )
            await asyncio.sleep(10 * FAST)
        assert await fired_events(second_log, case_id) == 1
    finally:
        await second.dispose()


async def test_crash_before_commit_fires_again_after_restart(db_url: str) -> None:
    """A process killed inside a handler leaves nothing behind, and the timer still fires."""
    first = create_engine(db_url)
    first_log = EventLog(first)
    case_id = await add(first_log, utcnow())
    in_handler = asyncio.Event()

    async def append_then_hang(timer: Timer, uow: UnitOfWork) -> None:
        await record(timer, uow)  # appended, not committed
        in_handler.set()
        await asyncio.Event().wait()  # never returns: the process dies here

    task = asyncio.create_task(wheel(first_log, append_then_hang).run(asyncio.Event()))
    await asyncio.wait_for(in_handler.wait(), 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await first.dispose()

    second = create_engine(db_url)
    second_log = EventLog(second)
    try:
        timer = await stored(second_log, case_id)
        assert timer.fired_at is None and timer.attempts == 0
        assert await fired_events(second_log, case_id) == 0
        async with running(wheel(second_log)):
            await eventually(
                has_fired(second_log, case_id), what="the timer to fire again", interval=FAST
            )
        assert await fired_events(second_log, case_id) == 1
        assert (await stored(second_log, case_id)).attempts == 1
    finally:
        await second.dispose()


async def test_another_wheel_fires_at_once_when_the_one_firing_dies(db_url: str) -> None:
    """Timers have no lease to run out: a claim is a row lock (PostgreSQL) or the write lock
    (SQLite), gone with the dying wheel's transaction, so the other wheel fires at once."""
    engines = [create_engine(db_url), create_engine(db_url)]  # two processes' engines
    logs = [EventLog(e) for e in engines]
    try:
        case_id = await add(logs[0], utcnow())
        in_handler = asyncio.Event()

        async def hang(timer: Timer, uow: UnitOfWork) -> None:
            await record(timer, uow)
            in_handler.set()
            await asyncio.Event().wait()  # the process dies here

        dying = asyncio.create_task(wheel(logs[0], hang, poll_interval=1.0).run(asyncio.Event()))
        await asyncio.wait_for(in_handler.wait(), 10)
        async with running(wheel(logs[1], poll_interval=1.0)):
            await asyncio.sleep(0.5)  # the other wheel runs and can't claim it meanwhile
            assert (await stored(logs[1], case_id)).fired_at is None
            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            dying.cancel()  # as a kill: nothing given back but what the database frees
            with contextlib.suppress(asyncio.CancelledError):
                await dying
            await eventually(
                has_fired(logs[1], case_id), what="the other wheel to fire", interval=FAST
            )
            handover = loop.time() - killed_at
        print(f"timer handover after a kill ({engines[0].dialect.name}): {handover:.2f} s")
        assert handover < scaled(3.0)  # the other wheel polls every second
        assert await fired_events(logs[1], case_id) == 1
    finally:
        for engine in engines:
            await engine.dispose()


async def test_failing_handler_is_retried_with_backoff_until_it_succeeds(log: EventLog) -> None:
    due = utcnow()
    case_id = await add(log, due)
    seen: list[Timer] = []

    async def flaky(timer: Timer, uow: UnitOfWork) -> None:
        seen.append(timer)
        await record(timer, uow)  # rolled back with the failure
        if len(seen) < 3:
            raise ValueError(f"flaky failure {len(seen)}")

    async with running(wheel(log, flaky, backoff_base=0.1)):
        await eventually(has_fired(log, case_id), what="the timer to fire", interval=FAST)
    timer = await stored(log, case_id)
    assert timer.attempts == 3
    assert timer.last_error == "ValueError: flaky failure 2"
    assert await fired_events(log, case_id) == 1
    assert [t.attempts for t in seen] == [0, 1, 2]
    assert seen[1].last_error == "ValueError: flaky failure 1"
    # Exponential backoff: 0.1 s after the first failure, 0.2 s after the second.
    assert seen[1].due_at - seen[0].due_at >= timedelta(seconds=0.1)
    assert seen[2].due_at - seen[1].due_at >= timedelta(seconds=0.2)
    assert timer.fired_at is not None and timer.fired_at >= seen[2].due_at


async def test_a_failing_timer_does_not_hold_back_the_others(log: EventLog) -> None:
    bad = await add(log, utcnow() - timedelta(seconds=1), payload={"fail": True})
    good = [await add(log, utcnow()) for _ in range(4)]

    async def fails_on_request(timer: Timer, uow: UnitOfWork) -> None:
        await record(timer, uow)
        if timer.payload.get("fail"):
            raise RuntimeError("this timer always fails")

    async with running(wheel(log, fails_on_request, backoff_base=0.05, backoff_cap=0.05)):
        for case_id in good:
            await eventually(has_fired(log, case_id), what="the timer to fire", interval=FAST)

        async def retried() -> bool:
            return (await stored(log, bad)).attempts >= 3

        await eventually(retried, what="the failing timer's third attempt", interval=FAST)
    timer = await stored(log, bad)
    assert timer.fired_at is None
    assert timer.last_error == "RuntimeError: this timer always fails"
    assert await fired_events(log, bad) == 0
    assert [await fired_events(log, c) for c in good] == [1, 1, 1, 1]


async def test_conflicts_are_retried_promptly(log: EventLog) -> None:
    case_id = await add(log, utcnow())
    calls = 0

    async def conflicts_once(timer: Timer, uow: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConcurrencyError(timer.case_id, 0, 1)
        await record(timer, uow)

    # An ordinary failure would wait a minute before its retry.
    started = asyncio.get_running_loop().time()
    async with running(wheel(log, conflicts_once, backoff_base=60, backoff_cap=60)):
        await eventually(
            has_fired(log, case_id), what="the timer to fire", timeout=30, interval=FAST
        )
    # retried at once, not after the minute an ordinary failure waits
    # (scaled with the other waits, but always well short of that minute)
    assert asyncio.get_running_loop().time() - started < min(scaled(10.0), 45.0)
    timer = await stored(log, case_id)
    assert timer.attempts == 2
    assert timer.last_error is not None and timer.last_error.startswith("ConcurrencyError")
    assert await fired_events(log, case_id) == 1


async def test_scheduling_the_same_timer_twice_yields_one_timer(log: EventLog) -> None:
    case_id = uuid.uuid4()
    timer_id = make_timer_id(case_id, KIND, "first-warning")
    assert timer_id == make_timer_id(case_id, KIND, "first-warning")
    assert timer_id != make_timer_id(case_id, KIND, "second-warning")
    first_due = utcnow()
    results = []
    for due, payload in ((first_due, {"v": 1}), (first_due + timedelta(hours=1), {"v": 2})):
        async with log.writer.begin() as conn:
            results.append(
                await schedule(
                    conn,
                    timer_id=timer_id,
                    case_id=case_id,
                    kind=KIND,
                    due_at=due,
                    payload=payload,
                )
            )
    assert results == [True, False]
    async with log.engine.connect() as conn:
        rows = (await conn.execute(sa.select(timers.c.timer_id, timers.c.payload))).all()
    assert [(r.timer_id, r.payload) for r in rows] == [(timer_id, {"v": 1})]

    async def fired() -> bool:
        async with log.engine.connect() as conn:
            timer = await get(conn, timer_id)
        return timer is not None and timer.fired_at is not None

    async with running(wheel(log)):
        await eventually(fired, what="the timer to fire", interval=FAST)
        # Scheduled again after it fired (a replayed command): still nothing new.
        async with log.writer.begin() as conn:
            again = await schedule(
                conn, timer_id=timer_id, case_id=case_id, kind=KIND, due_at=utcnow(), payload={}
            )
        assert again is False
        await asyncio.sleep(10 * FAST)
    assert await fired_events(log, case_id) == 1


async def test_cancelled_timer_never_fires(log: EventLog) -> None:
    cancelled = await add(log, utcnow() + timedelta(seconds=0.1))
    kept = await add(log, utcnow() + timedelta(seconds=0.1))
    async with log.writer.begin() as conn:
        assert await cancel(conn, make_timer_id(cancelled, KIND)) is True
        assert await cancel(conn, make_timer_id(cancelled, KIND)) is False
        assert await cancel(conn, uuid.uuid4()) is False
    async with running(wheel(log)):
        await eventually(has_fired(log, kept), what="the kept timer to fire", interval=FAST)
        await asyncio.sleep(10 * FAST)
    timer = await stored(log, cancelled)
    assert timer.fired_at is None and timer.cancelled_at is not None
    assert await fired_events(log, cancelled) == 0
    async with log.writer.begin() as conn:
        assert await cancel(conn, make_timer_id(kept, KIND)) is False  # fired already


async def test_stop_finishes_the_timer_in_hand(log: EventLog) -> None:
    now = utcnow()
    first = await add(log, now - timedelta(seconds=2))
    second = await add(log, now - timedelta(seconds=1))
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(timer: Timer, uow: UnitOfWork) -> None:
        entered.set()
        await release.wait()
        await record(timer, uow)

    stop = asyncio.Event()
    task = asyncio.create_task(wheel(log, slow, batch=10).run(stop))
    await asyncio.wait_for(entered.wait(), 5)
    stop.set()
    release.set()
    await asyncio.wait_for(task, 5)
    assert (await stored(log, first)).fired_at is not None
    assert await fired_events(log, first) == 1
    # The next timer of the same batch was not started: it is still due.
    assert (await stored(log, second)).fired_at is None


async def test_runtime_fires_timers_without_waiting_for_nats(db_url: str) -> None:
    settings = ServiceSettings(
        database_url=db_url,
        nats_url=NOT_LISTENING,  # NATS stays unconnected
        relay=False,
        shutdown_grace_seconds=0.5,
    )
    runtime = Runtime("timers-test", settings, timers=[TimerSpec(KIND, record)])
    assert runtime.timers is not None
    await runtime.start()
    try:
        case_id = await add(runtime.log, utcnow())
        await eventually(
            has_fired(runtime.log, case_id), what="the timer to fire", timeout=5, interval=FAST
        )
        assert await fired_events(runtime.log, case_id) == 1
    finally:
        await runtime.shutdown()
    assert runtime.timers.loop is None  # the wheel stopped


def test_specs_and_times_are_checked() -> None:
    with pytest.raises(ValueError, match="timer kind"):
        TimerSpec("Has Spaces", record)
    with pytest.raises(ValueError, match="timer kind"):
        TimerSpec("x" * 59, record)
    assert TimerSpec("x" * 58, record).consumer == "timer:" + "x" * 58


async def test_naive_due_times_are_refused(log: EventLog) -> None:
    async with log.writer.begin() as conn:
        with pytest.raises(ValueError, match="timezone-aware"):
            await schedule(
                conn,
                timer_id=uuid.uuid4(),
                case_id=uuid.uuid4(),
                kind=KIND,
                due_at=datetime(2026, 1, 1, 9, 0),  # naive: the point of the test
                payload={},
            )


async def test_due_times_in_other_zones_are_stored_as_utc(log: EventLog) -> None:
    # An hour ago, written in UTC+8: its wall time is seven hours ahead of UTC now, so a
    # store that kept the wall time (SQLite keeps no zone) would think it is not due.
    due = (utcnow() - timedelta(hours=1)).astimezone(timezone(timedelta(hours=8)))
    case_id = await add(log, due)
    timer = await stored(log, case_id)
    assert timer.due_at == due
    assert timer.due_at.utcoffset() == timedelta(0)
    w = wheel(log)
    assert await w.next_due() == due
    assert await w.fire_due() == 1
    assert await fired_events(log, case_id) == 1
