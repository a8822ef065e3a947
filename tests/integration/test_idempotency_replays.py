"""A replay never shows what its caller may not see, by construction, on both backends.

Keys are looked up with their sender only, so no honest key row points at another
station's case. These tests go further and forge such rows — a key of Longmen's clerk
pointing at Xuefeng's case, visit and webhook subscription — to show that even then the
replay is answered only after the same visibility check as any reading: a 404, never the
resource. And a replay is checked against what the sender may see *now*.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.notify.app import create_app as create_notify
from services.notify.settings import NotifySettings
from shared.adapters import idempotency
from shared.adapters.delegations import publish_seed
from shared.adapters.eventlog import EventLog
from shared.adapters.idempotency import KeyedRequest, SenderKey
from shared.application.workflow.service import ActionRefusedError, CaseService, NotFound
from shared.application.workflow.wiring import case_service
from shared.domain.events import NewEvent
from shared.domain.workflow import engine
from shared.domain.workflow.reference import load_reference
from tests.keys import sent
from tests.services import session_keys, staff_headers

REFERENCE = load_reference()
XF_CLERK = engine.Staff(user="li.clerk", role="window_clerk", org="xuefeng_station")
LM_CLERK = engine.Staff(user="li.clerk", role="window_clerk", org="longmen_station")
XF_REVIEWER = engine.Staff(user="wang.reviewer", role="reviewer", org="xuefeng_station")
LM_REVIEWER = engine.Staff(user="wang.reviewer", role="reviewer", org="longmen_station")
APPLICATION: dict[str, Any] = {
    "item_code": "pension_enrolment",
    "item_version": 1,
    "applicant": {"name": "王秀英", "phone": "13812345678"},
    "materials": ["application_form", "household_register", "id_card"],
}


async def forge(log: EventLog, request: KeyedRequest, resource: uuid.UUID) -> None:
    """A key row as no request could have written it: someone else's resource."""
    async with log.writer.begin() as conn:
        await idempotency.remember(conn, request, resource)


@pytest.fixture
async def service(log: EventLog) -> CaseService:
    await publish_seed(log)
    return case_service(log, REFERENCE)


async def open_for(service: CaseService, staff: engine.Staff, request: KeyedRequest) -> Any:
    item = REFERENCE.catalogue.get("pension_enrolment")
    return await service.open_case(
        case_kind="application",
        workflow=REFERENCE.workflows.get(item.workflow, item.workflow_version),
        staff=staff,
        start_payload=APPLICATION,
        item=item,
        follow_up="accept",
        correlation_id=None,
        occurred_at=None,
        request=request,
    )


async def test_a_forged_key_to_another_station_s_case_answers_no_case(
    service: CaseService, log: EventLog
) -> None:
    key = "window-0001"
    xuefeng = (await open_for(service, XF_CLERK, sent(XF_CLERK, key, APPLICATION))).state
    theirs = sent(LM_CLERK, key, APPLICATION)
    await forge(log, theirs, xuefeng.case_id)
    with pytest.raises(NotFound):
        await open_for(service, LM_CLERK, theirs)
    # The honest path for the same key: Longmen's own new case.
    own = await open_for(service, LM_CLERK, sent(LM_CLERK, "window-0002", APPLICATION))
    assert own.state.station == "longmen_station" and own.state.case_id != xuefeng.case_id


async def test_a_forged_key_to_another_station_s_action_answers_no_case(
    service: CaseService, log: EventLog
) -> None:
    case = (await open_for(service, XF_CLERK, sent(XF_CLERK, "window-0003", APPLICATION))).state
    assert case.case_id is not None
    key = "review-0001"
    started = await service.act(
        case.case_id,
        "start_review",
        {},
        XF_REVIEWER,
        idempotency_key=key,
        sender=SenderKey("xuefeng_station", "wang.reviewer", key, "POST /a"),
    )
    assert not started.replayed
    forged_sender = SenderKey("longmen_station", "wang.reviewer", key, "POST /a")
    path = {"case_id": case.case_id, "action": "start_review"}
    await forge(log, forged_sender.keyed({}, path), case.case_id)
    with pytest.raises(NotFound):
        await service.act(
            case.case_id,
            "start_review",
            {},
            LM_REVIEWER,
            idempotency_key=key,
            sender=forged_sender,
        )
    # The same sender's retry is a replay; nothing more was recorded by anyone.
    again = await service.act(
        case.case_id,
        "start_review",
        {},
        XF_REVIEWER,
        idempotency_key=key,
        sender=SenderKey("xuefeng_station", "wang.reviewer", key, "POST /a"),
    )
    assert again.replayed and [e.event_id for e in again.events] == [
        e.event_id for e in started.events
    ]
    assert again.state.version == started.state.version


async def test_a_forged_key_to_another_station_s_visit_answers_no_visit(
    service: CaseService, log: EventLog
) -> None:
    def visit(staff: engine.Staff) -> NewEvent:
        return NewEvent(
            event_type="VisitorReceived",
            actor=staff.actor(),
            payload={"visitor_name": "王秀英", "purpose": "enquiry", "station": staff.org},
        )

    body = {"visitor_name": "王秀英", "purpose": "enquiry"}
    stored, replayed = await service.open_stream(
        case_kind="reception",
        event=visit(XF_CLERK),
        staff=XF_CLERK,
        request=sent(XF_CLERK, "visit-0001", body, "POST /reception"),
    )
    assert not replayed
    theirs = sent(LM_CLERK, "visit-0001", body, "POST /reception")
    await forge(log, theirs, stored.case_id)
    with pytest.raises(NotFound):
        await service.open_stream(
            case_kind="reception", event=visit(LM_CLERK), staff=LM_CLERK, request=theirs
        )


@pytest.fixture
async def notify(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_notify(
        NotifySettings(database_url=db_url, jwt_public_key_file=session_keys().public_path)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://notify") as http:
        http.app = app  # type: ignore[attr-defined]
        yield http
    await app.state.runtime.engine.dispose()


HOOK = {"url": "https://93.184.216.34/hook", "event_types": ["CaseWithdrawn"]}


async def test_a_forged_key_to_another_station_s_subscription_shows_nothing(
    notify: httpx.AsyncClient,
) -> None:
    log = EventLog(notify.app.state.runtime.engine)  # type: ignore[attr-defined]
    xf_head = staff_headers("zhao.head", "station_head", "xuefeng_station")
    made = await notify.post(
        "/webhooks", json=HOOK, headers={**xf_head, "Idempotency-Key": "hook-0001"}
    )
    assert made.status_code == 201, made.text
    secret, sid = made.json()["secret"], uuid.UUID(made.json()["subscription_id"])
    lm_head = staff_headers("zhao.head", "station_head", "longmen_station")
    theirs = KeyedRequest.of(
        organisation="longmen_station",
        user="zhao.head",
        key="hook-0001",
        operation="POST /webhooks",
        body={**HOOK, "station": None, "description": None},
    )
    await forge(log, theirs, sid)
    answer = await notify.post(
        "/webhooks", json=HOOK, headers={**lm_head, "Idempotency-Key": "hook-0001"}
    )
    assert answer.status_code == 404, answer.text
    assert secret not in answer.text and str(sid) not in answer.text


async def test_a_replay_is_checked_against_what_its_sender_may_see_now(
    notify: httpx.AsyncClient,
) -> None:
    # As the town's operator, wu.town subscribes Longmen's events; the same key sent again
    # without the operate permission shows nothing of Longmen's subscription.
    operator = staff_headers(
        "wu.town", "department_officer", "banqiao_town", permissions=frozenset({"operate"})
    )
    body = {**HOOK, "station": "longmen_station"}
    headers = {"Idempotency-Key": "ops-0001"}
    made = await notify.post("/webhooks", json=body, headers={**operator, **headers})
    assert made.status_code == 201, made.text
    officer = staff_headers("wu.town", "department_officer", "banqiao_town")
    again = await notify.post("/webhooks", json=body, headers={**officer, **headers})
    assert again.status_code == 403, again.text
    assert made.json()["subscription_id"] not in again.text
    replay = await notify.post("/webhooks", json=body, headers={**operator, **headers})
    assert replay.status_code == 200 and "secret" not in replay.json()


async def test_a_refused_opening_is_refused_again_on_retry_and_recorded_once(
    service: CaseService, log: EventLog
) -> None:
    async def attempts() -> list[Any]:
        return [e for e in await log.read_all() if e.case_kind == "attempt"]

    request = sent(XF_REVIEWER, "window-0009", APPLICATION)
    for _ in range(2):
        with pytest.raises(ActionRefusedError) as refused:
            await open_for(service, XF_REVIEWER, request)
        assert refused.value.refusal.reason == "wrong_role"
    recorded = await attempts()
    assert len(recorded) == 1 and recorded[0].actor_user == "wang.reviewer"
    # Longmen's reviewer of the same name, with the same key: an attempt of their own.
    with pytest.raises(ActionRefusedError):
        await open_for(service, LM_REVIEWER, sent(LM_REVIEWER, "window-0009", APPLICATION))
    assert [e.actor_station for e in await attempts()] == ["xuefeng_station", "longmen_station"]


async def test_an_opening_the_register_does_not_allow_leaves_no_case_and_no_number(
    log: EventLog,
) -> None:
    bare = case_service(log, REFERENCE)  # no instrument published: nothing delegated
    request = sent(XF_CLERK, "window-0010", APPLICATION)
    for _ in range(2):
        with pytest.raises(ActionRefusedError) as refused:
            await open_for(bare, XF_CLERK, request)
        assert refused.value.refusal.reason != "wrong_role", refused.value.refusal
    stored = await log.read_all()
    assert [e.case_kind for e in stored] == ["attempt"], "recorded once, nothing opened"
    # the register read in the refused transaction drew no number: the first is 000001
    await publish_seed(log)
    opened = await open_for(bare, XF_CLERK, sent(XF_CLERK, "window-0011", APPLICATION))
    assert opened.state.case_number is not None
    assert opened.state.case_number.endswith("-000001"), opened.state.case_number
