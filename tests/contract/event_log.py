"""One suite for the event log, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.adapters.eventlog import (
    START,
    ConcurrencyError,
    DuplicateEventError,
    EventLog,
    LogCursor,
)
from shared.adapters.eventlog.hashing import event_hash
from shared.domain.events import Actor, NewEvent

CLERK = Actor(user="clerk-1", role="window_clerk", station="XF")


def ev(event_type: str = "CaseReceived", **payload: object) -> NewEvent:
    return NewEvent(event_type=event_type, actor=CLERK, payload=dict(payload))


async def test_append_assigns_versions_positions_and_links_hashes(log: EventLog) -> None:
    case = uuid.uuid4()
    first = await log.append(case, 0, [ev(n=1), ev("CaseAccepted", n=2)], case_kind="pension")
    second = await log.append(case, 2, [ev("CaseClosed")], case_kind="pension")

    stored = await log.read_case(case)
    assert [e.version for e in stored] == [1, 2, 3]
    assert [e.event_type for e in stored] == ["CaseReceived", "CaseAccepted", "CaseClosed"]
    assert stored[0].prev_hash is None
    assert [e.prev_hash for e in stored[1:]] == [e.hash for e in stored[:-1]]
    assert first.version == 2 and second.version == 3
    assert stored[0].position < stored[1].position < stored[2].position
    assert [e.hash for e in first.events + second.events] == [e.hash for e in stored]


async def test_stored_hash_recomputes_from_what_was_read(log: EventLog) -> None:
    case = uuid.uuid4()
    await log.append(
        case, 0, [ev(name="张三", amount=12.5, items=[1, {"b": 2, "a": None}])], case_kind="pension"
    )
    (stored,) = await log.read_case(case)
    fields = {f: getattr(stored, f) for f in stored.__slots__}
    assert event_hash(fields) == stored.hash
    assert stored.payload["name"] == "张三"
    assert stored.actor_station == "XF" and stored.occurred_at.tzinfo is not None


async def test_stale_expected_version_raises_concurrency_error(log: EventLog) -> None:
    case = uuid.uuid4()
    await log.append(case, 0, [ev()], case_kind="pension")
    with pytest.raises(ConcurrencyError) as err:
        await log.append(case, 0, [ev("CaseAccepted")], case_kind="pension")
    assert (err.value.expected, err.value.actual) == (0, 1)
    with pytest.raises(ConcurrencyError):
        await log.append(case, 5, [ev("CaseAccepted")], case_kind="pension")
    assert len(await log.read_case(case)) == 1


async def test_concurrent_appends_at_same_version_one_wins(log: EventLog) -> None:
    case = uuid.uuid4()
    await log.append(case, 0, [ev()], case_kind="pension")
    results = await asyncio.gather(
        *(log.append(case, 1, [ev("CaseAccepted", i=i)], case_kind="pension") for i in range(6)),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, ConcurrencyError)]
    assert len(wins) == 1 and len(losses) == 5
    assert [e.version for e in await log.read_case(case)] == [1, 2]


async def test_retried_append_returns_original_result(log: EventLog) -> None:
    case = uuid.uuid4()
    batch = [ev(), ev("CaseAccepted")]
    original = await log.append(case, 0, batch, case_kind="pension")
    again = await log.append(case, 0, batch, case_kind="pension")
    assert again.replayed and not original.replayed
    assert [e.position for e in again.events] == [e.position for e in original.events]
    assert again.version == original.version == 2
    assert len(await log.read_case(case)) == 2


async def test_partial_overlap_is_an_error(log: EventLog) -> None:
    case = uuid.uuid4()
    first = ev()
    await log.append(case, 0, [first], case_kind="pension")
    with pytest.raises(DuplicateEventError):
        await log.append(case, 0, [first, ev("CaseAccepted")], case_kind="pension")
    with pytest.raises(DuplicateEventError):
        await log.append(case, 1, [first, ev("CaseAccepted")], case_kind="pension")
    assert len(await log.read_case(case)) == 1


async def test_event_id_reused_in_another_case_is_an_error(log: EventLog) -> None:
    shared_event = ev()
    await log.append(uuid.uuid4(), 0, [shared_event], case_kind="pension")
    with pytest.raises(DuplicateEventError):
        await log.append(uuid.uuid4(), 0, [shared_event], case_kind="pension")


async def test_append_is_all_or_nothing(log: EventLog) -> None:
    taken = ev()
    await log.append(uuid.uuid4(), 0, [taken], case_kind="pension")
    case = uuid.uuid4()
    with pytest.raises(DuplicateEventError):
        await log.append(case, 0, [ev(), ev(), taken], case_kind="pension")
    assert await log.read_case(case) == []


async def test_read_all_pages_in_order_without_repeats(log: EventLog) -> None:
    cases = [uuid.uuid4() for _ in range(5)]
    for i, case in enumerate(cases):
        await log.append(case, 0, [ev(i=i), ev("CaseAccepted", i=i)], case_kind="pension")
    seen = []
    cursor = START
    while page := await log.read_all(cursor, limit=3):
        seen.extend(page)
        cursor = LogCursor.after(page[-1])
    assert len(seen) == 10
    assert len({e.event_id for e in seen}) == 10
    assert [e.position for e in seen] == sorted(e.position for e in seen)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET event_type = 'Forged'",
        "DELETE FROM events",
    ],
)
async def test_database_refuses_update_and_delete(
    log: EventLog, engine: AsyncEngine, statement: str
) -> None:
    case = uuid.uuid4()
    await log.append(case, 0, [ev()], case_kind="pension")
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(sa.text(statement))
    (stored,) = await log.read_case(case)
    assert stored.event_type == "CaseReceived"


async def test_unknown_case_reads_empty(log: EventLog) -> None:
    assert await log.read_case(uuid.uuid4()) == []
