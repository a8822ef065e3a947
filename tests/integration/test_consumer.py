"""Consumers: exactly-once effects under redelivery, dead letters, and a NATS restart.

The consumer under test runs on notify's connection under notify's consumer name (the
only one notify's credential may create and pull from); events reach the stream through
the relay's connection, the only one allowed to publish them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import RawStreamMsg

from shared.adapters.bus.consumer import Consumer, ConsumerSpec
from shared.adapters.bus.relay import Relay
from shared.adapters.bus.streams import DLQ_STREAM, EVENTS_STREAM, declare_streams
from shared.adapters.eventlog import EventLog, UnitOfWork
from shared.adapters.tables.eventlog import inbox
from shared.devtools import servers as devservers
from shared.devtools.waiting import eventually
from shared.domain.events import NewEvent, StoredEvent
from shared.domain.upcasting import upcast
from tests.bus_helpers import body, stored_messages
from tests.services import connect_as, session_bus

TALLY = uuid.UUID(int=1)
CONSUMER = "notify"
"""A consumer name notify's credential may use."""


async def tally(event: StoredEvent, uow: UnitOfWork) -> None:
    """A handler with a visible effect: one 'Handled' event per source event, random ids."""
    if event.payload.get("poison"):
        raise ValueError("this payload can never be handled")
    version = len(await uow.read_case(TALLY))
    await uow.append(
        TALLY,
        version,
        [NewEvent(event_type="Handled", causation_id=str(event.event_id))],
        case_kind="tally",
    )


def spec(**overrides: object) -> ConsumerSpec:
    params: dict[str, object] = {
        "name": CONSUMER,
        "subjects": ("caseflow.events.application.>",),
        "handler": tally,
        "backoff": (0.05, 0.1, 0.1),
        "max_deliver": 3,
    }
    params.update(overrides)
    return ConsumerSpec(**params)  # type: ignore[arg-type]


async def _append(log: EventLog, n: int, **payload: object) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    for _ in range(n):
        result = await log.append(
            uuid.uuid4(),
            0,
            [NewEvent(event_type="CaseReceived", payload=payload)],
            case_kind="application",
        )
        ids.append(result.events[0].event_id)
    return ids


async def _handled(log: EventLog) -> list[str]:
    return [str(e.causation_id) for e in await log.read_case(TALLY)]


@pytest.fixture
async def running(log: EventLog, relay_nc: NATS) -> AsyncIterator[Callable[[Consumer], None]]:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    relay = Relay(log, relay_nc.jetstream(), poll_interval=0.05)
    tasks.append(asyncio.create_task(relay.run(stop)))

    def start(consumer: Consumer) -> None:
        tasks.append(asyncio.create_task(consumer.run(stop)))

    yield start
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def test_each_event_has_its_effect_once(
    log: EventLog, nc: NATS, relay_nc: NATS, running: Callable[[Consumer], None]
) -> None:
    ids = await _append(log, 30)
    running(Consumer(spec(), log, nc))
    await eventually(lambda: _has(log, 30), what="30 events handled")
    # NATS delivers the same event again (as after a lost ack): the inbox stops it.
    original = (await log.read_all())[0]
    js = relay_nc.jetstream()
    await js.publish(
        "caseflow.events.application.CaseReceived",
        orjson.dumps(original.envelope()),
        headers={"Nats-Msg-Id": "redelivered-by-hand"},
    )
    await asyncio.sleep(1.0)
    handled = await _handled(log)
    assert sorted(handled) == sorted(str(i) for i in ids)


async def test_events_of_ignored_types_are_acknowledged_unread(
    log: EventLog, nc: NATS, operator_nc: NATS, running: Callable[[Consumer], None]
) -> None:
    handled = await _append(log, 5)
    for _ in range(5):  # notify's records: nothing for this consumer to do
        await log.append(
            uuid.uuid4(),
            0,
            [NewEvent(event_type="NotificationSent")],
            case_kind="application",
        )
    running(Consumer(spec(ignores=frozenset({"NotificationSent"})), log, nc))
    await eventually(lambda: _has(log, 5), what="the 5 other events handled")
    await eventually(
        lambda: _no_pending(operator_nc), what="every message acknowledged, the ignored ones too"
    )
    await asyncio.sleep(0.5)  # a handler that ran for them would have left a trace by now
    assert sorted(await _handled(log)) == sorted(str(i) for i in handled)
    async with log.engine.connect() as conn:
        kept = (await conn.execute(sa.select(sa.func.count()).select_from(inbox))).scalar_one()
    assert kept == 5, "the ignored ones are not kept in the inbox"


async def _no_pending(operator: NATS) -> bool:
    info = await operator.jetstream().consumer_info(EVENTS_STREAM, CONSUMER)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def _has(log: EventLog, n: int) -> bool:
    return len(await _handled(log)) >= n


async def test_commit_without_ack_is_redelivered_and_skipped(
    log: EventLog, nc: NATS, running: Callable[[Consumer], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    lost_acks: list[str] = []
    real_ack = Msg.ack

    async def crash_before_first_ack(self: Msg) -> None:
        if self.metadata.num_delivered == 1:
            lost_acks.append(self.subject)  # the process "died" between commit and ack
            return
        await real_ack(self)

    monkeypatch.setattr(Msg, "ack", crash_before_first_ack)
    ids = await _append(log, 5)
    running(Consumer(spec(ack_wait=1.0), log, nc))
    await eventually(lambda: _has(log, 5), what="5 events handled")
    await asyncio.sleep(2.5)  # past ack_wait: NATS redelivers all five
    assert len(lost_acks) == 5
    assert sorted(await _handled(log)) == sorted(str(i) for i in ids)


async def test_poison_and_failing_messages_go_to_dead_letters_with_reason(
    log: EventLog,
    nc: NATS,
    relay_nc: NATS,
    operator_nc: NATS,
    running: Callable[[Consumer], None],
) -> None:
    good = await _append(log, 3)
    bad = await _append(log, 1, poison=True)
    await relay_nc.jetstream().publish("caseflow.events.application.Garbled", b"{not json")
    running(Consumer(spec(), log, nc))
    await eventually(lambda: _has(log, 3), what="3 events handled")

    letters = await stored_messages(operator_nc, DLQ_STREAM, 2)
    reasons = {
        m.headers["Caseflow-Original-Subject"]: m.headers["Caseflow-Dead-Letter-Reason"]
        for m in letters
        if m.headers
    }
    assert "not a caseflow event envelope" in reasons["caseflow.events.application.Garbled"]
    assert "can never be handled" in reasons["caseflow.events.application.CaseReceived"]
    assert all(m.subject == f"caseflow.dlq.{CONSUMER}" for m in letters)
    bad_letter = next(
        m for m in letters if m.headers and "CaseReceived" in m.headers["Caseflow-Original-Subject"]
    )
    assert orjson.loads(body(bad_letter))["event_id"] == str(bad[0])
    assert sorted(await _handled(log)) == sorted(str(i) for i in good)


async def test_consumer_resumes_after_nats_server_restart(
    log: EventLog, nats_port: int, nats_dir: Path
) -> None:
    config = session_bus().config_path
    proc = devservers.start_nats(nats_port, nats_dir, config=config)
    url = f"nats://127.0.0.1:{nats_port}"
    consumer_box: list[Consumer] = []

    async def reconnected() -> None:
        for c in consumer_box:
            c.on_reconnect()

    client = await connect_as(
        url,
        CONSUMER,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        reconnected_cb=reconnected,
    )
    relay_client = await connect_as(
        url, "relay", max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    await declare_streams(client.jetstream())
    consumer = Consumer(spec(), log, client)
    consumer_box.append(consumer)
    stop = asyncio.Event()
    relay = Relay(log, relay_client.jetstream(), poll_interval=0.05, ack_timeout=2.0)
    tasks = [asyncio.create_task(consumer.run(stop)), asyncio.create_task(relay.run(stop))]
    try:
        first = await _append(log, 5)
        await eventually(lambda: _has(log, 5), what="5 events handled")

        devservers.stop_process(proc)
        await asyncio.sleep(0.5)
        second = await _append(log, 5)  # committed while NATS is down
        proc = devservers.start_nats(nats_port, nats_dir, config=config)

        await eventually(lambda: _has(log, 10), what="10 events handled", timeout=60)
        assert consumer.reconnects >= 1
        assert sorted(await _handled(log)) == sorted(str(i) for i in first + second)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        await client.close()
        await relay_client.close()
        devservers.stop_process(proc)


async def _dead_letters(operator: NATS, count: int) -> list[RawStreamMsg]:
    """The first ``count`` dead letters, read as the operator reads them."""
    return await stored_messages(operator, DLQ_STREAM, count)


async def _inbox(log: EventLog, event_id: uuid.UUID) -> int:
    async with log.engine.connect() as conn:
        rows = await conn.execute(sa.select(inbox).where(inbox.c.event_id == event_id))
        return len(rows.all())


def _forged(case_id: uuid.UUID, event_id: uuid.UUID, **payload: object) -> bytes:
    """An envelope as the relay would publish it, for an event the log does not hold."""
    return orjson.dumps(
        {
            "position": 1,
            "event_id": str(event_id),
            "case_id": str(case_id),
            "case_kind": "application",
            "version": 1,
            "event_type": "CaseReceived",
            "schema_version": 2,
            "occurred_at": "2026-03-02T01:30:00+00:00",
            "recorded_at": "2026-03-02T01:30:00+00:00",
            "actor": {"user": "li.clerk", "role": "window_clerk", "station": "xuefeng_station"},
            "payload": payload,
            "hash": "0" * 64,
        }
    )


async def test_a_message_whose_event_is_not_in_the_log_is_dead_lettered_unhandled(
    log: EventLog,
    nc: NATS,
    relay_nc: NATS,
    operator_nc: NATS,
    running: Callable[[Consumer], None],
) -> None:
    good = await _append(log, 2)
    forged_id = uuid.uuid4()
    js = relay_nc.jetstream()
    await js.publish(
        "caseflow.events.application.CaseReceived",
        _forged(uuid.uuid4(), forged_id),
        headers={"Nats-Msg-Id": str(forged_id)},
    )
    running(Consumer(spec(), log, nc))
    await eventually(lambda: _has(log, 2), what="2 events handled")

    [letter] = await _dead_letters(operator_nc, 1)
    headers = letter.headers or {}
    assert f"has no event {forged_id}" in headers["Caseflow-Dead-Letter-Reason"]
    assert "not in the log" in headers["Caseflow-Dead-Letter-Reason"]
    assert headers["Caseflow-Original-Subject"] == "caseflow.events.application.CaseReceived"
    await asyncio.sleep(0.5)
    assert sorted(await _handled(log)) == sorted(str(i) for i in good)  # no effect
    assert await _inbox(log, forged_id) == 0  # not even marked as handled


async def test_a_forged_id_does_not_shadow_the_real_event_that_comes_later(
    log: EventLog,
    nc: NATS,
    relay_nc: NATS,
    operator_nc: NATS,
    running: Callable[[Consumer], None],
) -> None:
    # Someone publishes an id before caseflow records it (ids derived from keys can be
    # guessed): the real event must still be handled when it is recorded.
    case_id, event_id = uuid.uuid4(), uuid.uuid4()
    await relay_nc.jetstream().publish(
        "caseflow.events.application.CaseReceived",
        _forged(case_id, event_id),
        headers={"Nats-Msg-Id": f"forged-{event_id}"},
    )
    running(Consumer(spec(), log, nc))
    await _dead_letters(operator_nc, 1)
    await log.append(
        case_id,
        0,
        [NewEvent(event_id=event_id, event_type="CaseReceived")],
        case_kind="application",
    )
    await eventually(lambda: _has(log, 1), what="the event handled")
    assert await _handled(log) == [str(event_id)]


async def test_the_handler_gets_the_log_copy_not_the_message(
    log: EventLog,
    nc: NATS,
    relay_nc: NATS,
    operator_nc: NATS,
    running: Callable[[Consumer], None],
) -> None:
    seen: list[StoredEvent] = []

    async def keep(event: StoredEvent, uow: UnitOfWork) -> None:
        seen.append(event)

    [event_id] = await _append(log, 1, phone="13812345678", email="wang@example.cn")
    [stored] = await log.read_all()
    # The relay's message masks the payload; the handler is given the stored one.
    running(Consumer(spec(handler=keep), log, nc))
    await eventually(lambda: seen, what="the event handed to the handler")
    [handled] = seen
    assert handled.event_id == event_id
    assert handled.payload["phone"] == "13812345678"
    assert handled.payload["email"] == "wang@example.cn"
    assert handled == upcast(stored) and handled.hash == stored.hash

    # A real id published with another payload, or on another subject, changes nothing.
    tampered = {**stored.envelope(), "payload": {"poison": True}}
    js = relay_nc.jetstream()
    await js.publish(
        "caseflow.events.application.CaseApproved",
        orjson.dumps(tampered),
        headers={"Nats-Msg-Id": "tampered-subject"},
    )
    [letter] = await _dead_letters(operator_nc, 1)
    reason = (letter.headers or {})["Caseflow-Dead-Letter-Reason"]
    assert f"{stored.event_id} is CaseReceived (application)" in reason
    assert "not on caseflow.events.application.CaseApproved" in reason
    assert len(seen) == 1


async def _true(value: bool) -> bool:
    return value
