"""Every kind of case through its whole workflow, over the real stack: the services as
processes, nats-server, PostgreSQL and SQLite, staff signed in with tokens.

Each step's event must name the actor, the authority acted for and the delegation
version it was taken under; refused attempts must be answered 403 and recorded.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import nats
import pytest

from shared.devtools.waiting import eventually, wait_until
from shared.domain.catalogue import ServiceItem, load_catalogue
from shared.domain.workflow.definitions import load_workflows
from tests.services import (
    CLERK,
    HEAD,
    REVIEWER,
    VALID_APPLICANT,
    VALID_APPLICATION,
    BusServer,
    ServiceProcess,
    connect_department,
    issue_department,
    running_stack,
    staff_headers,
    wait_for_event,
)

CATALOGUE = load_catalogue()
POWERS = {
    step.event: step.power
    for workflow in load_workflows()
    for step in (workflow.start, *workflow.transitions)
}
"""Event type → the delegated power it uses (None: no delegated power)."""


@pytest.fixture(scope="module")
def stack(
    module_db_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    with running_stack(module_db_url, nats_url, tmp_path_factory.mktemp("logs")) as services:
        yield services


class Desk:
    """A member of staff's view of the stack: submit, act, read."""

    def __init__(self, stack: Mapping[str, ServiceProcess]) -> None:
        self.intake = stack["intake"].base_url
        self.processing = stack["processing"].base_url

    def submit(
        self, body: Mapping[str, Any], who: Mapping[str, str] = CLERK, path: str = "/cases"
    ) -> httpx.Response:
        headers = {**who, "Idempotency-Key": uuid.uuid4().hex}
        return httpx.post(f"{self.intake}{path}", json=dict(body), headers=headers, timeout=10)

    def act(
        self,
        case_id: str,
        action: str,
        who: Mapping[str, str],
        body: Mapping[str, Any] | None = None,
        expect: int = 200,
    ) -> dict[str, Any]:
        response = httpx.post(
            f"{self.processing}/cases/{case_id}/actions/{action}",
            json=dict(body or {}),
            headers={**who, "Idempotency-Key": uuid.uuid4().hex},
            timeout=10,
        )
        assert response.status_code == expect, (action, response.text)
        answer: dict[str, Any] = response.json()
        return answer

    def events(self, case_id: str, who: Mapping[str, str] = CLERK) -> list[dict[str, Any]]:
        """The case's events but notify's records of notices (they land when they do)."""
        response = httpx.get(f"{self.processing}/cases/{case_id}/events", headers=who, timeout=5)
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return [e for e in events if not e["event_type"].startswith("Notification")]

    def worklist(self, who: Mapping[str, str]) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.processing}/worklist", headers=who, timeout=5)
        assert response.status_code == 200, response.text
        tasks: list[dict[str, Any]] = response.json()["tasks"]
        return tasks

    def wait_task(
        self, who: Mapping[str, str], case_id: str, present: bool = True, timeout: float = 30
    ) -> list[dict[str, Any]]:
        """Poll the worklist (a read model, a moment behind the log)."""
        seen: list[list[dict[str, Any]]] = []

        def settled() -> bool:
            seen[:] = [[t for t in self.worklist(who) if t["case_id"] == case_id]]
            return bool(seen[0]) == present

        wait_until(
            settled,
            what=f"{case_id} {'on' if present else 'off'} the worklist",
            timeout=timeout,
            detail=lambda: f"its tasks: {seen}",
        )
        return seen[0]


def complete(item: ServiceItem) -> dict[str, Any]:
    """An application with every material of ``item``, originals checked."""
    return {
        "item_code": item.code,
        "applicant": VALID_APPLICANT,
        "materials": [{"code": m.code, "original_checked": True} for m in item.materials],
    }


def officer(org: str, user: str = "officer") -> dict[str, str]:
    return staff_headers(f"{user}.{org}", "department_officer", org)


def assert_named_and_delegated(events: list[dict[str, Any]], item: ServiceItem) -> None:
    """Every staff step names its actor; every use of a delegated power names the
    authority it was used for and the delegation version, unless that authority acted
    itself."""
    for event in events:
        if event["actor"]["role"] == "system":
            continue
        assert event["actor"]["user"] and event["actor"]["station"], event
        if POWERS.get(event["event_type"]) is None:
            continue
        assert event["authority"] == item.authority, (item.code, event)
        if event["actor"]["station"] == item.authority:
            assert event["delegation_id"] is None, event
        else:
            assert event["delegation_id"], (item.code, event)
            assert event["delegation_version"] >= 1, event


def test_every_catalogue_item_from_intake_to_closed(stack: dict[str, ServiceProcess]) -> None:
    desk = Desk(stack)
    items = CATALOGUE.published()
    assert len(items) == 27
    for item in items:
        answer = desk.submit(complete(item)).json()
        assert answer["status"] == "accepted", (item.code, answer)
        case_id = answer["case_id"]
        desk.act(case_id, "start_review", REVIEWER)
        desk.act(
            case_id,
            "complete_review",
            REVIEWER,
            {"recommendation": "approve", "opinion": "材料齐全 / complete"},
        )
        if item.forward_to is None:
            desk.act(case_id, "approve", HEAD, {"decision_number": f"XF-{item.code}"})
        else:
            forwarded = desk.act(case_id, "forward", REVIEWER)
            assert forwarded["forward_to"] == item.forward_to
            desk.act(case_id, "approve", officer(item.forward_to))
        desk.act(case_id, "deliver", CLERK, {"method": "in_person"})
        closed = desk.act(case_id, "close", CLERK)
        assert closed["status"] == "closed" and closed["outcome"] == "approved"
        events = desk.events(case_id)
        assert_named_and_delegated(events, item)
        decision = next(e for e in events if e["event_type"] == "CaseApproved")
        decider = "station_head" if item.forward_to is None else "department_officer"
        assert decision["actor"]["role"] == decider


def test_matters_from_opening_to_closed(stack: dict[str, ServiceProcess]) -> None:
    desk = Desk(stack)
    matters: list[tuple[str, dict[str, Any], list[tuple[str, dict[str, Any]]]]] = [
        (
            "mediation",
            {
                "title": "宅基地边界纠纷 / homestead boundary dispute",
                "parties": ["张建国", "李卫东"],
                "village": "gongyu",
                "summary": "两户因院墙位置发生争执",
            },
            [
                ("hold_session", {"notes": "双方到场，各自陈述"}),
                ("conclude", {"outcome": "agreement", "summary": "按原界桩重砌院墙"}),
                ("close", {}),
            ],
        ),
        (
            "legal_publicity",
            {"topic": "《民法典》婚姻家庭编", "village": "xiangshan", "planned_on": "2026-12-05"},
            [("hold", {"attendees": 46}), ("close", {})],
        ),
        (
            "assistance",
            {"person_name": "王老汉", "village": "wangcun", "need": "独居老人冬季取暖困难"},
            [("provide", {"description": "送去棉被和煤炭"}), ("close", {})],
        ),
        (
            "police_assistance",
            {
                "police_unit": "板桥派出所",
                "reference": "韩公(板)2026-114",
                "summary": "协查走失人员",
            },
            [
                ("provide", {"description": "组织村民沿山路搜寻", "case_solved": True}),
                ("close", {}),
            ],
        ),
    ]
    for kind, opening, steps in matters:
        response = desk.submit(opening, HEAD, f"/matters/{kind}")
        assert response.status_code == 201, response.text
        case_id = response.json()["case_id"]
        for action, body in steps:
            desk.act(case_id, action, HEAD, body)
        events = desk.events(case_id)
        assert events[-1]["event_type"] == "CaseClosed"
        for event in events:
            assert event["authority"] == "banqiao_town", event  # the station's own work
            assert event["actor"]["station"] == "xuefeng_station"
    visit = desk.submit(
        {"visitor_name": "赵大娘", "village": "xuefeng", "purpose": "enquiry"}, CLERK, "/reception"
    )
    assert visit.status_code == 201, visit.text
    listed = httpx.get(
        f"{desk.processing}/cases", params={"case_kind": "reception"}, headers=CLERK, timeout=5
    )
    assert listed.status_code == 200


def test_correction_and_refusal_paths(stack: dict[str, ServiceProcess]) -> None:
    desk = Desk(stack)
    item = CATALOGUE.get("funeral_subsidy")
    partial = {**complete(item), "materials": [{"code": "id_card", "original_checked": True}]}
    answer = desk.submit(partial).json()
    assert answer["status"] == "correction_requested"
    notice = answer["receipt"]
    listed = {m["code"] for m in notice["missing"]}
    assert listed == {m.code for m in item.materials} - {"id_card"}
    assert notice["deadline"]
    case_id = answer["case_id"]
    # One notice only (一次性告知): a second one is refused.
    desk.act(case_id, "request_correction", CLERK, expect=409)
    short = desk.act(case_id, "submit_correction", CLERK, {"materials": ["bank_card"]}, 422)
    assert "also listed" in short["detail"]
    desk.act(case_id, "submit_correction", CLERK, {"materials": sorted(listed)})
    accepted = desk.act(case_id, "accept", CLERK)
    assert accepted["status"] == "accepted" and accepted["case_number"].startswith("XF-")

    refused_case = desk.submit(partial).json()["case_id"]
    refused = desk.act(
        refused_case,
        "refuse",
        HEAD,
        {"reason": "不属于本站受理范围", "apply_instead_at": "韩城市人社局窗口"},
    )
    assert refused["status"] == "not_accepted"
    event = desk.events(refused_case)[-1]
    assert event["event_type"] == "CaseNotAccepted"
    assert "行政复议" in event["payload"]["appeal_notice_zh"]
    assert event["payload"]["reason"] == "不属于本站受理范围"


def test_worklists_claims_and_stations_kept_apart(stack: dict[str, ServiceProcess]) -> None:
    desk = Desk(stack)
    case_id = desk.submit(VALID_APPLICATION).json()["case_id"]
    tasks = desk.wait_task(REVIEWER, case_id)
    assert tasks[0]["task"] == "review"
    other = staff_headers("sun.reviewer", "reviewer", "xuefeng_station")
    claimed = desk.act(case_id, "claim", REVIEWER)
    assert claimed["tasks"][0]["claimed_by"] == "wang.reviewer"
    desk.act(case_id, "start_review", other, expect=409)  # claimed by a colleague
    desk.act(case_id, "release", REVIEWER)
    desk.act(case_id, "start_review", other)

    longmen = staff_headers("chen.reviewer", "reviewer", "longmen_station")
    assert case_id not in [t["case_id"] for t in desk.worklist(longmen)]
    seen = httpx.get(f"{desk.processing}/cases/{case_id}", headers=longmen, timeout=5)
    assert seen.status_code == 404
    desk.act(
        case_id, "complete_review", longmen, {"recommendation": "approve", "opinion": "x"}, 404
    )
    listed = httpx.get(f"{desk.processing}/cases", headers=longmen, timeout=5).json()["cases"]
    assert case_id not in [c["case_id"] for c in listed]


def test_refused_attempts_are_answered_403_and_recorded(stack: dict[str, ServiceProcess]) -> None:
    desk = Desk(stack)
    case_id = desk.submit(VALID_APPLICATION).json()["case_id"]
    desk.act(case_id, "start_review", REVIEWER)
    desk.act(case_id, "complete_review", REVIEWER, {"recommendation": "approve", "opinion": "ok"})

    # A wrong role: the window clerk may not decide.
    problem = desk.act(case_id, "approve", CLERK, expect=403)
    assert problem["reason"] == "wrong_role" and problem["title"] == "Refused"
    refusal = desk.events(case_id)[-1]
    assert refusal["event_type"] == "ActionRefused"
    assert refusal["payload"]["reason"] == "wrong_role"
    assert refusal["actor"]["user"] == "li.clerk"

    # Outside the delegation: Longmen only *receives* medical insurance enrolments.
    lm_clerk = staff_headers("chen.clerk", "window_clerk", "longmen_station")
    item = CATALOGUE.get("medical_insurance_enrolment")
    received = desk.submit(complete(item), lm_clerk).json()
    assert received["status"] == "received"  # received in the bureau's name, not accepted
    assert received["case_number"].startswith("LM-")
    problem = desk.act(received["case_id"], "accept", lm_clerk, expect=403)
    assert problem["reason"] == "outside_delegation"
    assert desk.events(received["case_id"], lm_clerk)[-1]["event_type"] == "ActionRefused"

    # An item Longmen holds no delegation for at all: the attempt is refused at the window.
    logging = desk.submit(complete(CATALOGUE.get("logging_permit")), lm_clerk)
    assert logging.status_code == 403
    assert logging.json()["reason"] == "outside_delegation"

    # After a revocation: granted before, refused after, both recorded.
    lm_reviewer = staff_headers("chen.reviewer", "reviewer", "longmen_station")
    pension = desk.submit(
        complete(CATALOGUE.get("pension_enrolment")),
        lm_clerk,
    ).json()
    assert pension["status"] == "accepted"
    desk.act(pension["case_id"], "start_review", lm_reviewer)
    revoked = httpx.post(
        f"{desk.processing}/delegations/hrss-longmen-2022/revocation",
        json={"reason": "站点人员调整，暂停委托 / staff changes"},
        headers={**officer("hc_hrss"), "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert revoked.status_code == 200, revoked.text
    problem = desk.act(
        pension["case_id"],
        "complete_review",
        lm_reviewer,
        {"recommendation": "approve", "opinion": "ok"},
        403,
    )
    assert problem["reason"] == "delegation_revoked"
    history = desk.events(pension["case_id"], lm_reviewer)
    granted = next(e for e in history if e["event_type"] == "ReviewStarted")
    assert granted["delegation_id"] == "hrss-longmen-2022"
    assert granted["delegation_version"] == 1
    assert history[-1]["event_type"] == "ActionRefused"
    assert history[-1]["payload"]["reason"] == "delegation_revoked"


def test_a_department_answers_a_forwarded_case_over_nats(
    stack: dict[str, ServiceProcess], nats_bus: BusServer
) -> None:
    desk = Desk(stack)
    item = CATALOGUE.get("logging_permit")
    case_id = desk.submit(complete(item)).json()["case_id"]
    desk.act(case_id, "start_review", REVIEWER)
    desk.act(case_id, "complete_review", REVIEWER, {"recommendation": "approve", "opinion": "ok"})
    desk.act(case_id, "forward", REVIEWER)

    # The department's system, with the credential `caseflow nats credentials` issues.
    credential = issue_department(nats_bus, "hc_forestry")

    async def department() -> dict[str, Any]:
        nc = await connect_department(credential)
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe_bind(credential["durable"], stream="CASEFLOW_DEPT")

            async def forwarded() -> dict[str, Any] | None:
                try:
                    msgs = await sub.fetch(10, timeout=1)
                except nats.errors.TimeoutError:
                    return None
                found: dict[str, Any] | None = None
                for msg in msgs:
                    await msg.ack()
                    body = json.loads(msg.data)
                    if body["case_id"] == case_id:
                        found = body
                return found

            request: dict[str, Any] = await eventually(
                forwarded, what="the forwarded case at the department", timeout=60
            )
            answer = {
                "case_id": case_id,
                "outcome": "approve",
                "officer": "liu.forestry",
                "decision_number": "韩林采字〔2026〕88号",
            }
            for _ in range(2):  # the department system sends it twice: recorded once
                await js.publish(
                    credential["answer_subject"],
                    json.dumps(answer).encode(),
                    headers={"Nats-Msg-Id": f"answer-{case_id}"},
                )
            return request
        finally:
            await nc.close()

    request = asyncio.run(department())
    assert request["authority"] == "hc_forestry" and request["item_code"] == item.code
    events = wait_for_event(desk.intake, case_id, "CaseApproved")
    approved = [e for e in events if e["event_type"] == "CaseApproved"]
    assert len(approved) == 1
    assert approved[0]["actor"] == {
        "user": "liu.forestry",
        "role": "department_officer",
        "station": "hc_forestry",
    }
    assert approved[0]["authority"] == "hc_forestry"
    assert approved[0]["payload"]["decision_number"] == "韩林采字〔2026〕88号"
    desk.act(case_id, "deliver", CLERK, {"method": "post"})
    assert desk.act(case_id, "close", CLERK)["status"] == "closed"
