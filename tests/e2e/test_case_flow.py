"""A case through intake, processing and notify as real processes (on
``CASEFLOW_TEST_E2E_BACKENDS``)."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator

import httpx
import pytest

from shared.devtools import httpcalls
from tests.services import (
    CLERK,
    VALID_APPLICANT,
    VALID_APPLICATION,
    ServiceProcess,
    metrics_headers,
    running_stack,
    wait_for_event,
)


@pytest.fixture(scope="module")
def stack(
    module_db_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    """One running stack per backend for the whole module (the last test stops it)."""
    with running_stack(module_db_url, nats_url, tmp_path_factory.mktemp("logs")) as services:
        yield services


def _submit(
    intake: str, body: dict[str, object], key: str | None = None, **headers: str
) -> httpx.Response:
    headers = {**CLERK, "Idempotency-Key": key or uuid.uuid4().hex, **headers}
    return httpcalls.post(f"{intake}/cases", json=body, headers=headers, timeout=10)


def test_complete_application_is_accepted_and_the_applicant_told(
    stack: dict[str, ServiceProcess],
) -> None:
    intake = stack["intake"].base_url
    response = _submit(intake, VALID_APPLICATION, **{"X-Correlation-ID": "window-7-req-42"})
    assert response.status_code == 201, response.text
    answer = response.json()
    case_id = answer["case_id"]
    assert response.headers["Location"] == f"/cases/{case_id}"
    # Accepted at the window, with a dated receipt and a case number.
    assert answer["status"] == "accepted"
    assert answer["case_number"].startswith("XF-")
    assert answer["receipt"]["accepted_on"] and answer["receipt"]["committed_deadline"]

    events = wait_for_event(intake, case_id, "NotificationSent")
    types = [e["event_type"] for e in events]
    assert types[:2] == ["CaseReceived", "CaseAccepted"]
    assert set(types[2:]) == {"NotificationSent"}, types
    assert {e["correlation_id"] for e in events} == {"window-7-req-42"}
    # each notice names the event it told of (the receipt or the acceptance)
    assert {e["causation_id"] for e in events[2:]} <= {events[0]["event_id"], events[1]["event_id"]}
    # Acted in the name of the city department, under its delegation to the station.
    for event in events[:2]:
        assert event["actor"] == {
            "user": "li.clerk",
            "role": "window_clerk",
            "station": "xuefeng_station",
        }
        assert event["authority"] == "hc_hrss"
        assert event["delegation_id"] and event["delegation_version"] == 1
    applicant = [e for e in events[2:] if e["payload"]["audience"] == "applicant"]
    assert all(e["payload"]["recipient"] == "138****5678" for e in applicant)
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert events[1]["prev_hash"] == events[0]["hash"]

    state = httpcalls.get(f"{intake}/cases/{case_id}", timeout=5, headers=CLERK).json()
    assert state["status"] == "accepted"
    # The applicant's phone and ID number never reach the logs in clear.
    for service in stack.values():
        logs = service.logs()
        assert "13812345678" not in logs and "11010519491231002X" not in logs


def test_missing_materials_are_all_listed_in_one_correction_request(
    stack: dict[str, ServiceProcess],
) -> None:
    intake = stack["intake"].base_url
    body = {**VALID_APPLICATION, "item_code": "funeral_subsidy", "materials": ["id_card"]}
    answer = _submit(intake, body).json()
    assert answer["status"] == "correction_requested"
    events = wait_for_event(intake, answer["case_id"], "NotificationSent")
    corrections = [e for e in events if e["event_type"] == "CorrectionRequested"]
    assert len(corrections) == 1
    listed = {m["code"]: m["problem"] for m in corrections[0]["payload"]["missing"]}
    # Every missing material, and the ID card whose original wasn't checked, at once.
    assert listed.pop("id_card") == "defective"
    assert listed and set(listed.values()) == {"missing"}
    assert corrections[0]["payload"]["deadline"]
    # the applicant's notice of it (the receipt's may come first)
    events = wait_for_event(
        intake,
        answer["case_id"],
        "NotificationSent",
        where=lambda e: e["payload"]["about_event_type"] == "CorrectionRequested",
    )
    notices = [
        e
        for e in events
        if e["event_type"] == "NotificationSent"
        and e["payload"]["about_event_type"] == "CorrectionRequested"
    ]
    assert "补正" in str(notices[0]["payload"]["subject"])


def test_retry_with_same_idempotency_key_returns_the_same_case(
    stack: dict[str, ServiceProcess],
) -> None:
    intake = stack["intake"].base_url
    key = uuid.uuid4().hex
    first = _submit(intake, VALID_APPLICATION, key)
    second = _submit(intake, VALID_APPLICATION, key)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["case_id"] == second.json()["case_id"]
    assert first.json()["case_number"] == second.json()["case_number"]
    case_id = first.json()["case_id"]
    wait_for_event(intake, case_id, "NotificationSent")
    third = _submit(intake, VALID_APPLICATION, key)  # after the case moved on
    assert third.json()["case_id"] == case_id
    events = httpcalls.get(f"{intake}/cases/{case_id}/events", timeout=5, headers=CLERK).json()
    assert [e["event_type"] for e in events["events"]].count("CaseReceived") == 1

    other = {**VALID_APPLICATION, "applicant": {**VALID_APPLICANT, "name": "李秀兰"}}
    reused = _submit(intake, other, key)
    assert reused.status_code == 409
    assert reused.headers["content-type"] == "application/problem+json"
    assert "Idempotency-Key" in reused.json()["detail"]


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ({**VALID_APPLICATION, "item_code": "no_such_item"}, {}, "item_code"),
        (
            {
                **VALID_APPLICATION,
                "applicant": {**VALID_APPLICANT, "id_number": "110105194912310021"},
            },
            {},
            "applicant.id_number",
        ),
        (
            {
                **VALID_APPLICATION,
                "applicant": {**VALID_APPLICANT, "phone": "12345"},
            },
            {},
            "applicant.phone",
        ),
        ({**VALID_APPLICATION, "materials": ["passport_of_mars"]}, {}, "materials"),
        ({"item_code": "pension_enrolment"}, {}, "applicant"),
        (VALID_APPLICATION, {"Idempotency-Key": ""}, "header Idempotency-Key"),
        # A paper form dated before the working calendar, or at no moment in UTC, or a
        # number (which pydantic read as seconds since 1970): 500s the fuzz found.
        ({**VALID_APPLICATION, "occurred_at": "2000-01-01T09:00:00+08:00"}, {}, "occurred_at"),
        ({**VALID_APPLICATION, "occurred_at": "0001-01-01T00:00:00+01:00"}, {}, "occurred_at"),
        ({**VALID_APPLICATION, "occurred_at": 1767225600}, {}, "occurred_at"),
        # PostgreSQL stores NUL in no text: it was a 500 there.
        ({**VALID_APPLICATION, "applicant": {**VALID_APPLICANT, "name": "王\u0000"}}, {}, "body"),
    ],
)
def test_bad_applications_get_a_clear_problem_and_store_nothing(
    stack: dict[str, ServiceProcess], body: dict[str, object], headers: dict[str, str], field: str
) -> None:
    intake = stack["intake"].base_url
    key = headers.get("Idempotency-Key", uuid.uuid4().hex)
    response = httpcalls.post(
        f"{intake}/cases", json=body, headers={**CLERK, "Idempotency-Key": key}, timeout=5
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["title"]
    assert field in [e["field"] for e in problem["errors"]]
    assert field in problem["detail"]


@pytest.mark.parametrize(
    ("service", "method", "path", "content", "status"),
    [
        ("intake", "POST", "/cases", b"{not json", 422),
        ("intake", "POST", "/cases", b"[]", 422),
        ("intake", "GET", "/cases/not-a-uuid/events", None, 422),
        ("intake", "GET", f"/cases/{uuid.UUID(int=0xCA5EF10)}/events", None, 404),
        ("intake", "GET", f"/cases/{uuid.UUID(int=0xCA5EF11)}", None, 404),
        ("intake", "DELETE", "/cases", None, 405),
        ("intake", "GET", "/nowhere", None, 404),
        # 500s the fuzz found: NUL in text (on PostgreSQL), an offset past 64 bits.
        ("intake", "POST", "/reception", b'{"visitor_name": "a\\u0000", "purpose": "other"}', 422),
        ("processing", "GET", "/cases?status=%00", None, 422),
        ("processing", "GET", "/cases?offset=9223372036854775808", None, 422),
        ("notify", "GET", "/dead-letters?station=%00", None, 422),
    ],
)
def test_malformed_requests_are_problems_not_errors(
    stack: dict[str, ServiceProcess],
    service: str,
    method: str,
    path: str,
    content: bytes | None,
    status: int,
) -> None:
    response = httpcalls.request(
        method,
        stack[service].base_url + path,
        content=content,
        timeout=5,
        headers={
            **CLERK,
            "Idempotency-Key": uuid.uuid4().hex,
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


def test_without_a_token_nothing_is_read_or_recorded(stack: dict[str, ServiceProcess]) -> None:
    intake = stack["intake"].base_url
    response = httpcalls.post(
        f"{intake}/cases",
        json=VALID_APPLICATION,
        headers={"Idempotency-Key": uuid.uuid4().hex},
        timeout=5,
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    case_id = _submit(intake, VALID_APPLICATION).json()["case_id"]
    assert httpcalls.get(f"{intake}/cases/{case_id}", timeout=5).status_code == 401


def test_every_service_serves_probes_metrics_docs_and_asyncapi(
    stack: dict[str, ServiceProcess],
) -> None:
    for service in stack.values():
        base = service.base_url
        assert httpcalls.get(f"{base}/livez", timeout=5).json() == {"status": "ok"}
        ready = httpcalls.get(f"{base}/readyz", timeout=5).json()
        assert ready["checks"] == {"database": "ok", "nats": "ok"}
        scraped = httpcalls.get(f"{base}/metrics", headers=metrics_headers(), timeout=5)
        assert "caseflow_http_requests_total" in scraped.text
        assert httpcalls.get(f"{base}/metrics", timeout=5).status_code == 401  # not for the world
        assert httpcalls.get(f"{base}/docs", timeout=5).status_code == 200
        assert (
            httpcalls.get(f"{base}/openapi.json", timeout=5)
            .json()["info"]["title"]
            .startswith("caseflow")
        )
        doc = httpcalls.get(f"{base}/asyncapi.json", timeout=5).json()
        addresses = {c["address"] for c in doc["channels"].values()}
        assert "caseflow.events.{case_kind}.CaseReceived" in addresses
        assert "caseflow.dept.{authority}.requests" in addresses
        assert "caseflow.dlq.notify" in addresses
    wait_metric = httpcalls.get(
        f"{stack['processing'].base_url}/metrics", headers=metrics_headers(), timeout=5
    ).text
    assert "caseflow_consumer_handled_total" in wait_metric


def test_sigterm_drains_and_exits_cleanly(stack: dict[str, ServiceProcess]) -> None:
    intake = stack["intake"].base_url
    case_id = _submit(intake, VALID_APPLICATION).json()["case_id"]
    wait_for_event(intake, case_id, "NotificationSent")
    for name in ("notify", "processing", "intake"):
        # uvicorn re-raises the signal after a clean shutdown, as a supervisor expects.
        assert stack[name].terminate() in (0, -signal.SIGTERM), stack[name].logs()[-2000:]
        logs = stack[name].logs()
        assert '"message": "stopped"' in logs and "Application shutdown complete" in logs
