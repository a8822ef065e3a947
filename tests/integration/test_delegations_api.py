"""Processing's delegation API over ASGI, on both backends, with real signed tokens."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.processing.app import create_app
from services.processing.settings import ProcessingSettings
from shared.adapters.eventlog import EventLog
from shared.domain.delegation import delegation_case_id
from shared.web.http import PROBLEM_JSON
from tests.services import session_keys, staff_headers

OFFICER = staff_headers("li.officer", "department_officer", "hc_hrss")
HEALTH_OFFICER = staff_headers("wang", "department_officer", "hc_health")
CLERK = staff_headers("zhang", "window_clerk", "xuefeng_station")
AUDITOR = staff_headers("audit", "auditor", "hc_audit")

CODE = "hrss-xuefeng-2021"


def instrument(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": CODE,
        "delegator": "hc_hrss",
        "delegate": "xuefeng_station",
        "mode": "entrusted",
        "items": ["pension_enrolment"],
        "powers": ["receive", "accept", "review", "decide", "deliver"],
        "legal_basis": "《中华人民共和国行政许可法》第二十四条",
        "document_number": "韩人社发〔2021〕45号",
        "published_on": "2021-11-10",
        "valid_from": "2021-11-14",
        "valid_until": None,
    }
    body.update(changes)
    return body


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = ProcessingSettings(
        database_url=db_url, jwt_public_key_file=session_keys().public_path
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://processing") as http:
        http.app = app  # type: ignore[attr-defined]
        yield http
    await app.state.runtime.engine.dispose()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    return body


async def publish(client: httpx.AsyncClient, **changes: Any) -> httpx.Response:
    return await client.post(
        "/delegations", json=instrument(**changes), headers={**OFFICER, **key()}
    )


async def test_publish_read_and_change_through_five_versions(
    client: httpx.AsyncClient,
) -> None:
    created = await publish(client)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/delegations/{CODE}"
    assert (created.json()["version"], created.json()["status"]) == (1, "active")

    wider = instrument(items=["pension_enrolment", "funeral_subsidy"])
    amended = await client.post(
        f"/delegations/{CODE}/amendments",
        json={"instrument": wider, "reason": "丧葬补助金一并委托", "expected_version": 1},
        headers=OFFICER,
    )
    assert amended.status_code == 200, amended.text
    assert amended.json()["version"] == 2
    assert amended.json()["instrument"]["items"] == ["pension_enrolment", "funeral_subsidy"]

    steps = [("suspension", "suspended"), ("resumption", "active"), ("revocation", "revoked")]
    for version, (path, status) in enumerate(steps, 3):
        answer = await client.post(
            f"/delegations/{CODE}/{path}", json={"reason": f"{path} by notice"}, headers=OFFICER
        )
        assert answer.status_code == 200, answer.text
        assert (answer.json()["version"], answer.json()["status"]) == (version, status)

    # Anyone signed in may read: the delegate's clerk, a city auditor.
    for reader in (CLERK, AUDITOR):
        read = await client.get(f"/delegations/{CODE}", headers=reader)
        assert read.status_code == 200, read.text
    body = read.json()
    assert body["version"] == 5
    assert [h["event_type"] for h in body["history"]] == [
        "DelegationPublished",
        "DelegationAmended",
        "DelegationSuspended",
        "DelegationResumed",
        "DelegationRevoked",
    ]
    assert body["history"][0]["instrument"]["items"] == ["pension_enrolment"]
    assert body["history"][2]["reason"] == "suspension by notice"

    # The actor went into every event.
    log = EventLog(client.app.state.runtime.engine)  # type: ignore[attr-defined]
    events = await log.read_case(delegation_case_id(CODE))
    assert {(e.actor_user, e.actor_role, e.actor_station) for e in events} == {
        ("li.officer", "department_officer", "hc_hrss")
    }
    # Nothing follows a revocation.
    again = await client.post(
        f"/delegations/{CODE}/suspension", json={"reason": "once more"}, headers=OFFICER
    )
    assert "revoked" in problem(again, 409)["detail"]


async def test_publishing_is_idempotent_per_key(client: httpx.AsyncClient) -> None:
    headers = {**OFFICER, **key()}
    first = await client.post("/delegations", json=instrument(), headers=headers)
    retry = await client.post("/delegations", json=instrument(), headers=headers)
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    # Another officer of the same bureau with the same key sends their own request: not
    # a replay of li.officer's answer (the instrument is published already).
    colleague = {**staff_headers("zhou.officer", "department_officer", "hc_hrss")}
    colleague["Idempotency-Key"] = headers["Idempotency-Key"]
    theirs = await client.post("/delegations", json=instrument(), headers=colleague)
    assert "published already" in problem(theirs, 409)["detail"]
    other = await client.post(
        "/delegations", json=instrument(items=["funeral_subsidy"]), headers=headers
    )
    assert "Idempotency-Key was already used" in problem(other, 409)["detail"]
    other_code = await client.post(
        "/delegations", json=instrument(code="hrss-xuefeng-2022"), headers=headers
    )
    assert "Idempotency-Key was already used" in problem(other_code, 409)["detail"]
    twice = await publish(client)
    assert "published already" in problem(twice, 409)["detail"]
    missing = await client.post("/delegations", json=instrument(code="x-y-z"), headers=OFFICER)
    assert "Idempotency-Key" in problem(missing, 422)["detail"]


async def test_who_may_publish_and_change(client: httpx.AsyncClient) -> None:
    nobody = await client.post("/delegations", json=instrument(), headers=key())
    assert problem(nobody, 401)
    assert nobody.headers["www-authenticate"].startswith("Bearer")
    clerk = await client.post("/delegations", json=instrument(), headers={**CLERK, **key()})
    assert "department officer" in problem(clerk, 403)["detail"]
    foreign = await client.post(
        "/delegations", json=instrument(), headers={**HEALTH_OFFICER, **key()}
    )
    assert "only hc_hrss's department officers" in problem(foreign, 403)["detail"]
    assert (await publish(client)).status_code == 201
    for path, body in [
        ("suspension", {"reason": "audit"}),
        ("amendments", {"instrument": instrument(items=["funeral_subsidy"]), "reason": "x1"}),
    ]:
        answer = await client.post(f"/delegations/{CODE}/{path}", json=body, headers=HEALTH_OFFICER)
        problem(answer, 403)
    unread = await client.get(f"/delegations/{CODE}")
    problem(unread, 401)


async def test_bad_requests_are_explained(client: httpx.AsyncClient) -> None:
    itself = await publish(client, delegate="hc_hrss")
    assert "can't delegate to itself" in problem(itself, 422)["detail"]
    receive_only = await publish(client, mode="receive_only")
    assert "exactly the power 'receive'" in problem(receive_only, 422)["detail"]
    backdated = await publish(client, valid_from="2021-11-01")
    assert "before it is published" in problem(backdated, 422)["detail"]
    assert (await publish(client)).status_code == 201

    moved = await client.post(
        f"/delegations/{CODE}/amendments",
        json={"instrument": instrument(delegate="longmen_station"), "reason": "move"},
        headers=OFFICER,
    )
    assert "can't change the delegate" in problem(moved, 422)["detail"]
    renamed = await client.post(
        f"/delegations/{CODE}/amendments",
        json={"instrument": instrument(code="other-code"), "reason": "rename"},
        headers=OFFICER,
    )
    assert "code must stay" in problem(renamed, 422)["detail"]
    no_reason = await client.post(f"/delegations/{CODE}/suspension", json={}, headers=OFFICER)
    assert "reason" in problem(no_reason, 422)["detail"]
    resume = await client.post(
        f"/delegations/{CODE}/resumption", json={"reason": "why not"}, headers=OFFICER
    )
    assert "not suspended" in problem(resume, 409)["detail"]
    stale = await client.post(
        f"/delegations/{CODE}/suspension",
        json={"reason": "audit", "expected_version": 7},
        headers=OFFICER,
    )
    problem(stale, 409)
    unknown = await client.get("/delegations/no-such-thing", headers=CLERK)
    assert "no delegation no-such-thing" in problem(unknown, 404)["detail"]


async def test_an_instrument_must_name_what_the_registry_knows(client: httpx.AsyncClient) -> None:
    """A delegate nobody knows, an item not in the catalogue, or another body's item grant
    nothing: refused, naming each, whether published or amended."""
    nobody = await publish(client, delegate="nowhere_station")
    assert "unknown delegate 'nowhere_station'" in problem(nobody, 422)["detail"]
    made_up = await publish(client, items=["pension_enrolment", "moon_landing_permit"])
    assert "moon_landing_permit" in problem(made_up, 422)["detail"]
    foreign = await publish(client, items=["logging_permit"])
    assert "competent authority is hc_forestry" in problem(foreign, 422)["detail"]
    assert (await client.get(f"/delegations/{CODE}", headers=CLERK)).status_code == 404
    assert (await publish(client)).status_code == 201
    amended = await client.post(
        f"/delegations/{CODE}/amendments",
        json={"instrument": instrument(items=["logging_permit"]), "reason": "more items"},
        headers=OFFICER,
    )
    assert "competent authority is hc_forestry" in problem(amended, 422)["detail"]
    shown = (await client.get(f"/delegations/{CODE}", headers=CLERK)).json()
    assert shown["instrument"]["items"] == ["pension_enrolment"]


async def test_a_retried_change_changes_once(client: httpx.AsyncClient) -> None:
    assert (await publish(client)).status_code == 201
    headers = {**OFFICER, **key()}
    first = await client.post(
        f"/delegations/{CODE}/suspension", json={"reason": "x1"}, headers=headers
    )
    retry = await client.post(
        f"/delegations/{CODE}/suspension", json={"reason": "x1"}, headers=headers
    )
    assert first.status_code == retry.status_code == 200
    assert retry.json()["version"] == first.json()["version"] == 2
    # The same key with another reason is another request: 409, nothing changed.
    other = await client.post(
        f"/delegations/{CODE}/suspension", json={"reason": "x2"}, headers=headers
    )
    assert "Idempotency-Key" in problem(other, 409)["detail"]
    amend_key = {**OFFICER, **key()}
    text = {"instrument": instrument(valid_until="2030-12-31"), "reason": "a term"}
    amended = await client.post(f"/delegations/{CODE}/amendments", json=text, headers=amend_key)
    assert amended.status_code == 200, amended.text
    again = await client.post(f"/delegations/{CODE}/amendments", json=text, headers=amend_key)
    assert again.status_code == 200 and again.json()["version"] == amended.json()["version"]
    changed = {"instrument": instrument(valid_until="2031-12-31"), "reason": "a term"}
    reused = await client.post(f"/delegations/{CODE}/amendments", json=changed, headers=amend_key)
    problem(reused, 409)
    shown = (await client.get(f"/delegations/{CODE}", headers=CLERK)).json()
    assert shown["instrument"]["valid_until"] == "2030-12-31"


async def test_listing_filters_and_as_of(client: httpx.AsyncClient) -> None:
    assert (await publish(client)).status_code == 201
    health = instrument(
        code="health-longmen-2022",
        delegator="hc_health",
        delegate="longmen_station",
        mode="receive_only",
        powers=["receive"],
        items=["birth_certificate"],
        document_number="韩卫健发〔2022〕8号",
        published_on="2022-03-01",
        valid_from="2022-03-01",
    )
    made = await client.post("/delegations", json=health, headers={**HEALTH_OFFICER, **key()})
    assert made.status_code == 201, made.text

    async def codes(**params: str) -> list[str]:
        answer = await client.get("/delegations", params=params, headers=AUDITOR)
        assert answer.status_code == 200, answer.text
        return [d["code"] for d in answer.json()["delegations"]]

    assert await codes() == ["health-longmen-2022", CODE]
    assert await codes(delegate="xuefeng_station") == [CODE]
    assert await codes(delegator="hc_health") == ["health-longmen-2022"]
    assert await codes(item="birth_certificate") == ["health-longmen-2022"]
    assert await codes(mode="receive_only", delegate="longmen_station") == ["health-longmen-2022"]
    assert await codes(power="decide") == [CODE]
    assert await codes(delegate="longmen_station", delegator="hc_hrss") == []

    suspended = await client.post(
        f"/delegations/{CODE}/suspension", json={"reason": "audit"}, headers=OFFICER
    )
    moment = suspended.json()["history"][-1]["occurred_at"]
    assert await codes(status="suspended") == [CODE]
    before = await client.get(
        f"/delegations/{CODE}", params={"as_of": "2025-01-01T00:00:00+08:00"}, headers=CLERK
    )
    assert (before.json()["version"], before.json()["status"]) == (1, "active")
    then = await client.get(f"/delegations/{CODE}", params={"as_of": moment}, headers=CLERK)
    assert (then.json()["version"], then.json()["status"]) == (2, "suspended")
    early = await client.get(
        f"/delegations/{CODE}", params={"as_of": "2021-11-09T23:59:00+08:00"}, headers=CLERK
    )
    assert "not yet published" in problem(early, 404)["detail"]
    naive = await client.get(
        f"/delegations/{CODE}", params={"as_of": "2025-01-01T00:00:00"}, headers=CLERK
    )
    problem(naive, 422)
