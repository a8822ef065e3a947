"""A pre-upgrade event in the log reaches handlers upcast, over the real relay and NATS.

The log keeps the event as stored (schema version 1, its hash still verifies); the
consumer's handler sees version 2, in the log's copy it is given and in the case's history. An event
newer than the code knows is dead-lettered with the reason, never handled.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from shared.adapters import idempotency
from shared.adapters.bus.consumer import Consumer, ConsumerSpec
from shared.adapters.bus.relay import Relay
from shared.adapters.bus.streams import DLQ_STREAM
from shared.adapters.eventlog import EventLog, UnitOfWork
from shared.adapters.eventlog.hashing import HASHED_FIELDS, event_hash
from shared.adapters.idempotency import KeyedRequest
from shared.application.workflow.service import IdempotencyConflict, Outcome
from shared.application.workflow.wiring import case_service
from shared.devtools.waiting import eventually
from shared.domain.events import Actor, NewEvent, StoredEvent
from shared.domain.workflow.engine import Staff
from shared.domain.workflow.reference import load_reference
from tests.bus_helpers import body, stored_messages
from tests.keys import sent

V1_PAYLOAD: dict[str, Any] = {
    "item_code": "pension_enrolment",
    "item_version": 1,
    "applicant": {"name": "王秀英", "phone": "13812345678", "id_number": "11010519491231002X"},
    "materials": ["application_form", "household_register", "id_card"],
    "case_number": "XF-2025-000007",
    "station": "xuefeng_station",
    "workflow": {"name": "station_item", "version": 1},
    "status_before": "",
    "status_after": "received",
    "action": "receive",
}
"""CaseReceived as intake wrote it before the upgrade: no language, no channels."""

CLERK = Actor(user="li.clerk", role="window_clerk", station="xuefeng_station")


def verifies(event: StoredEvent) -> bool:
    return event_hash({name: getattr(event, name) for name in HASHED_FIELDS}) == event.hash


async def append_old(log: EventLog, schema_version: int = 1) -> StoredEvent:
    """A pre-upgrade event, appended as the old code appended it."""
    result = await log.append(
        uuid.uuid4(),
        0,
        [
            NewEvent(
                event_type="CaseReceived",
                schema_version=schema_version,
                actor=CLERK,
                authority="banqiao_town",
                payload=V1_PAYLOAD,
            )
        ],
        case_kind="application",
    )
    return result.events[0]


class Seen:
    """A handler that keeps what it was given (the event, and the case as it read it)."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.histories: list[list[StoredEvent]] = []

    async def __call__(self, event: StoredEvent, uow: UnitOfWork) -> None:
        self.events.append(event)
        self.histories.append(await uow.read_case(event.case_id))


@pytest.fixture
async def bus(
    log: EventLog, nc: NATS, relay_nc: NATS
) -> AsyncIterator[Callable[[Callable[[StoredEvent, UnitOfWork], Awaitable[None]]], None]]:
    """The relay running; ``start(handler)`` runs a consumer of application events (as
    notify's, the name its credential may use)."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(Relay(log, relay_nc.jetstream(), poll_interval=0.05).run(stop))]

    def start(handler: Callable[[StoredEvent, UnitOfWork], Awaitable[None]]) -> None:
        spec = ConsumerSpec(
            name="notify",
            subjects=("caseflow.events.application.>",),
            handler=handler,
            backoff=(0.05,),
            max_deliver=2,
        )
        tasks.append(asyncio.create_task(Consumer(spec, log, nc).run(stop)))

    yield start
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def test_an_old_case_received_reaches_the_handler_as_version_2(
    log: EventLog, nc: NATS, bus: Callable[[Any], None]
) -> None:
    old = await append_old(log)
    seen = Seen()
    bus(seen)
    await eventually(lambda: seen.events, what="the event handed to the handler", timeout=15)

    event = seen.events[0]
    assert event.event_id == old.event_id
    assert event.schema_version == 2
    assert event.payload["language"] == "zh-CN" and event.payload["channels"] == ["sms"]
    assert {k: v for k, v in event.payload.items() if k not in ("language", "channels")} == (
        V1_PAYLOAD
    )
    # The history the handler read in its unit of work is upcast too.
    [first] = seen.histories[0]
    assert first.schema_version == 2 and first.payload["language"] == "zh-CN"
    assert first.hash == old.hash  # the chain link a handler appends after is the stored one

    # The log still holds what was stored, and its hash verifies.
    [kept] = await log.read_case(old.case_id)
    assert kept.schema_version == 1 and kept.payload == V1_PAYLOAD
    assert "language" not in kept.payload
    assert kept.hash == old.hash and verifies(kept)


async def test_a_unit_of_work_reads_old_cases_upcast_without_read_ahead(log: EventLog) -> None:
    old = await append_old(log)
    async with log.transaction() as tx:
        uow = UnitOfWork(tx, "upcast-test")
        [event] = await uow.read_case(old.case_id)
        assert event.schema_version == 2 and event.payload["language"] == "zh-CN"
        # Appending after it links to the stored hash: the chain stays whole.
        result = await uow.append(
            old.case_id,
            1,
            [NewEvent(event_type="CaseAccepted", payload={"item_code": "pension_enrolment"})],
            case_kind="application",
        )
    assert result.events[0].prev_hash == old.hash
    assert all(verifies(e) for e in await log.read_case(old.case_id))


async def test_an_event_newer_than_the_code_is_dead_lettered_with_the_reason(
    log: EventLog, operator_nc: NATS, bus: Callable[[Any], None]
) -> None:
    too_new = await append_old(log, schema_version=3)
    fine = await append_old(log)
    seen = Seen()
    bus(seen)
    await eventually(lambda: seen.events, what="the event handed to the handler", timeout=15)

    [letter] = await stored_messages(operator_nc, DLQ_STREAM, 1, subject="caseflow.dlq.notify")
    headers = letter.headers or {}
    reason = headers["Caseflow-Dead-Letter-Reason"]
    assert "CaseReceived schema version 3 is newer than this code knows (version 2)" in reason
    assert headers["Caseflow-Original-Subject"] == "caseflow.events.application.CaseReceived"
    assert str(too_new.event_id).encode() in body(letter)  # the message, unchanged
    await asyncio.sleep(0.3)
    assert [e.event_id for e in seen.events] == [fine.event_id]  # never handled
    # The stored event itself is kept as it is, for an upgraded consumer to re-drive.
    [kept] = await log.read_case(too_new.case_id)
    assert kept.schema_version == 3 and verifies(kept)


async def test_a_history_holding_an_event_newer_than_the_code_is_not_guessed_at(
    log: EventLog,
) -> None:
    too_new = await append_old(log, schema_version=3)
    async with log.transaction() as tx:
        uow = UnitOfWork(tx, "upcast-test")
        await uow.read_ahead([too_new.case_id])
        with pytest.raises(ValueError, match="schema version 3 is newer"):
            await uow.read_case(too_new.case_id)


async def test_a_retry_answers_a_case_stored_at_an_older_schema_as_it_is_now(
    log: EventLog,
) -> None:
    # A case opened before applicants chose a language; the clerk's Idempotency-Key for it
    # comes again. The retry is recognised by the clerk's recorded request (its
    # fingerprint), not by comparing the stored payload, whatever its schema version.
    old = await append_old(log)
    reference = load_reference()
    service = case_service(log, reference)
    clerk = Staff(user="li.clerk", role="window_clerk", org="xuefeng_station")
    retried = {k: V1_PAYLOAD[k] for k in ("item_code", "item_version", "applicant", "materials")}
    request = sent(clerk, "the-same-key", retried)
    async with log.writer.begin() as conn:
        await idempotency.remember(conn, request, old.case_id)

    async def open_again(request: KeyedRequest) -> Outcome:
        return await service.open_case(
            case_kind="application",
            workflow=reference.workflows.get("station_item", 1),
            staff=clerk,
            start_payload=retried,
            item=None,
            follow_up=None,
            correlation_id=None,
            occurred_at=None,
            request=request,
        )

    outcome = await open_again(request)
    assert outcome.replayed and outcome.state.case_id == old.case_id
    assert outcome.state.case_number == "XF-2025-000007"
    assert outcome.state.status == "received"
    with pytest.raises(IdempotencyConflict):
        await open_again(sent(clerk, "the-same-key", {**retried, "language": "en"}))
    assert len(await log.read_case(old.case_id)) == 1
