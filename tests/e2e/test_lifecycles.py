"""Each kind of case from intake to closed over the real stack — the three services as
processes, nats-server and the database of ``CASEFLOW_TEST_E2E_BACKENDS`` — with every
step's event checked: who acted, in whose name, and under which delegation and version.

The expected authority and delegation of a step are worked out here, from the seed
instruments (shared/data/delegations.yaml) and the power each action uses (domain.md),
not asked of the engine; an instrument's current version is read from the delegations
API at the moment of the step. One stack per backend serves the whole module.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import nats.errors
import pytest

from shared.adapters.delegations import load_seed_delegations
from shared.devtools import httpcalls
from shared.devtools.waiting import eventually, wait_until
from shared.domain.catalogue import Completion, ServiceItem, load_catalogue
from tests.services import (
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
SEED = load_seed_delegations()

POWER_OF = {
    "receive": "receive",
    "accept": "accept",
    "request_correction": "accept",
    "refuse": "accept",
    "submit_correction": "receive",
    "withdraw": "receive",
    "start_review": "review",
    "suspend": "review",
    "resume": "review",
    "complete_review": "review",
    "forward": "review",
    "extend": "decide",
    "approve": "decide",
    "reject": "decide",
    "deliver": "deliver",
    "close": "deliver",
}
"""The delegated power each action on an application uses; others (rate, claim, release,
every step of a matter) use none and are taken in the actor's own name."""

TOWN_OF = {"xuefeng_station": "banqiao_town", "longmen_station": "banqiao_town"}
"""A station's own work is done in the name of its town government."""

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Person:
    """A member of staff, signed in with a token of the test session's key."""

    user: str
    role: str
    org: str

    @property
    def headers(self) -> dict[str, str]:
        return _headers(self.user, self.role, self.org)

    @property
    def actor(self) -> dict[str, str]:
        return {"user": self.user, "role": self.role, "station": self.org}


@functools.cache
def _headers(user: str, role: str, org: str) -> dict[str, str]:
    return staff_headers(user, role, org)


def officer(org: str) -> Person:
    return Person(f"officer.{org}", "department_officer", org)


XF_CLERK = Person("li.clerk", "window_clerk", "xuefeng_station")
XF_REVIEWER = Person("wang.reviewer", "reviewer", "xuefeng_station")
XF_REVIEWER_2 = Person("sun.reviewer", "reviewer", "xuefeng_station")
XF_HEAD = Person("zhao.head", "station_head", "xuefeng_station")
LM_CLERK = Person("chen.clerk", "window_clerk", "longmen_station")
LM_REVIEWER = Person("chen.reviewer", "reviewer", "longmen_station")
LM_HEAD = Person("liu.head", "station_head", "longmen_station")
AUDITOR = Person("qian.audit", "auditor", "hc_audit")

Grant = tuple[str | None, str | None, int | None]
"""(authority, delegation id, delegation version) a step must name."""


def complete(item: ServiceItem) -> dict[str, Any]:
    """An application with every material of ``item``, originals checked."""
    return {
        "item_code": item.code,
        "applicant": VALID_APPLICANT,
        "materials": [{"code": m.code, "original_checked": True} for m in item.materials],
    }


@pytest.fixture(scope="module")
def stack(
    module_db_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    with running_stack(module_db_url, nats_url, tmp_path_factory.mktemp("logs")) as services:
        yield services


class Station:
    """The stack seen through HTTP, checking every step it takes."""

    def __init__(self, stack: Mapping[str, ServiceProcess]) -> None:
        self.intake = stack["intake"].base_url
        self.processing = stack["processing"].base_url
        self.versions: dict[str, int] = {}
        """Instrument versions read from the API; clear it after changing one."""

    # -- what a step must record -------------------------------------------------------

    def delegation(self, code: str, who: Person = AUDITOR) -> dict[str, Any]:
        response = httpcalls.get(f"{self.processing}/delegations/{code}", headers=who.headers)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def expected(self, who: Person, item: ServiceItem | None, action: str) -> Grant:
        """In whose name, under which instrument and version ``who`` takes ``action``."""
        power = POWER_OF.get(action)
        if item is None or power is None:
            return TOWN_OF.get(who.org, who.org), None, None
        if who.org == item.authority:
            return who.org, None, None
        for instrument in SEED:
            if (
                instrument.delegate == who.org
                and item.code in instrument.items
                and power in instrument.powers
            ):
                authority = (
                    instrument.delegate if instrument.mode == "authorised" else instrument.delegator
                )
                if instrument.code not in self.versions:
                    self.versions[instrument.code] = self.delegation(instrument.code)["version"]
                return authority, instrument.code, self.versions[instrument.code]
        raise AssertionError(f"no seed instrument lets {who.org} {power} {item.code}")

    def assert_step(self, event: Mapping[str, Any], who: Person, item: ServiceItem | None) -> None:
        action = event["payload"]["action"]
        assert event["actor"] == who.actor, (action, event["actor"])
        named = (event["authority"], event["delegation_id"], event["delegation_version"])
        assert named == self.expected(who, item, action), (action, named)

    def recorded(
        self, answer: Mapping[str, Any], who: Person, item: ServiceItem | None
    ) -> list[dict[str, Any]]:
        """The events the answer says were recorded, each checked against the oracle."""
        history = self.events(answer["case_id"], who)
        version = answer["version"]
        types = answer["recorded"]
        mine = [e for e in history if version - len(types) < e["version"] <= version]
        assert [e["event_type"] for e in mine] == types, (types, mine)
        for event in mine:
            self.assert_step(event, who, item)
        return mine

    # -- commands ----------------------------------------------------------------------

    def post(
        self, url: str, who: Person, body: Mapping[str, Any], key: str | None = None
    ) -> httpx.Response:
        headers = {**who.headers, "Idempotency-Key": key or uuid.uuid4().hex}
        return httpcalls.post(url, json=dict(body), headers=headers, timeout=10)

    def open(
        self,
        body: Mapping[str, Any],
        who: Person,
        item: ServiceItem | None,
        path: str = "/cases",
    ) -> dict[str, Any]:
        """Hand in an application or open a matter; check what intake recorded."""
        response = self.post(f"{self.intake}{path}", who, body)
        assert response.status_code == 201, response.text
        answer: dict[str, Any] = response.json()
        self.recorded(answer, who, item)
        return answer

    def act(
        self,
        case_id: str,
        action: str,
        who: Person,
        item: ServiceItem | None,
        body: Mapping[str, Any] | None = None,
        *,
        status: str | None = None,
    ) -> dict[str, Any]:
        """Take an action; check the answer's status and every event it recorded."""
        url = f"{self.processing}/cases/{case_id}/actions/{action}"
        response = self.post(url, who, body or {})
        assert response.status_code == 200, (action, response.text)
        answer: dict[str, Any] = response.json()
        if status is not None:
            assert answer["status"] == status, (action, answer["status"])
        self.recorded(answer, who, item)
        return answer

    def attempt(
        self, case_id: str, action: str, who: Person, body: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        url = f"{self.processing}/cases/{case_id}/actions/{action}"
        return self.post(url, who, body or {})

    def refused(
        self,
        case_id: str,
        action: str,
        who: Person,
        reason: str,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The attempt is answered 403 problem+json, recorded as ``ActionRefused`` naming
        the actor, and leaves the case where it was."""
        before = self.case(case_id, who)
        response = self.attempt(case_id, action, who, body)
        assert response.status_code == 403, (action, response.text)
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        problem: dict[str, Any] = response.json()
        assert (problem["status"], problem["reason"]) == (403, reason), problem
        assert problem["detail"]
        refusals = [
            e
            for e in self.events(case_id, who)
            if e["event_type"] == "ActionRefused" and e["version"] > before["version"]
        ]
        assert len(refusals) == 1, refusals
        refusal = refusals[0]
        assert refusal["actor"] == who.actor
        assert refusal["payload"]["action"] == action
        assert refusal["payload"]["reason"] == reason
        assert refusal["payload"]["status"] == before["status"]
        assert self.case(case_id, who)["status"] == before["status"]
        return problem

    # -- reads -------------------------------------------------------------------------

    def case(self, case_id: str, who: Person) -> dict[str, Any]:
        response = httpcalls.get(f"{self.processing}/cases/{case_id}", headers=who.headers)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def events(self, case_id: str, who: Person) -> list[dict[str, Any]]:
        url = f"{self.processing}/cases/{case_id}/events"
        response = httpcalls.get(url, headers=who.headers, timeout=5)
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def wait_notice(self, case_id: str, about: str) -> None:
        """Until a notice about the case's ``about`` event is recorded (notices of other
        events may come first)."""
        wait_for_event(
            self.intake,
            case_id,
            "NotificationSent",
            headers=XF_CLERK.headers,
            where=lambda e: e["payload"].get("about_event_type") == about,
        )

    def history(self, case_id: str, who: Person) -> list[str]:
        """The case's event types, leaving out notifications and the record of a forwarded
        case's disclosure to its department (they arrive when they do)."""
        return [
            e["event_type"]
            for e in self.events(case_id, who)
            if not e["event_type"].startswith("Notification")
            and e["event_type"] != "PersonalDataDisclosed"
        ]

    def worklist(self, who: Person) -> list[dict[str, Any]]:
        response = httpcalls.get(f"{self.processing}/worklist", headers=who.headers, timeout=5)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["org"], answer["role"]) == (who.org, who.role)
        tasks: list[dict[str, Any]] = answer["tasks"]
        return tasks

    def wait_worklist(
        self,
        who: Person,
        case_id: str,
        done: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll ``who``'s worklist (a read model, a moment behind the log) until the
        case's tasks satisfy ``done``."""
        seen: list[list[dict[str, Any]]] = []

        def settled() -> bool:
            seen[:] = [[t for t in self.worklist(who) if t["case_id"] == case_id]]
            return done(seen[0])

        wait_until(
            settled,
            what=f"{who.user}'s worklist for {case_id} to change",
            timeout=timeout,
            detail=lambda: f"it stayed {seen}",
        )
        return seen[0]

    def wait_task(
        self, who: Person, case_id: str, kind: str, claimed_by: str | None = None
    ) -> dict[str, Any]:
        """The case's task of ``kind`` on ``who``'s worklist."""
        tasks = self.wait_worklist(
            who,
            case_id,
            lambda ts: [(t["task"], t["claimed_by"]) for t in ts] == [(kind, claimed_by)],
        )
        return tasks[0]

    def wait_no_task(self, who: Person, case_id: str) -> None:
        self.wait_worklist(who, case_id, lambda ts: not ts)

    def assert_hidden_from(self, case_id: str, who: Person) -> None:
        """Staff of another organisation can't read, list, find or act on the case."""
        for path in (f"/cases/{case_id}", f"/cases/{case_id}/events"):
            for base in (self.intake, self.processing):
                response = httpcalls.get(f"{base}{path}", headers=who.headers, timeout=5)
                assert response.status_code == 404, (path, response.text)
        applicant = httpcalls.get(
            f"{self.intake}/cases/{case_id}/applicant",
            params={"reason": "checking a visitor's question"},
            headers=who.headers,
        )
        assert applicant.status_code == 404, applicant.text
        listed = httpcalls.get(f"{self.processing}/cases", headers=who.headers, timeout=5)
        assert case_id not in [c["case_id"] for c in listed.json()["cases"]]
        assert case_id not in [t["case_id"] for t in self.worklist(who)]
        before = len(self.history(case_id, AUDITOR))
        assert self.attempt(case_id, "claim", who).status_code == 404
        assert len(self.history(case_id, AUDITOR)) == before  # nothing recorded

    # -- whole stretches ---------------------------------------------------------------

    def review(self, case_id: str, item: ServiceItem, reviewer: Person = XF_REVIEWER) -> None:
        self.act(case_id, "start_review", reviewer, item, status="in_review")
        opinion = {"recommendation": "approve", "opinion": "材料齐全、符合条件 / eligible"}
        self.act(case_id, "complete_review", reviewer, item, opinion, status="reviewed")

    def decide_and_close(self, case_id: str, item: ServiceItem) -> dict[str, Any]:
        """From reviewed to closed: decided at the station or by the department, then
        delivered and closed by the window."""
        if item.completion is Completion.station:
            number = {"decision_number": f"XF-{item.code}-1"}
            self.act(case_id, "approve", XF_HEAD, item, number, status="approved")
        else:
            assert item.forward_to is not None
            sent = self.act(case_id, "forward", XF_REVIEWER, item, status="forwarded")
            assert sent["forward_to"] == item.forward_to
            self.act(case_id, "approve", officer(item.forward_to), item, status="approved")
        self.act(case_id, "deliver", XF_CLERK, item, {"method": "in_person"}, status="delivered")
        return self.act(case_id, "close", XF_CLERK, item, status="closed")


def station_steps(item: ServiceItem) -> list[str]:
    """The event types of a case accepted at the window and closed after approval."""
    decision = (
        ["CaseApproved"]
        if item.completion is Completion.station
        else ["CaseForwarded", "CaseApproved"]
    )
    return [
        "CaseReceived",
        "CaseAccepted",
        "ReviewStarted",
        "ReviewCompleted",
        *decision,
        "CaseDelivered",
        "CaseClosed",
    ]


# -- applications ------------------------------------------------------------------------


def test_station_item_from_intake_to_closed(stack: dict[str, ServiceProcess]) -> None:
    desk = Station(stack)
    item = CATALOGUE.get("pension_enrolment")
    answer = desk.open(VALID_APPLICATION, XF_CLERK, item)
    case_id = answer["case_id"]
    assert answer["status"] == "accepted"
    assert answer["case_number"].startswith("XF-")
    assert answer["item"]["code"] == item.code and answer["item"]["version"] == item.version
    assert answer["workflow"] == {"name": "station_item", "version": 1}
    assert answer["authority"] == "hc_hrss"

    # The review waits for the station's reviewers, and for no one else.
    desk.wait_task(XF_REVIEWER, case_id, "review")
    for other in (XF_CLERK, XF_HEAD, LM_REVIEWER, officer("hc_hrss")):
        assert case_id not in [t["case_id"] for t in desk.worklist(other)]
    desk.act(case_id, "claim", XF_REVIEWER, item)
    desk.wait_task(XF_REVIEWER, case_id, "review", claimed_by=XF_REVIEWER.user)
    desk.review(case_id, item)

    desk.wait_task(XF_HEAD, case_id, "decide")
    desk.wait_no_task(XF_REVIEWER, case_id)
    approved = desk.act(
        case_id, "approve", XF_HEAD, item, {"decision_number": "韩人社养〔2026〕7号"}
    )
    assert approved["outcome"] == "approved"

    desk.wait_task(XF_CLERK, case_id, "deliver")
    desk.act(case_id, "deliver", XF_CLERK, item, {"method": "in_person"}, status="delivered")
    desk.act(case_id, "rate", XF_CLERK, item, {"score": 5}, status="delivered")
    closed = desk.act(case_id, "close", XF_CLERK, item, status="closed")
    assert closed["outcome"] == "approved" and closed["rating"] == 5
    desk.wait_no_task(XF_CLERK, case_id)

    assert desk.history(case_id, XF_CLERK) == [
        "CaseReceived",
        "CaseAccepted",
        "TaskClaimed",
        "ReviewStarted",
        "ReviewCompleted",
        "CaseApproved",
        "CaseDelivered",
        "SatisfactionRated",
        "CaseClosed",
    ]
    desk.wait_notice(case_id, "CaseAccepted")


def test_forwarded_item_decided_by_the_department_over_http(
    stack: dict[str, ServiceProcess],
) -> None:
    """低保: the station receives, accepts and pre-reviews for the civil affairs bureau;
    the town decides in the bureau's name under the bureau's delegation to it."""
    desk = Station(stack)
    item = CATALOGUE.get("minimum_living_allowance")
    assert (item.authority, item.forward_to) == ("hc_civil_affairs", "banqiao_town")
    town = officer("banqiao_town")
    case_id = desk.open(complete(item), XF_CLERK, item)["case_id"]
    desk.review(case_id, item)
    desk.wait_task(XF_REVIEWER, case_id, "forward")
    sent = desk.act(case_id, "forward", XF_REVIEWER, item, status="forwarded")
    assert sent["forward_to"] == "banqiao_town"

    # The answer waits for the town's officers: not the station, not the bureau.
    desk.wait_task(town, case_id, "answer")
    for other in (officer("hc_civil_affairs"), XF_HEAD, XF_REVIEWER):
        assert case_id not in [t["case_id"] for t in desk.worklist(other)]
    assert desk.case(case_id, town)["status"] == "forwarded"
    desk.assert_hidden_from(case_id, officer("hc_forestry"))

    desk.act(case_id, "claim", town, item)
    desk.wait_task(town, case_id, "answer", claimed_by=town.user)
    number = {"decision_number": "板民低保〔2026〕12号", "opinion": "经入户调查，符合条件"}
    decided = desk.act(case_id, "approve", town, item, number, status="approved")
    event = desk.events(case_id, town)[decided["version"] - 1]
    assert event["event_type"] == "CaseApproved"
    assert event["authority"] == "hc_civil_affairs"
    assert event["delegation_id"] == "civil-affairs-banqiao-2021"
    desk.wait_no_task(town, case_id)

    desk.wait_task(XF_CLERK, case_id, "deliver")
    desk.act(case_id, "deliver", XF_CLERK, item, {"method": "post"}, status="delivered")
    desk.act(case_id, "close", XF_CLERK, item, status="closed")
    steps = station_steps(item)
    assert desk.history(case_id, XF_CLERK) == [
        *steps[:4],
        "CaseForwarded",
        "TaskClaimed",
        *steps[5:],
    ]
    # The request to the town carried the applicant: recorded once, naming the town.
    disclosed = [
        e for e in desk.events(case_id, XF_CLERK) if e["event_type"] == "PersonalDataDisclosed"
    ]
    assert [e["payload"]["to"] for e in disclosed] == ["banqiao_town"]


def test_forwarded_item_decided_by_the_department_over_nats(
    stack: dict[str, ServiceProcess], nats_bus: BusServer
) -> None:
    """特困供养: the department's own system reads the request from
    ``caseflow.dept.banqiao_town.requests`` and answers (a rejection) on ``.answers``."""
    desk = Station(stack)
    item = CATALOGUE.get("extreme_poverty_support")
    case_id = desk.open(complete(item), XF_CLERK, item)["case_id"]
    desk.review(case_id, item)
    forwarded = desk.act(case_id, "forward", XF_REVIEWER, item, status="forwarded")
    reasons = ["家庭人均收入高于当地特困供养标准 / household income above the threshold"]

    # The department's system, with the credential `caseflow nats credentials` issues.
    credential = issue_department(nats_bus, "banqiao_town")

    async def department() -> dict[str, Any]:
        nc = await connect_department(credential)
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe_bind(credential["durable"], stream="CASEFLOW_DEPT")

            async def forwarded() -> dict[str, Any] | None:
                try:
                    msgs = await sub.fetch(50, timeout=1)
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
                forwarded, what="the forwarded case at the town", timeout=15
            )
            answer = {
                "case_id": case_id,
                "outcome": "reject",
                "officer": "zhou.banqiao",
                "reasons": reasons,
                "decision_number": "板民特〔2026〕3号",
            }
            for _ in range(2):  # the town's system sends it twice: decided once
                await js.publish(
                    credential["answer_subject"],
                    json.dumps(answer).encode(),
                    headers={"Nats-Msg-Id": f"answer-{case_id}"},
                )
            return request
        finally:
            await nc.close()

    request = asyncio.run(department())
    assert request["authority"] == "banqiao_town"
    assert request["answer_subject"] == "caseflow.dept.banqiao_town.answers"
    assert (request["item_code"], request["case_number"]) == (item.code, forwarded["case_number"])
    assert request["station"] == "xuefeng_station" and request["deadline"]
    assert set(request["materials"]) == {m.code for m in item.materials}

    history = wait_for_event(desk.intake, case_id, "CaseRejected", headers=XF_CLERK.headers)
    rejected, *again = [e for e in history if e["event_type"] == "CaseRejected"]
    assert not again, again
    desk.assert_step(rejected, Person("zhou.banqiao", "department_officer", "banqiao_town"), item)
    assert rejected["delegation_id"] == "civil-affairs-banqiao-2021"
    assert rejected["payload"]["reasons"] == reasons
    assert rejected["payload"]["decision_number"] == "板民特〔2026〕3号"

    desk.wait_task(XF_CLERK, case_id, "deliver")
    desk.act(case_id, "deliver", XF_CLERK, item, {"method": "in_person"}, status="delivered")
    closed = desk.act(case_id, "close", XF_CLERK, item, status="closed")
    assert closed["outcome"] == "rejected"
    assert desk.history(case_id, XF_CLERK) == [
        *station_steps(item)[:5],
        "CaseRejected",
        "CaseDelivered",
        "CaseClosed",
    ]


def test_correction_path_one_notice_listing_everything(stack: dict[str, ServiceProcess]) -> None:
    desk = Station(stack)
    item = CATALOGUE.get("funeral_subsidy")
    partial = {**complete(item), "materials": [{"code": "id_card", "original_checked": False}]}
    answer = desk.open(partial, XF_CLERK, item)
    case_id = answer["case_id"]
    assert answer["status"] == "correction_requested"
    assert answer["recorded"] == ["CaseReceived", "CorrectionRequested"]
    notices = [
        e for e in desk.events(case_id, XF_CLERK) if e["event_type"] == "CorrectionRequested"
    ]
    assert len(notices) == 1
    listed = {m["code"]: m["problem"] for m in notices[0]["payload"]["missing"]}
    # Every material at once: the ID card handed in without its original checked, and all
    # the others missing.
    assert listed == {
        m.code: "defective" if m.code == "id_card" else "missing" for m in item.materials
    }
    assert notices[0]["payload"]["deadline"] == answer["receipt"]["deadline"]
    assert answer["correction_deadline"] == answer["receipt"]["deadline"]

    corrected = desk.act(
        case_id, "submit_correction", XF_CLERK, item, {"materials": sorted(listed)}
    )
    assert corrected["status"] == "corrected"
    accepted = desk.act(case_id, "accept", XF_CLERK, item, status="accepted")
    assert accepted["case_number"].startswith("XF-") and accepted["accepted_on"]
    desk.review(case_id, item)
    desk.decide_and_close(case_id, item)

    steps = station_steps(item)
    assert desk.history(case_id, XF_CLERK) == [
        "CaseReceived",
        "CorrectionRequested",
        "CorrectionReceived",
        *steps[1:],
    ]
    desk.wait_notice(case_id, "CorrectionRequested")


def test_refusal_with_reason_and_appeal_notice(stack: dict[str, ServiceProcess]) -> None:
    desk = Station(stack)
    item = CATALOGUE.get("pension_enrolment")
    later = {**VALID_APPLICATION, "decide": "later"}
    answer = desk.open(later, XF_CLERK, item)
    case_id = answer["case_id"]
    assert answer["status"] == "received" and answer["recorded"] == ["CaseReceived"]

    reason = "申请人已在城镇职工养老保险参保，不属于本事项受理范围"
    body = {"reason": reason, "apply_instead_at": "韩城市社会保险经办中心"}
    refused = desk.act(case_id, "refuse", XF_HEAD, item, body, status="not_accepted")
    assert refused["tasks"] == []
    # the last act on the case; a notice of the receipt may have been recorded after it
    acts = desk.events(case_id, XF_HEAD)
    event = [e for e in acts if not e["event_type"].startswith("Notification")][-1]
    assert event["event_type"] == "CaseNotAccepted"
    assert event["payload"]["reason"] == reason
    assert event["payload"]["apply_instead_at"] == "韩城市社会保险经办中心"
    assert "行政复议" in event["payload"]["appeal_notice_zh"]
    assert "行政诉讼" in event["payload"]["appeal_notice_zh"]
    assert "reconsideration" in event["payload"]["appeal_notice_en"]

    # Not accepted is final at the window.
    assert desk.attempt(case_id, "accept", XF_CLERK).status_code == 409
    assert desk.history(case_id, XF_CLERK) == ["CaseReceived", "CaseNotAccepted"]


# -- matters -----------------------------------------------------------------------------

Steps = list[tuple[str, Person, dict[str, Any], str]]
"""(action, who, body, the event it records)"""
MATTERS: dict[str, tuple[dict[str, Any], Person, tuple[str, Person], Steps]] = {
    "mediation": (
        {
            "title": "宅基地边界纠纷 / homestead boundary dispute",
            "parties": ["张建国", "李卫东"],
            "village": "gongyu",
            "summary": "两户因院墙位置发生争执",
        },
        XF_CLERK,
        ("mediate", XF_HEAD),
        [
            ("hold_session", XF_HEAD, {"notes": "双方到场，各自陈述"}, "MediationSessionHeld"),
            (
                "conclude",
                XF_HEAD,
                {"outcome": "agreement", "summary": "按原界桩重砌院墙"},
                "MediationConcluded",
            ),
            ("close", XF_CLERK, {}, "CaseClosed"),
        ],
    ),
    "legal_publicity": (
        {"topic": "《民法典》婚姻家庭编", "village": "xiangshan", "planned_on": "2026-12-05"},
        XF_HEAD,
        ("hold_session", XF_CLERK),
        [
            ("hold", XF_CLERK, {"attendees": 46}, "SessionHeld"),
            ("close", XF_HEAD, {}, "CaseClosed"),
        ],
    ),
    "assistance": (
        {"person_name": "王老汉", "village": "wangcun", "need": "独居老人冬季取暖困难"},
        XF_CLERK,
        ("assist", XF_HEAD),
        [
            ("provide", XF_HEAD, {"description": "送去棉被和煤炭"}, "AssistanceProvided"),
            ("close", XF_HEAD, {}, "CaseClosed"),
        ],
    ),
    "police_assistance": (
        {"police_unit": "板桥派出所", "reference": "韩公(板)2026-114", "summary": "协查走失人员"},
        XF_HEAD,
        ("assist_police", XF_HEAD),
        [
            (
                "provide",
                XF_CLERK,
                {"description": "组织村民沿山路搜寻", "case_solved": True},
                "PoliceAssistanceProvided",
            ),
            ("close", XF_HEAD, {}, "CaseClosed"),
        ],
    ),
}
"""Each matter: its opening, who opens it, its task and whose it is, then the steps."""

OPENED = {
    "mediation": "DisputeRegistered",
    "legal_publicity": "SessionPlanned",
    "assistance": "AssistanceRequested",
    "police_assistance": "PoliceAssistanceRequested",
}


@pytest.mark.parametrize("kind", sorted(MATTERS))
def test_matter_from_opening_to_closed(stack: dict[str, ServiceProcess], kind: str) -> None:
    """The station's own matters are done in the town's name, under no delegation."""
    desk = Station(stack)
    opening, opener, (task, holder), steps = MATTERS[kind]
    answer = desk.open(opening, opener, None, f"/matters/{kind}")
    case_id = answer["case_id"]
    assert answer["case_kind"] == kind and answer["case_number"].startswith("XF-")
    assert answer["recorded"] == [OPENED[kind]]
    desk.wait_task(holder, case_id, task)
    desk.assert_hidden_from(case_id, LM_HEAD)
    for action, who, body, _ in steps:
        desk.act(case_id, action, who, None, body)
    assert desk.case(case_id, XF_HEAD)["status"] == "closed"
    desk.wait_no_task(holder, case_id)
    assert desk.history(case_id, XF_HEAD) == [OPENED[kind], *(s[3] for s in steps)]
    for event in desk.events(case_id, XF_HEAD):
        if event["event_type"].startswith("Notification"):
            continue  # notify's records of telling staff, not acts under a power
        assert event["authority"] == "banqiao_town" and event["delegation_id"] is None


# -- worklists and stations kept apart ---------------------------------------------------


def test_worklists_claims_and_stations_kept_apart(stack: dict[str, ServiceProcess]) -> None:
    desk = Station(stack)
    item = CATALOGUE.get("pension_enrolment")
    xuefeng = desk.open(VALID_APPLICATION, XF_CLERK, item)["case_id"]
    longmen_answer = desk.open(VALID_APPLICATION, LM_CLERK, item)
    longmen = longmen_answer["case_id"]
    assert longmen_answer["status"] == "accepted"
    assert longmen_answer["case_number"].startswith("LM-")

    # Each station's reviewers see their own station's review, never the other's.
    desk.wait_task(XF_REVIEWER, xuefeng, "review")
    desk.wait_task(LM_REVIEWER, longmen, "review")
    assert xuefeng not in [t["case_id"] for t in desk.worklist(LM_REVIEWER)]
    assert longmen not in [t["case_id"] for t in desk.worklist(XF_REVIEWER)]
    desk.assert_hidden_from(xuefeng, LM_REVIEWER)
    desk.assert_hidden_from(longmen, XF_HEAD)
    number = desk.case(xuefeng, XF_CLERK)["case_number"]
    found = httpcalls.get(f"{desk.processing}/cases/by-number/{number}", headers=LM_HEAD.headers)
    assert found.status_code == 404

    # Claim, a colleague kept out, release, the colleague takes it.
    desk.act(xuefeng, "claim", XF_REVIEWER, item)
    desk.wait_task(XF_REVIEWER_2, xuefeng, "review", claimed_by=XF_REVIEWER.user)
    assert desk.attempt(xuefeng, "claim", XF_REVIEWER_2).status_code == 409
    blocked = desk.attempt(xuefeng, "start_review", XF_REVIEWER_2)
    assert blocked.status_code == 409 and XF_REVIEWER.user in blocked.json()["detail"]
    assert desk.attempt(xuefeng, "claim", XF_CLERK).status_code == 409  # no clerk task
    desk.act(xuefeng, "release", XF_REVIEWER, item)
    desk.wait_task(XF_REVIEWER, xuefeng, "review")
    desk.act(xuefeng, "claim", XF_REVIEWER_2, item)
    desk.review(xuefeng, item, XF_REVIEWER_2)
    desk.wait_task(XF_HEAD, xuefeng, "decide")
    assert desk.history(xuefeng, XF_HEAD) == [
        "CaseReceived",
        "CaseAccepted",
        "TaskClaimed",
        "TaskReleased",
        "TaskClaimed",
        "ReviewStarted",
        "ReviewCompleted",
    ]
    # Longmen's case moved on under Longmen's own delegation.
    desk.review(longmen, item, LM_REVIEWER)
    desk.wait_task(LM_HEAD, longmen, "decide")
    assert xuefeng not in [t["case_id"] for t in desk.worklist(LM_HEAD)]


# -- refused attempts --------------------------------------------------------------------


def test_refused_attempts_are_answered_403_and_recorded(stack: dict[str, ServiceProcess]) -> None:
    desk = Station(stack)
    item = CATALOGUE.get("pension_enrolment")
    case_id = desk.open(VALID_APPLICATION, XF_CLERK, item)["case_id"]
    desk.review(case_id, item)
    # Wrong roles: neither the clerk, the reviewer nor the bureau's own officer decides
    # a station item; the head then does.
    for who in (XF_CLERK, XF_REVIEWER):
        desk.refused(case_id, "approve", who, "wrong_role")
    # The bureau sees the case but has no part in it: refused the same, and its attempt
    # is kept apart, not written into the station's case.
    before = desk.history(case_id, XF_HEAD)
    bureau = desk.attempt(case_id, "approve", officer("hc_hrss"))
    assert bureau.status_code == 403 and bureau.json()["reason"] == "wrong_role", bureau.text
    assert desk.history(case_id, XF_HEAD) == before
    desk.act(case_id, "approve", XF_HEAD, item, status="approved")
    assert desk.history(case_id, XF_HEAD)[-3:] == ["ActionRefused"] * 2 + ["CaseApproved"]

    # A power the delegation lacks: Longmen only *receives* medical insurance
    # enrolments for the bureau — the case is received in the bureau's name, no more.
    medical = CATALOGUE.get("medical_insurance_enrolment")
    received = desk.open(complete(medical), LM_CLERK, medical)
    assert received["status"] == "received" and received["recorded"] == ["CaseReceived"]
    for who in (LM_CLERK, LM_HEAD):
        desk.refused(received["case_id"], "accept", who, "outside_delegation")

    # Xuefeng may review forestry items and forward them, not decide: no extension.
    logging = CATALOGUE.get("logging_permit")
    forwarded = desk.open(complete(logging), XF_CLERK, logging)["case_id"]
    desk.review(forwarded, logging)
    desk.act(forwarded, "forward", XF_REVIEWER, logging, status="forwarded")
    desk.refused(forwarded, "approve", XF_HEAD, "wrong_role")
    desk.refused(forwarded, "extend", XF_HEAD, "outside_delegation", {"reason": "需现场勘验"})

    # An item Longmen holds no delegation for: refused at the window, no case opened.
    key = uuid.uuid4().hex
    response = desk.post(f"{desk.intake}/cases", LM_CLERK, complete(logging), key)
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["reason"] == "outside_delegation"
    # Nothing was opened under the key: the same request again is refused again, not
    # answered with a case.
    again = desk.post(f"{desk.intake}/cases", LM_CLERK, complete(logging), key)
    assert again.status_code == 403, again.text


def test_revocation_refuses_what_was_granted_before(stack: dict[str, ServiceProcess]) -> None:
    """Banqiao town entrusted Longmen with temporary assistance. Each action is checked
    against the instrument as it stands at that moment, and names its version."""
    desk = Station(stack)
    code = "banqiao-longmen-2022"
    item = CATALOGUE.get("temporary_assistance")
    town = officer("banqiao_town")
    answer = desk.open(complete(item), LM_CLERK, item)
    case_id = answer["case_id"]
    accepted = desk.events(case_id, LM_CLERK)[1]
    assert (accepted["event_type"], accepted["delegation_id"]) == ("CaseAccepted", code)
    assert accepted["delegation_version"] == 1

    def change(what: str, who: Person, expect: int = 200) -> dict[str, Any]:
        url = f"{desk.processing}/delegations/{code}/{what}"
        response = desk.post(url, who, {"reason": f"{what}: 站点人员调整 / staffing"})
        assert response.status_code == expect, response.text
        desk.versions.clear()
        changed: dict[str, Any] = response.json()
        return changed

    # Only the delegator changes its instrument.
    change("suspension", officer("hc_civil_affairs"), 403)
    assert change("suspension", town)["version"] == 2
    desk.refused(case_id, "start_review", LM_REVIEWER, "delegation_suspended")
    assert change("resumption", town)["version"] == 3
    started = desk.act(case_id, "start_review", LM_REVIEWER, item, status="in_review")
    granted = desk.events(case_id, LM_REVIEWER)[started["version"] - 1]
    assert (granted["delegation_id"], granted["delegation_version"]) == (code, 3)

    revoked = change("revocation", town)
    assert (revoked["version"], revoked["status"]) == (4, "revoked")
    opinion = {"recommendation": "approve", "opinion": "困难属实"}
    desk.refused(case_id, "complete_review", LM_REVIEWER, "delegation_revoked", opinion)
    # The intake process sees the revocation too; Xuefeng's own instrument is untouched.
    again = desk.post(f"{desk.intake}/cases", LM_CLERK, complete(item))
    assert again.status_code == 403 and again.json()["reason"] == "delegation_revoked"
    assert desk.open(complete(item), XF_CLERK, item)["status"] == "accepted"
    assert desk.history(case_id, LM_REVIEWER) == [
        "CaseReceived",
        "CaseAccepted",
        "ActionRefused",
        "ReviewStarted",
        "ActionRefused",
    ]


# -- the whole catalogue -----------------------------------------------------------------


def test_every_catalogue_item_from_intake_to_closed(stack: dict[str, ServiceProcess]) -> None:
    """All 27 items, each step checked."""
    desk = Station(stack)
    items = CATALOGUE.published()
    assert len(items) == 27
    assert sum(i.completion is Completion.station for i in items) == 10
    for item in items:
        answer = desk.open(complete(item), XF_CLERK, item)
        assert answer["status"] == "accepted", (item.code, answer["status"])
        workflow = "station_item" if item.completion is Completion.station else "forwarded_item"
        assert answer["workflow"]["name"] == workflow
        case_id = answer["case_id"]
        desk.review(case_id, item)
        closed = desk.decide_and_close(case_id, item)
        assert closed["outcome"] == "approved", item.code
        assert desk.history(case_id, XF_CLERK) == station_steps(item), item.code
