"""Department answers over NATS are checked against the credential that delivered them.

Intake and processing run as processes on a nats-server of the test's own; department
credentials for the forestry bureau and for HRSS are issued as ``caseflow nats
credentials`` issues them. An answer the server let through (the credential may publish
on its subject) can still be one its authority may not give: for a case not forwarded to
it, for a case no longer awaiting it, or naming an officer of another organisation. Each
is refused and recorded on the case as ``ActionRefused`` naming the credential and why,
and dead-lettered with the reason, never retried; an accepted answer records its
credential. Over HTTP nobody can claim to be a credential.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from services.processing.dept import ANSWERS_CONSUMER
from shared.adapters.bus.streams import DEPT_STREAM, DLQ_STREAM
from shared.adapters.db import create_engine
from shared.adapters.eventlog import EventLog
from shared.adapters.tables.eventlog import events as events_table
from shared.application.workflow.wiring import case_service
from shared.devtools import httpcalls, waiting
from shared.devtools.waiting import eventually
from shared.domain.messages import DeliveredBy
from shared.domain.workflow.engine import Staff as engine_staff
from shared.domain.workflow.payloads import Approve
from shared.domain.workflow.reference import load_reference
from tests.bus_helpers import headers, stored_messages
from tests.e2e.test_example_integrator import Desk
from tests.services import (
    CLERK,
    REVIEWER,
    VALID_APPLICANT,
    VALID_APPLICATION,
    BusServer,
    ServiceProcess,
    bus_server,
    connect_as,
    connect_department,
    issue_department,
    running_stack,
    staff_headers,
    wait_for_event,
)

FORESTRY_OFFICER = staff_headers("liu.forestry", "department_officer", "hc_forestry")


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BusServer]:
    with bus_server(tmp_path_factory.mktemp("bus")) as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    sqlite_module_url: str, bus: BusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    with running_stack(sqlite_module_url, bus.url, tmp_path_factory.mktemp("logs")) as services:
        yield services


@pytest.fixture(scope="module")
def sqlite_module_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.conftest import fresh_sqlite_db

    return fresh_sqlite_db(tmp_path_factory.mktemp("db"))


@pytest.fixture(scope="module")
def forestry(bus: BusServer) -> dict[str, Any]:
    return issue_department(bus, "hc_forestry")


@pytest.fixture(scope="module")
def hrss(bus: BusServer) -> dict[str, Any]:
    return issue_department(bus, "hc_hrss")


def answer(
    file: dict[str, Any],
    case_id: str,
    officer: str,
    msg_id: str | None = None,
    **more: Any,
) -> None:
    """Publish an approval as the credential's system would, on its own subject."""

    async def send() -> None:
        nc = await connect_department(file)
        try:
            body = {"case_id": case_id, "outcome": "approve", "officer": officer, **more}
            await nc.jetstream().publish(
                file["answer_subject"],
                json.dumps(body).encode(),
                headers={"Nats-Msg-Id": msg_id or uuid.uuid4().hex},
            )
        finally:
            await nc.close()

    asyncio.run(send())


def refusal_on(desk: Desk, case_id: str, reason: str) -> dict[str, Any]:
    """The ActionRefused recorded on the case for ``reason`` (waits for it)."""
    events = wait_for_event(
        desk.intake,
        case_id,
        "ActionRefused",
        timeout=20,
        where=lambda e: e["payload"]["reason"] == reason,
    )
    return next(
        e for e in events if e["event_type"] == "ActionRefused" and e["payload"]["reason"] == reason
    )


def refusal_apart(db_url: str, case_id: str, reason: str) -> dict[str, Any]:
    """The ActionRefused kept in an attempt stream of its own for ``case_id`` (waits for it):
    a department's refused answer for a case that is not waiting for it."""

    async def read() -> dict[str, Any]:
        engine = create_engine(db_url)

        async def recorded() -> dict[str, Any] | None:
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        sa.select(events_table).where(events_table.c.case_kind == "attempt")
                    )
                ).all()
            for row in rows:
                payload = row.payload if isinstance(row.payload, dict) else json.loads(row.payload)
                if payload.get("case_id") == case_id and payload["reason"] == reason:
                    return {
                        "payload": payload,
                        "actor_user": row.actor_user,
                        "actor_station": row.actor_station,
                    }
            return None

        try:
            attempt: dict[str, Any] = await eventually(
                recorded, what=f"an attempt refused for {reason}", timeout=20, interval=0.2
            )
            return attempt
        finally:
            await engine.dispose()

    return asyncio.run(read())


def dead_letter(bus: BusServer, contains: str) -> dict[str, Any]:
    """The dead letter of the answer consumer whose reason names ``contains``."""

    async def read() -> dict[str, Any]:
        operator = await connect_as(bus.url, "operator")
        seen: list[dict[str, Any]] = []

        async def dead() -> dict[str, Any] | None:
            info = await operator.jetstream().stream_info(DLQ_STREAM)
            letters = await stored_messages(operator, DLQ_STREAM, info.state.messages)
            seen[:] = [headers(m) for m in letters]
            reason = "Caseflow-Dead-Letter-Reason"
            return next((f for f in seen if contains in f.get(reason, "")), None)

        try:
            letter: dict[str, Any] = await eventually(
                dead,
                what=f"a dead letter naming {contains!r}",
                timeout=20,
                interval=0.2,
                detail=lambda: seen,
            )
            return letter
        finally:
            await operator.close()

    return asyncio.run(read())


def test_an_answer_for_a_case_not_forwarded_to_that_authority_is_refused_and_kept_apart(
    stack: dict[str, ServiceProcess],
    bus: BusServer,
    forestry: dict[str, Any],
    hrss: dict[str, Any],
    sqlite_module_url: str,
) -> None:
    """Refused and recorded, but not in the case: a department that the case does not
    wait for writes nothing into it, however many answers it sends."""
    desk = Desk(stack)
    permit = desk.forward("logging_permit", language="zh-CN")  # forwarded to hc_forestry
    before = wait_for_event(desk.intake, permit, "CaseForwarded")
    # HRSS's system may publish on its own subject, but the case is not HRSS's to decide.
    for _ in range(3):
        answer(hrss, permit, "wang.hrss")
    refused = refusal_apart(sqlite_module_url, permit, "not_forwarded_to_authority")
    assert refused["payload"]["delivered_by"] == {"channel": "nats", "credential": hrss["name"]}
    assert refused["payload"]["action"] == "approve"
    assert (refused["actor_user"], refused["actor_station"]) == ("wang.hrss", "hc_hrss")
    assert "hc_hrss" in refused["payload"]["message"]
    letter = dead_letter(bus, "not_forwarded_to_authority")
    assert letter["Caseflow-Original-Subject"] == hrss["answer_subject"]

    # A station case that was never forwarded: refused and kept apart the same way.
    pension = desk.submit({**VALID_APPLICATION})
    answer(forestry, pension["case_id"], "liu.forestry")
    refused = refusal_apart(sqlite_module_url, pension["case_id"], "not_forwarded_to_authority")
    assert refused["payload"]["delivered_by"]["credential"] == forestry["name"]
    assert refused["payload"]["status"] == "accepted"
    # The cases did not move, nor grow.
    events = httpcalls.get(f"{desk.intake}/cases/{permit}/events", headers=CLERK, timeout=10).json()
    acts = [e["event_type"] for e in events["events"] if e["event_type"] != "NotificationSent"]
    assert "ActionRefused" not in acts and "CaseApproved" not in acts
    assert len([e for e in before if e["event_type"] != "NotificationSent"]) <= len(acts)


def test_an_answer_naming_an_officer_of_another_organisation_is_refused_and_recorded(
    stack: dict[str, ServiceProcess],
    bus: BusServer,
    forestry: dict[str, Any],
    sqlite_module_url: str,
) -> None:
    desk = Desk(stack)
    permit = desk.forward("logging_permit", language="zh-CN")
    answer(forestry, permit, "zhang@hc_hrss")
    refused = refusal_on(desk, permit, "officer_of_another_organisation")
    assert refused["payload"]["delivered_by"]["credential"] == forestry["name"]
    assert refused["actor"]["user"] == "zhang@hc_hrss"
    assert "hc_hrss" in refused["payload"]["message"]
    dead_letter(bus, "officer_of_another_organisation")

    # The same credential naming its own officer (user@authority) is taken, and the
    # decision records the credential that delivered it.
    answer(forestry, permit, "liu.forestry@hc_forestry")
    events = wait_for_event(desk.intake, permit, "CaseApproved", timeout=20)
    decision = next(e for e in events if e["event_type"] == "CaseApproved")
    assert decision["payload"]["delivered_by"] == {
        "channel": "nats",
        "credential": forestry["name"],
    }
    assert decision["actor"]["user"] == "liu.forestry"
    assert decision["authority"] == "hc_forestry"

    # A second answer, after the decision: the case no longer awaits one (kept apart).
    answer(forestry, permit, "liu.forestry")
    refused = refusal_apart(sqlite_module_url, permit, "not_awaiting_answer")
    assert refused["payload"]["delivered_by"]["credential"] == forestry["name"]
    history = [e["event_type"] for e in wait_for_event(desk.intake, permit, "CaseApproved")]
    assert history.count("CaseApproved") == 1


def test_an_undecodable_answer_is_dead_lettered_once(
    stack: dict[str, ServiceProcess], bus: BusServer, forestry: dict[str, Any]
) -> None:
    async def send() -> None:
        nc = await connect_department(forestry)
        try:
            await nc.jetstream().publish(forestry["answer_subject"], b'{"case_id": "nope"}')
        finally:
            await nc.close()

    asyncio.run(send())
    letter = dead_letter(bus, f"undecodable answer from credential {forestry['name']}")
    assert letter["Caseflow-Consumer"] == "processing-dept-answers"


def test_over_http_nobody_can_claim_a_credential(stack: dict[str, ServiceProcess]) -> None:
    desk = Desk(stack)
    permit = desk.forward("logging_permit", language="zh-CN")
    response = httpcalls.post(
        f"{desk.processing}/cases/{permit}/actions/approve",
        json={"delivered_by": {"channel": "nats", "credential": "forestry-system"}},
        headers={**FORESTRY_OFFICER, "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    approved = httpcalls.post(
        f"{desk.processing}/cases/{permit}/actions/approve",
        json={"decision_number": "韩林采字〔2026〕7号"},
        headers={**FORESTRY_OFFICER, "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert approved.status_code == 200, approved.text
    events = wait_for_event(desk.intake, permit, "CaseApproved")
    decision = next(e for e in events if e["event_type"] == "CaseApproved")
    assert "delivered_by" not in decision["payload"]


def test_a_reply_steered_onto_another_credentials_subject_decides_nothing(
    stack: dict[str, ServiceProcess],
    bus: BusServer,
    forestry: dict[str, Any],
    hrss: dict[str, Any],
) -> None:
    """What subject permissions can't stop (docs/architecture.md, "Not yet"): a request the
    department may send, with another credential's answer subject as its reply, makes the
    server deliver its answer there (a forwarded request, a consumer info). Its content is
    never the department's own, so it decodes as no answer: dead-lettered, nothing
    recorded, the case still waits for its department."""
    desk = Desk(stack)
    permit = desk.forward("logging_permit", language="zh-CN")
    wait_for_event(desk.intake, permit, "CaseForwarded")

    async def steer() -> None:
        nc = await connect_department(forestry)
        try:
            durable = f"CASEFLOW_DEPT.{forestry['durable']}"
            await nc.publish(f"$JS.API.CONSUMER.INFO.{durable}", b"", reply=hrss["answer_subject"])
            pull = json.dumps({"batch": 5, "expires": 2_000_000_000}).encode()
            await nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{durable}", pull, reply=hrss["answer_subject"]
            )
            await nc.flush()
        finally:
            await nc.close()

    asyncio.run(steer())
    dead_letter(bus, f"undecodable answer from credential {hrss['name']}")
    events = httpcalls.get(
        f"{desk.intake}/cases/{permit}/events", headers=dict(FORESTRY_OFFICER), timeout=10
    ).json()["events"]
    types = [e["event_type"] for e in events]
    assert "CaseApproved" not in types and "CaseRejected" not in types
    assert "ActionRefused" not in types
    # The last act is still the forwarding (notify's notices and the record of the
    # disclosure to the department land after it, in whatever order).
    acts = [t for t in types if t not in ("NotificationSent", "PersonalDataDisclosed")]
    assert acts[-1] == "CaseForwarded", types


def test_answers_naming_no_case_or_written_to_deceive_change_nothing_and_stop_nothing(
    stack: dict[str, ServiceProcess], bus: BusServer, forestry: dict[str, Any]
) -> None:
    """An answer for a stream that is not a case (a delegation's, a visit's), with an id
    that is no UUID, or with control or direction characters in what it says is
    dead-lettered with its reason; nothing is appended anywhere (a refusal recorded on a
    delegation's stream broke the register), and the listener goes on to the next answer."""
    desk = Desk(stack)
    permit = desk.forward("logging_permit", language="zh-CN")
    delegations = httpcalls.get(f"{desk.processing}/delegations", headers=CLERK, timeout=10)
    assert delegations.status_code == 200, delegations.text
    register = delegations.json()
    delegation = register["delegations"][0]["case_id"]
    visit = httpcalls.post(
        f"{desk.intake}/reception",
        json={"visitor_name": "王秀英", "purpose": "enquiry"},
        headers={**CLERK, "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert visit.status_code == 201, visit.text
    visit_id = visit.json()["visit_id"]

    answer(forestry, delegation, "liu.forestry")
    dead_letter(bus, f"no case {delegation}")
    answer(forestry, visit_id, "liu.forestry")
    dead_letter(bus, f"no case {visit_id}")
    answer(forestry, "a" * 36, "liu.forestry", msg_id="not-a-uuid")
    answer(forestry, permit, "liu\u202eyrtserof", msg_id="bidi-officer")
    answer(forestry, permit, "liu.forestry", msg_id="ansi", opinion="\x1b[2J准予")
    answer(forestry, permit, "liu.forestry\x00", msg_id="nul")
    for why in ("valid UUID", "U+202E", "U+001B", "U+0000"):
        dead_letter(bus, why)

    # The listener is alive: the department's real answer is taken.
    answer(forestry, permit, "liu.forestry", decision_number="韩林采字〔2026〕8号")
    events = wait_for_event(desk.intake, permit, "CaseApproved", timeout=20)
    assert [e["event_type"] for e in events].count("ActionRefused") == 0
    # Nothing landed on the delegation's stream or the visit's: the register reads as before.
    again = httpcalls.get(f"{desk.processing}/delegations", headers=CLERK, timeout=10)
    assert again.status_code == 200, again.text
    assert again.json() == register
    for stream in (delegation, visit_id):
        shown = httpcalls.get(f"{desk.intake}/cases/{stream}/events", headers=FORESTRY_OFFICER)
        assert shown.status_code == 404, shown.text
    opened = httpcalls.post(
        f"{desk.intake}/cases",
        json=VALID_APPLICATION,
        headers={**CLERK, "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert opened.status_code == 201, opened.text


def test_only_the_authority_a_case_was_forwarded_to_decides_it(
    stack: dict[str, ServiceProcess],
) -> None:
    """The minimum living allowance is the civil affairs bureau's power, forwarded to the
    town: the bureau's officers see the case, but only the town's decide it. Before the
    forwarding, no department extends the case's time limit."""
    desk = Desk(stack)
    item = {
        "item_code": "minimum_living_allowance",
        "applicant": VALID_APPLICANT,
        "materials": [
            {"code": code, "original_checked": True}
            for code in (
                "application_form",
                "id_card",
                "household_register",
                "household_income_declaration",
                "economic_check_authorisation",
            )
        ],
    }
    case = str(desk.submit(item)["case_id"])
    desk.act(case, "start_review", REVIEWER)
    bureau = staff_headers("chen.civil", "department_officer", "hc_civil_affairs")
    town = staff_headers("sun.town", "department_officer", "banqiao_town")

    def attempt(action: str, who: dict[str, str], body: dict[str, Any]) -> httpx.Response:
        return httpcalls.post(
            f"{desk.processing}/cases/{case}/actions/{action}",
            json=body,
            headers={**who, "Idempotency-Key": uuid.uuid4().hex},
            timeout=10,
        )

    early = attempt("extend", bureau, {"reason": "需要实地核查家庭经济状况"})
    assert early.status_code == 403, early.text
    assert early.json()["reason"] == "not_forwarded_to_authority"
    desk.act(case, "complete_review", REVIEWER, {"recommendation": "approve", "opinion": "ok"})
    forwarded = desk.act(case, "forward", REVIEWER)
    assert forwarded["forward_to"] == "banqiao_town", forwarded

    seen = httpcalls.get(f"{desk.processing}/cases/{case}", headers=bureau, timeout=10)
    assert seen.status_code == 200, seen.text
    key = {"Idempotency-Key": uuid.uuid4().hex}
    for _ in range(2):  # the same attempt again: the same refusal
        refused = httpcalls.post(
            f"{desk.processing}/cases/{case}/actions/approve",
            json={"decision_number": "韩民〔2026〕1号"},
            headers={**bureau, **key},
            timeout=10,
        )
        assert refused.status_code == 403, refused.text
        assert "banqiao_town" in refused.json()["detail"]
    approved = attempt("approve", town, {"decision_number": "板政〔2026〕1号"})
    assert approved.status_code == 200, approved.text
    events = httpcalls.get(f"{desk.intake}/cases/{case}/events", headers=CLERK, timeout=10).json()
    decisions = [e for e in events["events"] if e["event_type"] == "CaseApproved"]
    assert [d["actor"]["station"] for d in decisions] == ["banqiao_town"]
    # The bureau has no part in the town's case: its refused attempts are kept apart
    # (a stream of their own), not written into the station's case.
    assert "ActionRefused" not in [e["event_type"] for e in events["events"]]


def _take_as_handled(db_url: str, credential: str, case_id: str, msg_id: str) -> None:
    """What processing records for the forestry bureau's approval that came as ``msg_id``
    (the key is the credential's and the message's): as if it was taken and then its
    acknowledgement never reached NATS."""

    async def take() -> None:
        engine = create_engine(db_url)
        try:
            service = case_service(EventLog(engine), load_reference())
            officer = engine_staff(
                user="liu.forestry", role="department_officer", org="hc_forestry"
            )
            await service.act(
                uuid.UUID(case_id),
                "approve",
                Approve(decision_number="韩林采字〔2026〕89号"),
                officer,
                idempotency_key=f"dept-answer:{credential}:{msg_id}",
                delivered_by=DeliveredBy(channel="nats", credential=credential),
            )
        finally:
            await engine.dispose()

    asyncio.run(take())


def answers_unacknowledged(bus: BusServer) -> int:
    async def read() -> int:
        operator = await connect_as(bus.url, "operator")
        try:
            info = await operator.jetstream().consumer_info(DEPT_STREAM, ANSWERS_CONSUMER)
            return int(info.num_pending) + int(info.num_ack_pending)
        finally:
            await operator.close()

    return asyncio.run(read())


def test_an_answer_delivered_again_after_it_was_taken_is_acknowledged_not_refused(
    stack: dict[str, ServiceProcess],
    bus: BusServer,
    forestry: dict[str, Any],
    sqlite_module_url: str,
) -> None:
    """At least once: a NATS node that goes away can lose the acknowledgement of an answer
    that was taken, and the same message (the same Nats-Msg-Id) comes again. It is that
    answer, taken already: acknowledged, neither refused as "not awaiting an answer" nor
    dead-lettered (found by bench.faults with a NATS cluster)."""
    desk = Desk(stack)
    permit = desk.forward("logging_permit", language="zh-CN")
    wait_for_event(desk.intake, permit, "CaseForwarded")
    msg_id = f"again-{uuid.uuid4().hex}"
    _take_as_handled(sqlite_module_url, forestry["name"], permit, msg_id)
    answer(forestry, permit, "liu.forestry", msg_id, decision_number="韩林采字〔2026〕89号")
    waiting.wait_until(
        lambda: answers_unacknowledged(bus) == 0,
        what="the answer acknowledged",
        timeout=30,
    )
    events = httpcalls.get(f"{desk.intake}/cases/{permit}/events", headers=CLERK, timeout=10).json()
    kinds = [e["event_type"] for e in events["events"]]
    assert kinds.count("CaseApproved") == 1 and "ActionRefused" not in kinds, kinds

    async def attempts_about_it() -> int:
        engine = create_engine(sqlite_module_url)
        try:
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        sa.select(events_table.c.payload).where(
                            events_table.c.case_kind == "attempt"
                        )
                    )
                ).all()
        finally:
            await engine.dispose()
        payloads = [
            r.payload if isinstance(r.payload, dict) else json.loads(r.payload) for r in rows
        ]
        return sum(1 for p in payloads if permit in json.dumps(p))

    assert asyncio.run(attempts_about_it()) == 0, "refused and kept apart"
