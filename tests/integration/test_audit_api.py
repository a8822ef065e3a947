"""The audit through the real services (intake and processing over ASGI, on both backends,
with signed tokens): a paper form entered late, read, reviewed, decided and delivered;
a refused attempt; the applicant's personal data opened with a reason. The auditor's
timeline, the case as of a moment in both senses and the compliance report — and the
CLI prints exactly what the API answers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.processing.app import create_app as create_processing
from services.processing.settings import ProcessingSettings
from shared.adapters import delegations as store
from shared.adapters.eventlog import EventLog
from shared.cli.main import app as cli
from shared.domain.events import utcnow
from shared.domain.workcalendar import CHINA_TZ
from shared.web.http import PROBLEM_JSON
from tests.services import (
    CLERK,
    HEAD,
    REVIEWER,
    VALID_APPLICANT,
    VALID_APPLICATION,
    session_keys,
    staff_headers,
)

AUDITOR = staff_headers("qian.auditor", "auditor", "hc_audit")


@dataclass
class Stack:
    intake: httpx.AsyncClient
    processing: httpx.AsyncClient
    log: EventLog
    db_url: str


@pytest.fixture
async def stack(db_url: str) -> AsyncIterator[Stack]:
    keys = session_keys().public_path
    intake = create_intake(IntakeSettings(database_url=db_url, jwt_public_key_file=keys))
    processing = create_processing(
        ProcessingSettings(database_url=db_url, jwt_public_key_file=keys)
    )
    log = EventLog(processing.state.runtime.engine)
    await store.publish_seed(log)
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=intake), base_url="http://intake"
        ) as to_intake,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=processing), base_url="http://processing"
        ) as to_processing,
    ):
        yield Stack(to_intake, to_processing, log, db_url)
    await intake.state.runtime.engine.dispose()
    await processing.state.runtime.engine.dispose()


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    return body


async def act(
    stack: Stack, case_id: str, action: str, who: Any, body: dict[str, Any] | None = None
) -> httpx.Response:
    return await stack.processing.post(
        f"/cases/{case_id}/actions/{action}", json=body or {}, headers={**who, **key()}
    )


async def caseflow(*args: str) -> str:
    result = await asyncio.to_thread(CliRunner().invoke, cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


async def test_a_late_paper_form_read_by_the_auditor(stack: Stack) -> None:
    now = utcnow().astimezone(CHINA_TZ)
    handed_in = (now - timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)
    submitted = await stack.intake.post(
        "/cases",
        json={**VALID_APPLICATION, "occurred_at": handed_in.isoformat()},
        headers={**CLERK, **key()},
    )
    assert submitted.status_code == 201, submitted.text
    case_id, number = submitted.json()["case_id"], submitted.json()["case_number"]
    assert submitted.json()["status"] == "accepted"

    # Personal data: only with a reason, and every opening is recorded.
    applicant = f"/cases/{case_id}/applicant"
    for params in ({}, {"reason": "   "}):
        refused = problem(await stack.intake.get(applicant, params=params, headers=CLERK), 422)
        assert "say why you open this applicant's personal data" in refused["detail"]
        assert refused["errors"][0]["field"] == "reason"
    reason = "申请人来电咨询 / the applicant called"
    opened = await stack.intake.get(applicant, params={"reason": reason}, headers=CLERK)
    assert opened.status_code == 200, opened.text
    assert opened.json()["applicant"]["id_number"] == VALID_APPLICANT["id_number"]
    after_read = (await stack.intake.get(f"/cases/{case_id}", headers=CLERK)).json()
    assert after_read["status"] == "accepted"  # a fact: the status is unchanged
    # The history shows the applicant masked: no way round the reason.
    history = await stack.intake.get(f"/cases/{case_id}/events", headers=CLERK)
    assert history.status_code == 200 and "PersonalDataViewed" in history.text
    received = history.json()["events"][0]["payload"]["applicant"]
    assert received["name"] == VALID_APPLICANT["name"]
    assert received["id_number"].startswith("110") and "*" in received["id_number"]
    for secret in (VALID_APPLICANT["id_number"], VALID_APPLICANT["phone"]):
        assert secret not in history.text

    assert (await act(stack, case_id, "start_review", REVIEWER)).status_code == 200
    review = {"recommendation": "approve", "opinion": "材料齐全 / complete"}
    assert (await act(stack, case_id, "complete_review", REVIEWER, review)).status_code == 200
    wrong = problem(await act(stack, case_id, "approve", REVIEWER), 403)
    assert wrong["reason"] == "wrong_role"
    assert (await act(stack, case_id, "approve", HEAD)).status_code == 200
    delivered = await act(stack, case_id, "deliver", CLERK, {"method": "in_person"})
    assert delivered.status_code == 200, delivered.text

    # The auditor's timeline.
    path = f"/audit/cases/{number}/timeline"
    answer = await stack.processing.get(path, headers=AUDITOR)
    assert answer.status_code == 200, answer.text
    timeline = answer.json()
    assert VALID_APPLICANT["id_number"] not in answer.text
    assert VALID_APPLICANT["phone"] not in answer.text
    events = timeline["events"]
    assert [e["event_type"] for e in events] == [
        "CaseReceived",
        "CaseAccepted",
        "PersonalDataViewed",
        "ReviewStarted",
        "ReviewCompleted",
        "ActionRefused",
        "CaseApproved",
        "CaseDelivered",
    ]
    actions = [e for e in events if e["delegation"]["check"] is not None]
    assert len(actions) == 6
    assert all(e["delegation"]["valid"] is True for e in actions), actions
    assert {e["delegation"]["id"] for e in actions} == {"hrss-xuefeng-2021"}
    assert {e["authority"] for e in actions} == {"hc_hrss"}
    viewed = events[2]
    assert viewed["details"] == {"reason": reason, "fields": ["id_number", "name", "phone"]}
    assert viewed["actor"] == {
        "user": "li.clerk",
        "role": "window_clerk",
        "station": "xuefeng_station",
    }
    assert viewed["status_before"] == viewed["status_after"] == "accepted"
    assert datetime.fromisoformat(events[0]["occurred_at"]) == handed_in
    assert datetime.fromisoformat(events[0]["recorded_at"]) > handed_in + timedelta(days=2)
    assert events[5]["details"]["reason"] == "wrong_role"
    assert [e["status_after"] for e in events][-1] == "delivered"
    assert timeline["state"]["status"] == "delivered"
    by_id = await stack.processing.get(f"/audit/cases/{case_id}/timeline", headers=AUDITOR)
    assert by_id.json() == timeline

    # As of an hour after the hand-in: it had happened, but the system did not know yet.
    then = (handed_in + timedelta(hours=1)).isoformat()
    happened = (await stack.processing.get(path, params={"as_of": then}, headers=AUDITOR)).json()
    known = (
        await stack.processing.get(
            path, params={"as_of": then, "basis": "recorded"}, headers=AUDITOR
        )
    ).json()
    assert (happened["state"]["status"], happened["state"]["events_counted"]) == ("accepted", 2)
    assert happened["state"]["tasks"] == [
        {"kind": "review", "role": "reviewer", "org": "xuefeng_station", "claimed_by": None}
    ]
    assert (known["state"]["known"], known["state"]["events_counted"]) == (False, 0)
    assert known["events"] == [] and known["state"]["status"] == ""

    # Only auditors; clear problems for mistakes.
    problem(await stack.processing.get(path, headers=HEAD), 403)
    problem(
        await stack.processing.get("/audit/cases/XF-2026-999999/timeline", headers=AUDITOR), 404
    )
    naive = await stack.processing.get(
        path, params={"as_of": "2026-11-18T12:00:00"}, headers=AUDITOR
    )
    assert "UTC offset" in problem(naive, 422)["detail"]
    alone = await stack.processing.get(path, params={"basis": "recorded"}, headers=AUDITOR)
    assert "basis goes with as_of" in problem(alone, 422)["detail"]

    # The compliance report: everything within, the refused attempt listed.
    period = {
        "station": "xuefeng_station",
        "from": (handed_in.date() - timedelta(days=1)).isoformat(),
        "to": now.date().isoformat(),
    }
    report = (
        await stack.processing.get("/audit/compliance", params=period, headers=AUDITOR)
    ).json()
    assert report["compliant"] is True
    assert report["counts"]["within"] == 6
    assert sum(report["counts"].values()) == 6
    assert [(r["action"], r["reason"], r["actor_user"]) for r in report["refused"]] == [
        ("approve", "wrong_role", "wang.reviewer")
    ]
    problem(await stack.processing.get("/audit/compliance", params=period, headers=CLERK), 403)
    nowhere = {**period, "station": "nowhere"}
    unknown = await stack.processing.get("/audit/compliance", params=nowhere, headers=AUDITOR)
    assert "'nowhere' is not a station" in problem(unknown, 422)["detail"]
    # A town or a city department is not a station: its report would be empty, not wrong.
    town = {**period, "station": "banqiao_town"}
    answer = await stack.processing.get("/audit/compliance", params=town, headers=AUDITOR)
    assert "xuefeng_station" in problem(answer, 422)["detail"]

    # The CLI reads the same database and prints exactly what the API answers.
    url = ("--database-url", stack.db_url)
    assert json.loads(await caseflow("audit", "case", number, "--json", *url)) == timeline
    as_of = ("--as-of", then, "--basis", "recorded")
    assert json.loads(await caseflow("audit", "case", number, "--json", *as_of, *url)) == known
    printed = await caseflow(
        "audit", "compliance", "--station", "xuefeng_station", "--from", period["from"],
        "--to", period["to"], "--format", "json", *url,
    )  # fmt: skip
    assert json.loads(printed) == report
    table = await caseflow("audit", "case", number, *url)
    assert "PersonalDataViewed" in table and "申请人来电" in table
