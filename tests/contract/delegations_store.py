"""Delegations in the log, on both backends: commands, the index, the registry."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from shared.adapters import delegations as store
from shared.adapters.db import create_engine
from shared.adapters.eventlog import ConcurrencyError, DuplicateEventError, EventLog
from shared.adapters.tables.delegations import delegation_index
from shared.domain.delegation import (
    CASE_KIND,
    DelegationStatus,
    IllegalDelegationChange,
    Instrument,
    Mode,
    Power,
    delegation_case_id,
)
from shared.domain.events import Actor, NewEvent

OFFICER = Actor(user="li.officer", role="department_officer", station="hc_hrss")
AT = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def instrument(**changes: Any) -> Instrument:
    fields: dict[str, Any] = {
        "code": "hrss-xuefeng-2021",
        "delegator": "hc_hrss",
        "delegate": "xuefeng_station",
        "mode": Mode.ENTRUSTED,
        "items": ["pension_enrolment"],
        "powers": list(Power),
        "legal_basis": "《中华人民共和国行政许可法》第二十四条",
        "document_number": "韩人社发〔2021〕45号",
        "published_on": date(2021, 11, 10),
        "valid_from": date(2021, 11, 14),
    }
    fields.update(changes)
    return Instrument(**fields)


async def index_rows(log: EventLog) -> list[tuple[Any, ...]]:
    async with log.engine.connect() as conn:
        rows = await conn.execute(sa.select(delegation_index).order_by(delegation_index.c.code))
        return [tuple(r) for r in rows]


async def test_a_delegations_life_is_versions_one_to_five(log: EventLog) -> None:
    code = "hrss-xuefeng-2021"
    published = await store.publish(log, instrument(), actor=OFFICER, at=AT)
    wider = instrument(items=["pension_enrolment", "funeral_subsidy"])
    amended = await store.amend(
        log, wider, reason="丧葬补助金一并委托", actor=OFFICER, at=AT, expected_version=1
    )
    suspended = await store.suspend(log, code, reason="station audit", actor=OFFICER, at=AT)
    resumed = await store.resume(log, code, reason="audit passed", actor=OFFICER, at=AT)
    revoked = await store.revoke(log, code, reason="station closed", actor=OFFICER, at=AT)

    outcomes = [published, amended, suspended, resumed, revoked]
    assert [o.state.version for o in outcomes] == [1, 2, 3, 4, 5]
    assert [o.state.status for o in outcomes] == [
        DelegationStatus.ACTIVE,
        DelegationStatus.ACTIVE,
        DelegationStatus.SUSPENDED,
        DelegationStatus.ACTIVE,
        DelegationStatus.REVOKED,
    ]
    assert not any(o.replayed for o in outcomes)

    events = await log.read_case(delegation_case_id(code))
    assert [(e.version, e.event_type) for e in events] == [
        (1, "DelegationPublished"),
        (2, "DelegationAmended"),
        (3, "DelegationSuspended"),
        (4, "DelegationResumed"),
        (5, "DelegationRevoked"),
    ]
    assert {e.case_kind for e in events} == {CASE_KIND}
    assert {(e.actor_user, e.actor_station, e.authority) for e in events} == {
        ("li.officer", "hc_hrss", "hc_hrss")
    }
    assert events[1].payload["reason"] == "丧葬补助金一并委托"

    # One index row, written with the publication and unchanged since.
    assert await index_rows(log) == [(code, delegation_case_id(code), "hc_hrss", "xuefeng_station")]
    registry = store.DelegationRegistry(log)
    state = await registry.get(code)
    assert state is not None
    assert (state.version, state.status, state.instrument) == (5, DelegationStatus.REVOKED, wider)
    assert [s.code for s in await registry.for_delegate("xuefeng_station")] == [code]
    assert await registry.for_delegate("longmen_station") == []
    assert [s.code for s in await registry.for_delegator("hc_hrss")] == [code]
    assert await registry.get("nope-404") is None


async def test_a_failed_append_leaves_no_index_row(log: EventLog) -> None:
    taken = uuid.uuid4()
    await log.append(uuid.uuid4(), 0, [NewEvent(event_id=taken, event_type="Other")], case_kind="x")
    with pytest.raises(DuplicateEventError):
        await store.publish(log, instrument(), actor=OFFICER, at=AT, event_id=taken)
    assert await index_rows(log) == []
    assert await log.read_case(delegation_case_id("hrss-xuefeng-2021")) == []
    assert await store.DelegationRegistry(log).all() == []


async def test_a_rolled_back_transaction_takes_events_and_index_row(log: EventLog) -> None:
    async with log.writer.connect() as conn:
        await conn.begin()
        outcome = await store.publish(conn, instrument(), actor=OFFICER, at=AT)
        assert outcome.state.version == 1
        # Inside the transaction the registry sees it…
        seen = await store.for_delegate(conn, "xuefeng_station")
        assert [s.code for s in seen] == ["hrss-xuefeng-2021"]
        await conn.rollback()
    # …and afterwards nothing is left.
    assert await index_rows(log) == []
    assert await store.for_delegate(log, "xuefeng_station") == []


async def test_publishing_twice(log: EventLog) -> None:
    key = uuid.uuid4()
    first = await store.publish(log, instrument(), actor=OFFICER, at=AT, event_id=key)
    retry = await store.publish(log, instrument(), actor=OFFICER, at=AT, event_id=key)
    assert retry.replayed
    assert retry.events == first.events
    with pytest.raises(IllegalDelegationChange, match="published already"):
        await store.publish(log, instrument(), actor=OFFICER, at=AT)
    assert len(await log.read_case(delegation_case_id("hrss-xuefeng-2021"))) == 1
    assert len(await index_rows(log)) == 1


async def test_concurrent_publications_of_one_code_leave_one(db_url: str) -> None:
    # Two processes (engines) publish the same code at once.
    engines = [create_engine(db_url) for _ in range(2)]
    try:
        logs = [EventLog(e) for e in engines]
        results = await asyncio.gather(
            *(store.publish(lg, instrument(), actor=OFFICER, at=AT) for lg in logs),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, store.DelegationOutcome)]
        losses = [r for r in results if isinstance(r, Exception)]
        assert len(wins) == 1, results
        assert len(losses) == 1 and isinstance(
            losses[0], IllegalDelegationChange | ConcurrencyError
        )
        assert len(await index_rows(logs[0])) == 1
        assert len(await logs[0].read_case(delegation_case_id("hrss-xuefeng-2021"))) == 1
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_stale_expected_version_is_refused(log: EventLog) -> None:
    await store.publish(log, instrument(), actor=OFFICER, at=AT)
    await store.suspend(log, "hrss-xuefeng-2021", reason="audit", actor=OFFICER, at=AT)
    with pytest.raises(ConcurrencyError):
        await store.resume(
            log, "hrss-xuefeng-2021", reason="ok", actor=OFFICER, at=AT, expected_version=1
        )


async def test_a_retried_command_is_answered_from_the_log(log: EventLog) -> None:
    await store.publish(log, instrument(), actor=OFFICER, at=AT)
    key = uuid.uuid4()
    first = await store.suspend(
        log, "hrss-xuefeng-2021", reason="audit", actor=OFFICER, at=AT, event_id=key
    )
    again = await store.suspend(
        log, "hrss-xuefeng-2021", reason="audit", actor=OFFICER, at=AT, event_id=key
    )
    assert again.replayed and again.events == first.events
    assert again.state.version == 2


async def test_the_registry_cache_sees_another_processs_changes(db_url: str) -> None:
    ours, theirs = create_engine(db_url), create_engine(db_url)
    try:
        log, other = EventLog(ours), EventLog(theirs)
        await store.publish(log, instrument(), actor=OFFICER, at=AT)
        registry = store.registry_for(log)
        assert registry is store.registry_for(log)
        (before,) = await registry.for_delegate("xuefeng_station")
        (cached,) = await registry.for_delegate("xuefeng_station")
        assert cached is before  # served from the cache: nothing moved
        await store.suspend(other, "hrss-xuefeng-2021", reason="audit", actor=OFFICER, at=AT)
        await store.publish(
            other,
            instrument(
                code="health-xuefeng-2021", delegator="hc_health", items=["birth_certificate"]
            ),
            actor=OFFICER,
            at=AT,
        )
        after = await registry.for_delegate("xuefeng_station")
        assert [(s.code, s.version, s.status.value) for s in after] == [
            ("health-xuefeng-2021", 1, "active"),
            ("hrss-xuefeng-2021", 2, "suspended"),
        ]
        assert len(await registry.all()) == 2
    finally:
        await ours.dispose()
        await theirs.dispose()


async def test_seeding_publishes_each_instrument_once(log: EventLog) -> None:
    seed = store.load_seed_delegations()
    first = await store.publish_seed(log)
    assert [o.state.code for o in first] == [i.code for i in seed]
    assert {o.state.version for o in first} == {1}
    assert await store.publish_seed(log) == []  # nothing new the second time
    rows = await index_rows(log)
    assert len(rows) == len(seed)
    xuefeng = await store.registry_for(log).for_delegate("xuefeng_station")
    assert {s.code for s in xuefeng} == {i.code for i in seed if i.delegate == "xuefeng_station"}
    pension = next(s for s in xuefeng if s.code == "hrss-xuefeng-2021")
    assert pension.history[0].actor == Actor(
        user="seed", role="department_officer", station="hc_hrss"
    )
    assert pension.published_at == datetime(2021, 11, 9, 16, 0, tzinfo=UTC)  # 10 Nov, 00:00 CST
