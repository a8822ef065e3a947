"""Outages are waited out, dead letters handled again.

A consumer whose database is stopped (a real PostgreSQL of the test's own, over its Unix
socket as embedded and over TCP as in production) dead-letters nothing and handles every
event once when it is back; only a handler's own failures count. ``caseflow bus
dead-letters`` lists what a consumer gave up on and ``caseflow bus redrive`` has it
handled again, whatever the event's age, once; the dead letter is gone then."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import nats.errors
import orjson
import pytest
from nats.aio.client import Client as NATS
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs
from typer.testing import CliRunner

from shared.adapters.bus.consumer import REDRIVEN, Consumer, ConsumerSpec
from shared.adapters.bus.deadletters import dead_letters
from shared.adapters.bus.relay import Relay
from shared.adapters.bus.streams import DLQ_STREAM, EVENTS_STREAM
from shared.adapters.db import create_engine, migrate
from shared.adapters.eventlog import EventLog, UnitOfWork
from shared.cli.main import app
from shared.devtools.waiting import eventually
from shared.domain.events import NewEvent, StoredEvent
from tests.conftest import _admin
from tests.own_postgres import OwnPostgres
from tests.services import connect_as, session_bus

TALLY = uuid.UUID(int=7)
DEADLINE = 60.0


class Tally:
    """A handler with a visible effect (one ``Handled`` event per event), that fails on
    purpose while ``broken`` and notes whether each event came re-driven."""

    def __init__(self) -> None:
        self.broken = False
        self.redriven: list[bool] = []

    async def __call__(self, event: StoredEvent, uow: UnitOfWork) -> None:
        if self.broken:
            raise ValueError("the handler is broken today")
        self.redriven.append(REDRIVEN.get())
        version = len(await uow.read_case(TALLY))
        await uow.append(
            TALLY,
            version,
            [NewEvent(event_type="Handled", causation_id=str(event.event_id))],
            case_kind="tally",
        )


def _spec(handler: Tally) -> ConsumerSpec:
    return ConsumerSpec(
        name="notify",  # a consumer name notify's credential may use
        subjects=("caseflow.events.application.>",),
        handler=handler,
        backoff=(0.05, 0.1),
        max_deliver=3,
    )


async def _append(log: EventLog, n: int) -> list[uuid.UUID]:
    ids = []
    for _ in range(n):
        result = await log.append(
            uuid.uuid4(), 0, [NewEvent(event_type="CaseReceived")], case_kind="application"
        )
        ids.append(result.events[0].event_id)
    return ids


async def _handled(log: EventLog) -> list[str]:
    return [str(e.causation_id) for e in await log.read_case(TALLY)]


async def _publish_all(log: EventLog, relay_nc: NATS, operator_nc: NATS, count: int) -> None:
    """Relay what the log holds and stop relaying (the relay, too, needs the database)."""
    stop = asyncio.Event()
    relay = Relay(log, relay_nc.jetstream(), poll_interval=0.05)
    task = asyncio.create_task(relay.run(stop))

    async def published() -> bool:
        return (await operator_nc.jetstream().stream_info(EVENTS_STREAM)).state.messages >= count

    await eventually(published, what="the events on the stream", timeout=DEADLINE)
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_a_stopped_database_is_waited_out_and_nothing_is_dead_lettered(
    own_postgres: OwnPostgres, nc: NATS, relay_nc: NATS, operator_nc: NATS
) -> None:
    server = make_url(own_postgres.server_url)
    url = server.set(database="caseflow").render_as_string(hide_password=False)
    await _admin(own_postgres.server_url, "CREATE DATABASE caseflow")
    await asyncio.to_thread(migrate, url)
    engine = create_engine(url)
    log = EventLog(engine)
    ids = await _append(log, 20)
    await _publish_all(log, relay_nc, operator_nc, len(ids))

    await asyncio.to_thread(own_postgres.stop)
    handler = Tally()
    consumer = Consumer(_spec(handler), log, nc)
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(consumer.run(stop))
        try:

            async def waiting() -> bool:
                return any("waiting out an outage" in entry["event"] for entry in logs)

            await eventually(
                waiting,
                what="the consumer waiting for the database",
                timeout=DEADLINE,
                detail=lambda: f"last log entries: {logs[-5:]}",
            )
            # Well past max_deliver × the backoff: an outage counted would be dead by now.
            await asyncio.sleep(3)
            await asyncio.to_thread(own_postgres.start)

            async def all_handled() -> bool:
                return len(await _handled(log)) >= len(ids)

            await eventually(
                all_handled, what="every event handled after the outage", timeout=DEADLINE
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await engine.dispose()
    assert sorted(await _handled(log)) == sorted(str(i) for i in ids)
    assert (await operator_nc.jetstream().stream_info(DLQ_STREAM)).state.messages == 0
    assert not [e for e in logs if e["event"] == "dead-lettered"]
    waited = [e for e in logs if "waiting out an outage" in e["event"]]
    assert waited and waited[0]["unavailable"] == "database"
    assert not [e for e in logs if e.get("exc_info")]  # one line per outage, no traceback


def caseflow(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(re.sub("[│┃╭╮╰╯─━┏┓┗┛┡┩└┘┌┐]", " ", result.output).split())


@pytest.fixture
def nats_folder() -> Path:
    """The session's credentials folder (the operator's seed is there)."""
    return session_bus().folder


async def test_dead_letters_are_listed_and_handled_again_once_whatever_their_age(
    log: EventLog, nc: NATS, relay_nc: NATS, operator_nc: NATS, own_nats: str, nats_folder: Path
) -> None:
    handler = Tally()
    handler.broken = True
    ids = await _append(log, 3)
    stop = asyncio.Event()
    consumer = Consumer(_spec(handler), log, nc)
    relay = Relay(log, relay_nc.jetstream(), poll_interval=0.05)
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
    try:
        js = operator_nc.jetstream()

        async def all_dead() -> bool:
            return len(await dead_letters(js)) == len(ids)

        await eventually(all_dead, what="three dead letters", timeout=DEADLINE)
        code, out = await asyncio.to_thread(
            caseflow, "bus", "dead-letters", "--json", "--nats-url", own_nats,
            "--nats-dir", str(nats_folder),
        )  # fmt: skip
        assert code == 0, out
        listed = [json.loads(line) for line in out.replace("} {", "}\n{").splitlines()]
        assert {entry["event_id"] for entry in listed} == {str(i) for i in ids}
        assert all("the handler is broken today" in entry["reason"] for entry in listed)
        assert all(entry["consumer"] == "notify" and entry["redrivable"] for entry in listed)

        code, out = await asyncio.to_thread(
            caseflow, "bus", "redrive", "12345", "--nats-url", own_nats,
            "--nats-dir", str(nats_folder),
        )  # fmt: skip
        assert code == 1 and "no dead letter 12345" in out
        assert handler.redriven == []

        handler.broken = False  # the bug fixed, the operator re-drives
        first = listed[0]["sequence"]
        code, out = await asyncio.to_thread(
            caseflow, "bus", "redrive", str(first), "--nats-url", own_nats,
            "--nats-dir", str(nats_folder),
        )  # fmt: skip
        assert code == 0 and "asked for 1 dead letters" in out, out

        async def one_handled() -> bool:
            return len(await _handled(log)) == 1 and len(await dead_letters(js)) == 2

        await eventually(
            one_handled, what="the re-driven letter handled and gone", timeout=DEADLINE
        )
        code, out = await asyncio.to_thread(
            caseflow, "bus", "redrive", "--all", "--consumer", "notify",
            "--nats-url", own_nats, "--nats-dir", str(nats_folder),
        )  # fmt: skip
        assert code == 0 and "asked for 2 dead letters" in out, out

        async def all_handled() -> bool:
            return len(await _handled(log)) == len(ids) and not await dead_letters(js)

        await eventually(all_handled, what="every re-driven letter handled", timeout=DEADLINE)
        # Asked again (the same request, or anew): handled once all the same.
        code, out = await asyncio.to_thread(
            caseflow, "bus", "redrive", str(first), "--nats-url", own_nats,
            "--nats-dir", str(nats_folder),
        )  # fmt: skip
        assert code == 1 and f"no dead letter {first}" in out
        code, out = await asyncio.to_thread(
            caseflow, "bus", "dead-letters", "--nats-url", own_nats,
            "--nats-dir", str(nats_folder),
        )  # fmt: skip
        assert code == 0 and "no dead letters" in out
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert sorted(await _handled(log)) == sorted(str(i) for i in ids)
    assert handler.redriven == [True, True, True]


async def test_a_letter_that_fails_again_is_a_dead_letter_again_with_the_new_reason(
    log: EventLog, nc: NATS, relay_nc: NATS, operator_nc: NATS
) -> None:
    handler = Tally()
    handler.broken = True
    [event_id] = await _append(log, 1)
    stop = asyncio.Event()
    consumer = Consumer(_spec(handler), log, nc)
    relay = Relay(log, relay_nc.jetstream(), poll_interval=0.05)
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
    js = operator_nc.jetstream()
    try:

        async def dead() -> bool:
            return len(await dead_letters(js)) == 1

        await eventually(dead, what="the dead letter", timeout=DEADLINE)
        [before] = await dead_letters(js)
        from shared.adapters.bus.deadletters import redrive

        assert (await redrive(js, [before])).asked == [before]

        async def dead_again() -> bool:
            letters = await dead_letters(js)
            return len(letters) == 1 and letters[0].sequence != before.sequence

        await eventually(
            dead_again, what="the letter dead again under a new sequence", timeout=DEADLINE
        )
        [after] = await dead_letters(js)
        assert after.event_id == str(event_id) and "broken today" in after.reason
        assert (await js.stream_info(DLQ_STREAM)).state.messages == 1
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert await _handled(log) == []


async def test_a_redrive_request_reaches_only_its_own_consumers_letters(
    log: EventLog, nc: NATS, relay_nc: NATS, operator_nc: NATS, own_nats: str
) -> None:
    """The operator may ask; what is handled comes from the dead letters, and only a
    letter of the consumer asked: a request naming another consumer's letter, no letter,
    or nothing readable changes nothing."""
    [event_id] = await _append(log, 1)
    [event] = await log.read_all()
    processing = await connect_as(own_nats, "processing")
    other = await processing.jetstream().publish(
        "caseflow.dlq.processing-dept",
        orjson.dumps(event.envelope()),
        headers={
            "Caseflow-Consumer": "processing-dept",
            "Caseflow-Original-Subject": "caseflow.events.application.CaseReceived",
            "Caseflow-Dead-Letter-Reason": "someone else's",
        },
    )
    # Nor does a service write another service's consumers' dead letters.
    with pytest.raises(nats.errors.Error):
        await nc.jetstream().publish("caseflow.dlq.processing-dept", b"{}", timeout=2)
    await processing.close()
    handler = Tally()
    stop = asyncio.Event()
    consumer = Consumer(_spec(handler), log, nc)
    task = asyncio.create_task(consumer.run(stop))
    js = operator_nc.jetstream()
    try:
        for request in ({"dead_letter": other.seq}, {"dead_letter": 999_999}, {"no": "letter"}):
            await js.publish("caseflow.redrive.notify", orjson.dumps(request))
        await js.publish("caseflow.redrive.notify", b"\xff not json")

        async def settled() -> bool:
            return (await js.stream_info("CASEFLOW_REDRIVE")).state.messages == 0

        await eventually(settled, what="the four requests taken", timeout=DEADLINE)
        with pytest.raises(nats.errors.Error):  # the operator writes no dead letter
            await js.publish("caseflow.dlq.notify", b"{}", timeout=2)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert handler.redriven == [] and await _handled(log) == []
    [letter] = await dead_letters(js)
    assert letter.consumer == "processing-dept" and letter.event_id == str(event_id)


class Flaky(Tally):
    """Fails ``times`` times with ``error`` before it handles each event."""

    def __init__(self, error: Exception, times: int) -> None:
        super().__init__()
        self.error = error
        self.left = times

    async def __call__(self, event: StoredEvent, uow: UnitOfWork) -> None:
        if self.left > 0:
            self.left -= 1
            raise self.error
        await super().__call__(event, uow)


async def test_a_stream_without_a_leader_while_connected_is_retried_not_dead_lettered(
    log: EventLog, nc: NATS, relay_nc: NATS, operator_nc: NATS
) -> None:
    """A handler publishing while the cluster elects a stream leader gets a 503 though its
    connection stands (the probe sees nothing wrong): retried, counted only a little, so
    more such failures than ``max_deliver`` still end in the event handled."""
    import nats.js.errors

    handler = Flaky(nats.js.errors.ServiceUnavailableError(), times=6)
    [event_id] = await _append(log, 1)
    stop = asyncio.Event()
    consumer = Consumer(_spec(handler), log, nc)  # max_deliver 3
    relay = Relay(log, relay_nc.jetstream(), poll_interval=0.05)
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
    try:

        async def handled() -> bool:
            return await _handled(log) == [str(event_id)]

        await eventually(handled, what="the event handled after the election", timeout=DEADLINE)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert handler.left == 0
    assert await dead_letters(operator_nc.jetstream()) == []


async def test_an_integrity_error_of_the_handlers_own_is_dead_lettered(
    log: EventLog, nc: NATS, relay_nc: NATS, operator_nc: NATS
) -> None:
    """Only a conflict on the case's next version is retried as a conflict; a handler
    breaking another rule fails for good and ends as a dead letter."""
    import sqlite3

    from sqlalchemy.exc import IntegrityError

    broken = IntegrityError("INSERT …", {}, sqlite3.IntegrityError("NOT NULL constraint failed"))
    handler = Flaky(broken, times=1_000)
    [event_id] = await _append(log, 1)
    stop = asyncio.Event()
    consumer = Consumer(_spec(handler), log, nc)
    relay = Relay(log, relay_nc.jetstream(), poll_interval=0.05)
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
    js = operator_nc.jetstream()
    try:

        async def dead() -> bool:
            return len(await dead_letters(js)) == 1

        await eventually(dead, what="the dead letter", timeout=DEADLINE)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    [letter] = await dead_letters(js)
    assert letter.event_id == str(event_id) and "NOT NULL" in letter.reason
    # max_deliver (3) deliveries, each tried in its batch and then alone
    assert 1_000 - handler.left == 2 * 3
