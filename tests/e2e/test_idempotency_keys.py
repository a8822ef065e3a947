"""Idempotency-Keys belong to their sender, over the real services, on both backends.

Every keyed operation — ``POST /cases``, each ``POST /matters/…``, ``POST /reception``,
``POST /cases/{id}/actions/{action}`` and ``POST /webhooks`` — is sent with one
guessable key by its first sender, by a colleague at the same station, and by staff of
another station who even share the first sender's user name. Only the first sender's
retry is a replay; everyone else's is a request of their own (or a 404 for a case they
may not see), and nothing of the first answer reaches them.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from shared.devtools import httpcalls
from tests.services import (
    VALID_APPLICATION,
    ServiceProcess,
    running_stack,
    staff_headers,
)

XF_CLERK = staff_headers("li.clerk", "window_clerk", "xuefeng_station")
XF_COLLEAGUE = staff_headers("chen.clerk", "window_clerk", "xuefeng_station")
# Another station's clerk with the same user name: only the organisation tells them apart.
LM_CLERK = staff_headers("li.clerk", "window_clerk", "longmen_station")
XF_REVIEWER = staff_headers("wang.reviewer", "reviewer", "xuefeng_station")
XF_REVIEWER_2 = staff_headers("liu.reviewer", "reviewer", "xuefeng_station")
LM_REVIEWER = staff_headers("wang.reviewer", "reviewer", "longmen_station")
XF_HEAD = staff_headers("zhao.head", "station_head", "xuefeng_station")
XF_HEAD_2 = staff_headers("sun.head", "station_head", "xuefeng_station")
LM_HEAD = staff_headers("zhao.head", "station_head", "longmen_station")
AUDITOR = staff_headers("audit", "auditor", "hc_audit")

_KEYS = itertools.count(1)


def guessable_key() -> str:
    """A key like the demo's: a pattern anyone could guess (unique within the run)."""
    return f"window-{next(_KEYS):04d}-{uuid.uuid4().hex[:6]}"


# (path, body, changed body, the answer's id field)
OPENINGS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "/cases",
        VALID_APPLICATION,
        {**VALID_APPLICATION, "decide": "later"},
        "case_id",
    ),
    (
        "/matters/mediation",
        {"title": "宅基地边界纠纷", "parties": ["王大山", "李小河"], "summary": "两户争议院墙"},
        {"title": "宅基地边界纠纷", "parties": ["王大山", "李小河"], "summary": "两户争议水渠"},
        "case_id",
    ),
    (
        "/matters/legal_publicity",
        {"topic": "民法典进村", "planned_on": "2026-12-20"},
        {"topic": "民法典进村", "planned_on": "2026-12-21"},
        "case_id",
    ),
    (
        "/matters/assistance",
        {"person_name": "张秀兰", "need": "独居老人冬季取暖"},
        {"person_name": "张秀兰", "need": "独居老人冬季取暖", "urgent": True},
        "case_id",
    ),
    (
        "/matters/police_assistance",
        {"police_unit": "板桥派出所", "summary": "协助寻找走失老人"},
        {"police_unit": "板桥派出所", "summary": "协助调解邻里纠纷"},
        "case_id",
    ),
    (
        "/reception",
        {"visitor_name": "王秀英", "purpose": "enquiry"},
        {"visitor_name": "王秀英", "purpose": "application"},
        "visit_id",
    ),
]
_IDS = [path for path, *_ in OPENINGS]

# Part of the security suite: on both backends whatever CASEFLOW_TEST_E2E_BACKENDS says.
pytestmark = pytest.mark.parametrize("module_db_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture(scope="module")
def stack(
    module_db_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    with running_stack(module_db_url, nats_url, tmp_path_factory.mktemp("logs")) as services:
        yield services


def post(
    base: str, path: str, who: Mapping[str, str], key: str, body: dict[str, Any]
) -> httpx.Response:
    headers = {**who, "Idempotency-Key": key}
    return httpcalls.post(f"{base}{path}", json=body, headers=headers, timeout=30)


def is_problem(response: httpx.Response, status: int) -> bool:
    content_type = response.headers.get("content-type", "")
    return response.status_code == status and content_type == "application/problem+json"


def uuid7(text: str) -> uuid.UUID:
    """The id, checked to be a UUIDv7 (random, not derived from anything sent)."""
    found = uuid.UUID(text)
    assert found.version == 7, text
    return found


@pytest.mark.parametrize(("path", "body", "changed", "field"), OPENINGS, ids=_IDS)
def test_an_opening_key_is_its_senders_own(
    stack: dict[str, ServiceProcess],
    path: str,
    body: dict[str, Any],
    changed: dict[str, Any],
    field: str,
) -> None:
    intake = stack["intake"].base_url
    key = guessable_key()
    first = post(intake, path, XF_CLERK, key, body)
    assert first.status_code == 201, first.text
    made = first.json()
    mine = uuid7(made[field])

    # The sender's retry: 200, the same resource, nothing new.
    again = post(intake, path, XF_CLERK, key, body)
    assert again.status_code == 200, again.text
    assert again.json()[field] == made[field]
    if field == "case_id":
        assert again.json()["case_number"] == made["case_number"]
        assert again.json()["recorded"] == made["recorded"]

    # A colleague at the same station and another station's clerk of the same user name
    # send the same key: each gets a resource of their own, and nothing of the first.
    others = {}
    for who, station in ((XF_COLLEAGUE, "xuefeng_station"), (LM_CLERK, "longmen_station")):
        theirs = post(intake, path, who, key, body)
        assert theirs.status_code == 201, theirs.text
        answer = theirs.json()
        assert uuid7(answer[field]) != mine
        assert str(mine) not in theirs.text
        if field == "case_id":
            assert answer["case_number"] != made["case_number"]
            assert answer["case_number"].startswith(
                "LM-" if station == "longmen_station" else "XF-"
            )
        else:
            assert answer["station"] == station
        others[station] = answer[field]
    assert len({str(mine), *others.values()}) == 3

    # The Longmen resource is really recorded, in Longmen's name.
    events = httpcalls.get(
        f"{stack['processing'].base_url}/cases/{others['longmen_station']}/events",
        headers=AUDITOR,
        timeout=10,
    ).json()["events"]
    assert [e["actor"]["station"] for e in events[:1]] == ["longmen_station"]

    # The sender's key with another body, or on another operation: 409, nothing made.
    reused = post(intake, path, XF_CLERK, key, changed)
    assert is_problem(reused, 409), reused.text
    assert "Idempotency-Key" in reused.json()["detail"]
    elsewhere = "/reception" if path != "/reception" else "/matters/assistance"
    other_body = OPENINGS[-1][1] if path != "/reception" else OPENINGS[3][1]
    assert is_problem(post(intake, elsewhere, XF_CLERK, key, other_body), 409)
    final = post(intake, path, XF_CLERK, key, body)
    assert final.status_code == 200 and final.json()[field] == made[field]


@pytest.mark.parametrize(("path", "body", "changed", "field"), OPENINGS, ids=_IDS)
def test_identical_openings_at_once_make_one(
    stack: dict[str, ServiceProcess],
    path: str,
    body: dict[str, Any],
    changed: dict[str, Any],
    field: str,
) -> None:
    intake = stack["intake"].base_url
    key = guessable_key()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(intake, path, XF_CLERK, key, body), range(8)))
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.text for a in answers]
    assert len({a.json()[field] for a in answers}) == 1


def _open_accepted_case(intake: str) -> str:
    response = post(intake, "/cases", XF_CLERK, uuid.uuid4().hex, VALID_APPLICATION)
    assert response.status_code == 201 and response.json()["status"] == "accepted"
    return str(response.json()["case_id"])


def _history(processing: str, case_id: str) -> list[str]:
    response = httpcalls.get(f"{processing}/cases/{case_id}/events", headers=XF_HEAD, timeout=10)
    return [e["event_type"] for e in response.json()["events"]]


def test_an_action_key_is_its_senders_own(stack: dict[str, ServiceProcess]) -> None:
    intake, processing = stack["intake"].base_url, stack["processing"].base_url
    case_id = _open_accepted_case(intake)
    act = f"/cases/{case_id}/actions/start_review"
    key = guessable_key()

    first = post(processing, act, XF_REVIEWER, key, {})
    assert first.status_code == 200, first.text
    assert first.json()["recorded"] == ["ReviewStarted"]
    again = post(processing, act, XF_REVIEWER, key, {})
    assert again.status_code == 200 and again.json()["recorded"] == ["ReviewStarted"]
    # Recorded once (the case's version may have moved meanwhile: notify records its
    # notices of the acceptance when it sends them).
    assert _history(processing, case_id).count("ReviewStarted") == 1

    # Another station's reviewer of the same user name, with the same key: no such case.
    foreign = post(processing, act, LM_REVIEWER, key, {})
    assert is_problem(foreign, 404), foreign.text
    assert "ReviewStarted" not in foreign.text and "XF-" not in foreign.text
    # A colleague's same key is their own request, judged on its own: the review has
    # started already, so it is not allowed now (nothing recorded), not a replay.
    colleague = post(processing, act, XF_REVIEWER_2, key, {})
    assert is_problem(colleague, 409), colleague.text
    assert "Idempotency-Key" not in colleague.json()["detail"]

    # The sender's key for another action, another case or another body: 409.
    suspend = {"kind": "testing", "reason": "需现场核验"}
    other_action = post(processing, f"/cases/{case_id}/actions/suspend", XF_REVIEWER, key, suspend)
    assert is_problem(other_action, 409) and "Idempotency-Key" in other_action.json()["detail"]
    other_case = _open_accepted_case(intake)
    moved = post(processing, f"/cases/{other_case}/actions/start_review", XF_REVIEWER, key, {})
    assert is_problem(moved, 409) and "Idempotency-Key" in moved.json()["detail"]
    review = f"/cases/{case_id}/actions/complete_review"
    opinion = {"recommendation": "approve", "opinion": "材料齐全"}
    done_key = guessable_key()
    assert post(processing, review, XF_REVIEWER, done_key, opinion).status_code == 200
    changed = post(processing, review, XF_REVIEWER, done_key, {**opinion, "opinion": "不符"})
    assert is_problem(changed, 409) and "Idempotency-Key" in changed.json()["detail"]
    assert _history(processing, case_id).count("ReviewStarted") == 1
    assert _history(processing, case_id).count("ReviewCompleted") == 1

    # A refused attempt is an answer too: the sender's retry is refused again, recorded
    # once; a colleague's same key is their own attempt, recorded as theirs.
    approve = f"/cases/{case_id}/actions/approve"
    refused_key = guessable_key()
    for _ in range(2):
        assert is_problem(post(processing, approve, XF_CLERK, refused_key, {}), 403)
    assert _history(processing, case_id).count("ActionRefused") == 1
    assert is_problem(post(processing, approve, XF_COLLEAGUE, refused_key, {}), 403)
    assert _history(processing, case_id).count("ActionRefused") == 2


def test_identical_actions_at_once_record_one(stack: dict[str, ServiceProcess]) -> None:
    intake, processing = stack["intake"].base_url, stack["processing"].base_url
    case_id = _open_accepted_case(intake)
    act, key = f"/cases/{case_id}/actions/start_review", guessable_key()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(processing, act, XF_REVIEWER, key, {}), range(8)))
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
    assert {tuple(a.json()["recorded"]) for a in answers} == {("ReviewStarted",)}
    assert _history(processing, case_id).count("ReviewStarted") == 1


HOOK = {
    "url": "https://93.184.216.34/caseflow-hook",
    "event_types": ["CaseWithdrawn"],
    "description": "idempotency test",
}


def test_a_webhook_key_is_its_senders_own_and_its_secret_shown_once(
    stack: dict[str, ServiceProcess],
) -> None:
    notify = stack["notify"].base_url
    key = guessable_key()
    texts: list[str] = []

    def send(who: Mapping[str, str], body: dict[str, Any] = HOOK) -> httpx.Response:
        response = post(notify, "/webhooks", who, key, body)
        texts.append(response.text)
        return response

    first = send(XF_HEAD)
    assert first.status_code == 201, first.text
    made = first.json()
    secret, sid = made["secret"], made["subscription_id"]
    uuid7(sid)

    # The sender's retry: the same subscription, without its secret.
    again = send(XF_HEAD)
    assert again.status_code == 200, again.text
    assert again.json()["subscription_id"] == sid and "secret" not in again.json()

    # Longmen's head of the same user name, and a second Xuefeng head, with the same key:
    # subscriptions of their own, with secrets of their own.
    for who, station in ((LM_HEAD, "longmen_station"), (XF_HEAD_2, "xuefeng_station")):
        theirs = send(who)
        assert theirs.status_code == 201, theirs.text
        assert uuid7(theirs.json()["subscription_id"]) != uuid.UUID(sid)
        assert theirs.json()["station"] == station
        assert theirs.json()["secret"] != secret
    assert is_problem(httpcalls.get(f"{notify}/webhooks/{sid}", headers=LM_HEAD, timeout=10), 404)

    # The sender's key with another body: 409.
    reused = send(XF_HEAD, {**HOOK, "event_types": ["CaseApproved"]})
    assert is_problem(reused, 409) and "Idempotency-Key" in reused.json()["detail"]

    # No reading shows the secret again.
    for who in (XF_HEAD, XF_HEAD_2):
        texts.append(httpcalls.get(f"{notify}/webhooks", headers=who, timeout=10).text)
    texts.append(httpcalls.get(f"{notify}/webhooks/{sid}", headers=XF_HEAD, timeout=10).text)
    paused = httpcalls.patch(
        f"{notify}/webhooks/{sid}", json={"status": "paused"}, headers=XF_HEAD, timeout=10
    )
    assert paused.status_code == 200
    texts.append(paused.text)
    assert sum(text.count(secret) for text in texts) == 1


def test_identical_subscriptions_at_once_make_one(stack: dict[str, ServiceProcess]) -> None:
    notify, key = stack["notify"].base_url, guessable_key()
    body = {**HOOK, "description": f"at once {key}"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(notify, "/webhooks", XF_HEAD, key, body), range(8)))
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.text for a in answers]
    assert len({a.json()["subscription_id"] for a in answers}) == 1
    assert sum("secret" in a.json() for a in answers) == 1
    listed = httpcalls.get(f"{notify}/webhooks", headers=XF_HEAD, timeout=10).json()
    assert [s["description"] for s in listed["subscriptions"]].count(body["description"]) == 1
