"""Personal data off the bus, over the real stack: the three services as processes, a
nats-server of the module's own (so its streams hold only these cases), the sandbox's
mailbox, SMS gateway and webhook receiver, the log on SQLite and on PostgreSQL.

- Every message in ``CASEFLOW_EVENTS`` is a masked view: read raw, none holds the
  applicant's ID number, phone number or e-mail address; notices still reach the SMS
  gateway and the mailbox with the real ones (notify reads them from the log).
- A message published on ``caseflow.events.…`` whose event the log does not hold is
  dead-lettered by every consumer that reads it and changes nothing.
- Forwarding records exactly one ``PersonalDataDisclosed`` (also when the forwarding is
  handled again), in the case's history and in the auditor's timeline.
- Views (the case, its history, notify's deliveries, webhook bodies) show the e-mail
  address masked; no service's log holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from services.notify.sandbox import Sandbox
from services.notify.schema import deliveries
from shared.adapters.bus.streams import DLQ_STREAM, EVENTS_STREAM
from shared.adapters.db import create_engine
from shared.adapters.tables.eventlog import events, inbox
from shared.adapters.tables.timers import timers
from shared.adapters.tables.workflow import case_index, tasks
from shared.devtools import httpcalls
from shared.devtools.waiting import wait_until
from shared.domain.catalogue import load_catalogue
from tests.bus_helpers import stored_messages
from tests.e2e.test_notifications import (
    deliveries_of,
    events_of,
    notify_extra,
    subscribe,
)
from tests.services import (
    CLERK,
    HEAD,
    REVIEWER,
    BusServer,
    ServiceProcess,
    ThreadedSandbox,
    bus_server,
    connect_as,
    connect_department,
    issue_department,
    running_stack,
    staff_headers,
)

pytestmark = [pytest.mark.nats]

PHONE = "13922223333"
ID_NUMBER = "11010519491231002X"
EMAIL = "zhang.wei@example.cn"
APPLICANT = {"name": "张伟", "phone": PHONE, "id_number": ID_NUMBER, "email": EMAIL}
IN_CLEAR = (PHONE, ID_NUMBER, EMAIL, "zhang.wei")
"""What must never be read off the bus, a view or a log (the mailbox's own name too)."""
AUDITOR = staff_headers("qian.auditor", "auditor", "hc_audit")
CATALOGUE = load_catalogue()


@dataclasses.dataclass
class World:
    """The running stack and what the test needs to reach it."""

    stack: dict[str, ServiceProcess]
    sandbox: Sandbox
    bus: BusServer
    database_url: str
    credentials: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Department credentials issued for the test, by authority."""

    @property
    def nats_url(self) -> str:
        return self.bus.url

    @property
    def intake(self) -> str:
        return self.stack["intake"].base_url

    @property
    def processing(self) -> str:
        return self.stack["processing"].base_url

    @property
    def notify(self) -> str:
        return self.stack["notify"].base_url


@pytest.fixture(scope="module")
def world(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("bus-privacy")
    with (
        bus_server(folder) as bus,
        ThreadedSandbox() as sandbox,
        running_stack(module_db_url, bus.url, folder, **notify_extra(sandbox)) as stack,
    ):
        subscribe(stack["notify"].base_url, sandbox)  # the station's webhook, every event
        yield World(stack, sandbox, bus, module_db_url)


def post(url: str, who: Mapping[str, str], body: Mapping[str, Any] | None = None) -> Any:
    response = httpcalls.post(
        url, json=dict(body or {}), headers={**who, "Idempotency-Key": uuid.uuid4().hex}, timeout=15
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


def apply(world: World, item_code: str) -> str:
    """An application with the full applicant, told by SMS and e-mail; the case id."""
    item = CATALOGUE.get(item_code)
    answer = post(
        f"{world.intake}/cases",
        CLERK,
        {
            "item_code": item.code,
            "applicant": APPLICANT,
            "materials": [{"code": m.code, "original_checked": True} for m in item.materials],
            "notify_by": ["sms", "email"],
        },
    )
    assert answer["status"] == "accepted", answer
    assert answer["applicant"]["email"] == "z***@example.cn"  # the case view, masked
    return str(answer["case_id"])


def forward(world: World) -> str:
    """A logging permit through review to the forestry bureau; the case id."""
    case_id = apply(world, "logging_permit")
    act = f"{world.processing}/cases/{case_id}/actions"
    post(f"{act}/start_review", REVIEWER)
    post(f"{act}/complete_review", REVIEWER, {"recommendation": "approve", "opinion": "ok"})
    assert post(f"{act}/forward", REVIEWER)["forward_to"] == "hc_forestry"
    return case_id


def of_type(history: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [e for e in history if e["event_type"] == event_type]


def with_disclosure(world: World, case_id: str) -> list[dict[str, Any]] | None:
    """The case's history once it holds a PersonalDataDisclosed (None before)."""
    history = events_of(world.intake, case_id)
    return history if of_type(history, "PersonalDataDisclosed") else None


@dataclasses.dataclass(frozen=True)
class Held:
    """A message as the stream holds it."""

    subject: str
    data: bytes
    headers: dict[str, str]


async def _stream(nats_url: str, stream: str, subjects: str) -> list[Held]:
    """Every message the stream holds now, raw, read as the operator (``subjects``: all of
    the stream's)."""
    nc = await connect_as(nats_url, "operator")
    try:
        held = (await nc.jetstream().stream_info(stream)).state.messages
        return [
            Held(m.subject or "", m.data or b"", dict(m.headers or {}))
            for m in await stored_messages(nc, stream, held)
        ]
    finally:
        await nc.close()


def stream_messages(world: World, stream: str, subjects: str) -> list[Held]:
    return asyncio.run(_stream(world.nats_url, stream, subjects))


async def _department_requests(world: World, authority: str) -> list[Held]:
    """Every request waiting for ``authority``, read as its department system reads them
    (its own credential, from processing's consumer for it) and handed back (nak), so the
    next read sees them again: nobody else may read the department's requests."""
    file = world.credentials.get(authority) or issue_department(world.bus, authority)
    world.credentials[authority] = file
    nc = await connect_department(file)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe_bind(file["durable"], stream=file["stream"])
        found: list[Held] = []
        with contextlib.suppress(TimeoutError):
            while True:
                for msg in await sub.fetch(100, timeout=2):
                    found.append(Held(msg.subject, msg.data, dict(msg.headers or {})))
                    await msg.nak()
                if len({m.data for m in found}) < len(found):
                    break  # the handed-back ones came again: all were seen
        unique = {m.data: m for m in found}
        return list(unique.values())
    finally:
        await nc.close()


def department_requests(world: World, authority: str = "hc_forestry") -> list[Held]:
    return asyncio.run(_department_requests(world, authority))


async def _publish(nats_url: str, subject: str, body: bytes, msg_id: str) -> None:
    # Forged as only the relay could: the server lets nobody else publish events.
    nc = await connect_as(nats_url, "relay")
    try:
        await nc.jetstream().publish(subject, body, headers={"Nats-Msg-Id": msg_id})
    finally:
        await nc.close()


async def _rows(database_url: str, query: sa.Select[Any]) -> list[Any]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(query)).all())
    finally:
        await engine.dispose()


def rows(world: World, query: sa.Select[Any]) -> list[Any]:
    return asyncio.run(_rows(world.database_url, query))


def test_the_bus_carries_no_personal_data_and_notices_still_reach_the_applicant(
    world: World,
) -> None:
    at_station = apply(world, "pension_enrolment")
    forwarded = forward(world)

    # Notify read the numbers from the log: the gateway and the mailbox got the real ones.
    wait_until(
        lambda: sum(s.phone == "+86" + PHONE for s in world.sandbox.sms.received) >= 4,
        what="the receipts and acceptances by SMS",
        timeout=60,
    )
    wait_until(
        lambda: sum(EMAIL in str(m["To"]) for m in world.sandbox.mailbox.messages) >= 4,
        what="the receipts and acceptances by e-mail",
        timeout=60,
    )
    history = wait_until(
        lambda: with_disclosure(world, forwarded), what="the disclosure", timeout=30
    )
    wait_until(lambda: world.sandbox.webhooks.received, what="a webhook call", timeout=30)

    # Every message of the event stream, raw: a masked view, marked as one.
    messages = stream_messages(world, EVENTS_STREAM, "caseflow.events.>")
    about = {orjson.loads(m.data)["case_id"] for m in messages}
    assert {at_station, forwarded} <= about
    for msg in messages:
        for clear in IN_CLEAR:
            assert clear.encode() not in msg.data, (clear, msg.subject)
        assert (msg.headers or {}).get("Caseflow-Personal-Data") == "masked", msg.subject
        assert orjson.loads(msg.data)["personal_data"] == "masked"
    received = [
        orjson.loads(m.data)
        for m in messages
        if m.subject == "caseflow.events.application.CaseReceived"
    ]
    assert {r["payload"]["applicant"]["email"] for r in received} == {"z***@example.cn"}

    # The department's request carries the applicant in full: that is the disclosure.
    [request] = [
        orjson.loads(m.data)
        for m in department_requests(world)
        if orjson.loads(m.data)["case_id"] == forwarded
    ]
    assert request["applicant"]["id_number"] == ID_NUMBER

    # Views: the case's history, notify's deliveries and the webhook bodies, masked.
    for case_id in (at_station, forwarded):
        shown = httpcalls.get(f"{world.intake}/cases/{case_id}/events", headers=CLERK, timeout=10)
        assert shown.status_code == 200 and all(c not in shown.text for c in IN_CLEAR)
        found = deliveries_of(world.notify, case_id)
        assert {d["recipient"] for d in found if d["audience"] == "applicant"} == {
            "139****3333",
            "z***@example.cn",
        }
        assert all(c not in orjson.dumps(found).decode() for c in IN_CLEAR)
    for call in world.sandbox.webhooks.received:
        body = call.body.decode()
        assert all(c not in body for c in IN_CLEAR), body
        assert call.json()["data"]["personal_data"] == "masked"
    # The full applicant is there for the station, with a reason (and recorded).
    full = httpcalls.get(
        f"{world.intake}/cases/{forwarded}/applicant",
        params={"reason": "核对 / checking"},
        headers=CLERK,
        timeout=10,
    )
    assert full.status_code == 200 and full.json()["applicant"]["email"] == EMAIL

    # The disclosure: a fact on the case and in the auditor's timeline.
    [disclosed] = of_type(history, "PersonalDataDisclosed")
    [forwarding] = of_type(history, "CaseForwarded")
    assert disclosed["causation_id"] == forwarding["event_id"]
    assert disclosed["payload"]["to"] == "hc_forestry"
    assert disclosed["payload"]["fields"] == ["email", "id_number", "name", "phone"]
    assert disclosed["payload"]["channel"] == "caseflow.dept.hc_forestry.requests"
    assert disclosed["payload"]["request_id"] == forwarding["event_id"]
    assert disclosed["actor"]["role"] == "system"
    timeline = httpcalls.get(
        f"{world.processing}/audit/cases/{forwarded}/timeline", headers=AUDITOR, timeout=10
    )
    assert timeline.status_code == 200, timeline.text
    [entry] = [e for e in timeline.json()["events"] if e["event_type"] == "PersonalDataDisclosed"]
    assert entry["status_before"] == entry["status_after"] == "forwarded"
    assert entry["details"]["to"] == "hc_forestry" and "id_number" in entry["details"]["fields"]
    assert all(c not in timeline.text for c in IN_CLEAR)
    # Nobody was told of it.
    told = {d["event_type"] for d in deliveries_of(world.notify, forwarded)}
    assert not {t for t in told if t.startswith("PersonalData")}

    # No service wrote the applicant's numbers or address to its log.
    for service in world.stack.values():
        logs = service.logs()
        assert all(c not in logs for c in IN_CLEAR), service.name


def test_forwarding_handled_again_records_one_disclosure(world: World) -> None:
    forwarded = forward(world)
    history = wait_until(
        lambda: with_disclosure(world, forwarded), what="the disclosure", timeout=30
    )
    [forwarding] = of_type(history, "CaseForwarded")
    event_id = uuid.UUID(forwarding["event_id"])
    handled = inbox.c.consumer == "processing-dept"
    # The publisher's record of having handled it is lost (as if its inbox row never was),
    # and the message comes again: the disclosure's id finds the one recorded.
    asyncio.run(_forget(world.database_url, event_id))
    [original] = [
        m
        for m in stream_messages(world, EVENTS_STREAM, "caseflow.events.>")
        if orjson.loads(m.data)["event_id"] == str(event_id)
    ]
    asyncio.run(_publish(world.nats_url, original.subject, original.data, f"again-{event_id}"))
    wait_until(
        lambda: rows(world, sa.select(inbox).where(handled, inbox.c.event_id == event_id)),
        what="the forwarding handled again",
        timeout=30,
    )
    history = events_of(world.intake, forwarded)
    assert len(of_type(history, "PersonalDataDisclosed")) == 1
    requests = [
        m for m in department_requests(world) if orjson.loads(m.data)["case_id"] == forwarded
    ]
    assert len(requests) == 1  # JetStream dropped the repeated request by its id


async def _forget(database_url: str, event_id: uuid.UUID) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.delete(inbox).where(
                    inbox.c.consumer == "processing-dept", inbox.c.event_id == event_id
                )
            )
    finally:
        await engine.dispose()


def _forged(case_id: uuid.UUID, event_id: uuid.UUID, event_type: str, **payload: Any) -> bytes:
    return orjson.dumps(
        {
            "position": 1,
            "event_id": str(event_id),
            "case_id": str(case_id),
            "case_kind": "application",
            "version": 1,
            "event_type": event_type,
            "schema_version": 2 if event_type == "CaseReceived" else 1,
            "occurred_at": "2026-03-02T01:30:00+00:00",
            "recorded_at": "2030-03-02T01:30:00+00:00",  # "recent": notify would tell
            "actor": {"user": "li.clerk", "role": "window_clerk", "station": "xuefeng_station"},
            "authority": "hc_hrss",
            "payload": payload,
            "hash": "0" * 64,
            "personal_data": "masked",
        }
    )


def test_a_forged_event_is_dead_lettered_and_changes_nothing(world: World) -> None:
    case_id, received_id, forwarded_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    forged_phone = "13900001111"
    received = _forged(
        case_id,
        received_id,
        "CaseReceived",
        item_code="logging_permit",
        item_version=1,
        station="xuefeng_station",
        case_number="XF-2026-999999",
        workflow={"name": "station_item", "version": 1},
        applicant={"name": "冒名", "phone": forged_phone, "id_number": ID_NUMBER},
        materials=[],
        channels=["sms"],
        language="zh-CN",
        status_before="",
        status_after="received",
        action="receive",
    )
    forwarded = _forged(case_id, forwarded_id, "CaseForwarded", to="hc_forestry")
    subject = "caseflow.events.application"
    asyncio.run(
        _publish(world.nats_url, f"{subject}.CaseReceived", received, f"forged-{received_id}")
    )
    asyncio.run(
        _publish(world.nats_url, f"{subject}.CaseForwarded", forwarded, f"forged-{forwarded_id}")
    )

    def letters() -> dict[tuple[str, str], str]:
        found = {}
        for m in stream_messages(world, DLQ_STREAM, "caseflow.dlq.>"):
            headers = m.headers or {}
            if str(case_id) in headers.get("Caseflow-Dead-Letter-Reason", ""):
                key = (headers["Caseflow-Consumer"], headers["Caseflow-Original-Subject"])
                found[key] = headers["Caseflow-Dead-Letter-Reason"]
        return found

    expected = {
        ("notify", f"{subject}.CaseReceived"),
        ("notify", f"{subject}.CaseForwarded"),
        ("processing-projection", f"{subject}.CaseReceived"),
        ("processing-projection", f"{subject}.CaseForwarded"),
        ("processing-dept", f"{subject}.CaseForwarded"),
    }

    def all_dead() -> dict[tuple[str, str], str] | None:
        found = letters()
        return found if expected <= set(found) else None

    dead = wait_until(all_dead, what="dead letters", timeout=60, detail=letters)
    assert set(dead) == expected
    assert all(reason.startswith("not in the log") for reason in dead.values())

    # Nothing anywhere: no inbox record, no outbox row, no timer, no case, no request.
    forged_ids = [received_id, forwarded_id]
    assert not rows(world, sa.select(inbox).where(inbox.c.event_id.in_(forged_ids)))
    assert not rows(world, sa.select(deliveries).where(deliveries.c.case_id == case_id))
    assert not rows(world, sa.select(timers).where(timers.c.case_id == case_id))
    assert not rows(world, sa.select(case_index).where(case_index.c.case_id == case_id))
    assert not rows(world, sa.select(tasks).where(tasks.c.case_id == case_id))
    assert not rows(world, sa.select(events).where(events.c.case_id == case_id))
    answer = httpcalls.get(f"{world.intake}/cases/{case_id}", headers=HEAD, timeout=10)
    assert answer.status_code == 404
    requests = department_requests(world)
    assert all(orjson.loads(m.data)["case_id"] != str(case_id) for m in requests)
    assert all(s.phone != "+86" + forged_phone for s in world.sandbox.sms.received)
