"""Entering a paper record later (补录, issue 17) through the APIs, on both backends: a
case handed in on 6 December 2021 and reviewed, decided and delivered then, entered now.

Only staff with the special permission ``backfill`` may date an act; never in the future,
never before the case's previous act; a refusal stores nothing. The act is judged at its
moment (the delegation in force then, not now), the case's clock runs on the days it
happened, and the log keeps both times."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from services.processing.scheduling import PAPER_FILE_GRACE, TimerScheduler
from shared.adapters.db import create_engine
from shared.adapters.delegations import suspend
from shared.adapters.eventlog import EventLog, UnitOfWork
from shared.adapters.tables.eventlog import events
from shared.adapters.tables.timers import timers
from shared.domain.events import Actor
from shared.domain.moments import aware, entered_late
from shared.domain.workflow.reference import load_reference
from tests.services import build_app, staff_headers

STATION = "xuefeng_station"
BACKFILL = frozenset({"backfill"})
CLERK = staff_headers("li.clerk", "window_clerk", STATION, permissions=BACKFILL)
PLAIN_REVIEWER = staff_headers("wang.reviewer", "reviewer", STATION)
REVIEWER = staff_headers("wang.reviewer", "reviewer", STATION, permissions=BACKFILL)
HEAD = staff_headers("zhao.head", "station_head", STATION, permissions=BACKFILL)
APPLICANT = {"name": "王秀英", "phone": "13812345678", "id_number": "11010519491231002X"}
PENSION_DELEGATION = "hrss-xuefeng-2021"


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


class Station:
    """The window (intake) and the back office (processing), in process."""

    def __init__(self, intake: httpx.AsyncClient, processing: httpx.AsyncClient, url: str):
        self.intake, self.processing, self.url = intake, processing, url

    async def hand_in(self, when: str) -> str:
        item = load_reference().catalogue.get("pension_enrolment")
        materials = [{"code": m.code, "original_checked": True} for m in item.materials]
        answer = await self.intake.post(
            "/cases",
            json={
                "item_code": item.code,
                "applicant": APPLICANT,
                "materials": materials,
                "occurred_at": when,
            },
            headers={**CLERK, **key()},
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] == "accepted"
        return str(answer.json()["case_id"])

    async def act(
        self,
        case_id: str,
        action: str,
        headers: dict[str, str],
        body: dict[str, Any] | None = None,
        idempotency: dict[str, str] | None = None,
    ) -> httpx.Response:
        return await self.processing.post(
            f"/cases/{case_id}/actions/{action}",
            json=body or {},
            headers={**headers, **(idempotency or key())},
        )

    async def stored(self) -> int:
        engine = create_engine(self.url)
        try:
            async with engine.connect() as conn:
                count = await conn.scalar(sa.select(sa.func.count()).select_from(events))
                return int(count or 0)
        finally:
            await engine.dispose()

    async def history(self, case_id: str) -> list[dict[str, Any]]:
        answer = await self.processing.get(f"/cases/{case_id}/events", headers=CLERK)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["events"])


@pytest.fixture
async def station(seeded_db_url: str) -> AsyncIterator[Station]:
    intake = httpx.ASGITransport(app=build_app("intake", seeded_db_url))
    processing = httpx.ASGITransport(app=build_app("processing", seeded_db_url))
    async with (
        httpx.AsyncClient(transport=intake, base_url="http://intake") as window,
        httpx.AsyncClient(transport=processing, base_url="http://processing") as office,
    ):
        yield Station(window, office, seeded_db_url)


async def test_a_paper_case_entered_later_keeps_the_moments_it_happened(station: Station) -> None:
    case_id = await station.hand_in("2021-12-06T09:00:00+08:00")  # a Monday
    review = {"recommendation": "approve", "opinion": "材料齐全，符合条件"}

    # Without the permission: refused, and the attempt recorded when it was made, with the
    # moment it claimed; the case has not moved.
    before = await station.stored()
    refused = await station.act(
        case_id, "start_review", PLAIN_REVIEWER, {"occurred_at": "2021-12-06T10:00:00+08:00"}
    )
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "backfill" in refused.json()["detail"]
    attempt = (await station.history(case_id))[-1]
    assert attempt["event_type"] == "ActionRefused", attempt
    assert attempt["payload"]["reason"] == "missing_permission"
    assert attempt["payload"]["dated_at"] == "2021-12-06T10:00:00+08:00"
    assert attempt["occurred_at"] > "2026" and attempt["actor"]["user"] == "wang.reviewer"
    assert attempt["payload"]["status"] == "accepted"
    before += 1
    # In the future, before the hand-in, or not a moment: refused with the field named.
    future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    for moment, words in (
        (future, "can't be in the future"),
        ("2021-12-05T16:00:00+08:00", "before the case's previous act (2021-12-06T09:00+08:00)"),
        ("2021-12-06T10:00:00", "give a time zone"),
        (1638752400, "as text"),
    ):
        answer = await station.act(case_id, "start_review", REVIEWER, {"occurred_at": moment})
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == "occurred_at"
        assert words in answer.json()["detail"]
    assert await station.stored() == before

    start = key()
    steps: list[tuple[str, dict[str, str], dict[str, Any]]] = [
        ("start_review", REVIEWER, {"occurred_at": "2021-12-06T10:00:00+08:00"}),
        ("complete_review", REVIEWER, {**review, "occurred_at": "2021-12-06T11:00:00+08:00"}),
        ("approve", HEAD, {"occurred_at": "2021-12-07T09:00:00+08:00"}),
        ("deliver", CLERK, {"method": "in_person", "occurred_at": "2021-12-07T10:00:00+08:00"}),
    ]
    for action, who, body in steps:
        answer = await station.act(
            case_id, action, who, body, start if action == "start_review" else None
        )
        assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "delivered"

    # The same key and body again: the answer, nothing new; another moment with it: 409.
    count = await station.stored()
    again = await station.act(case_id, "start_review", REVIEWER, steps[0][2], start)
    assert again.status_code == 200, again.text
    other = await station.act(
        case_id, "start_review", REVIEWER, {"occurred_at": "2021-12-06T10:05:00+08:00"}, start
    )
    assert other.status_code == 409, other.text
    in_utc = await station.act(
        case_id, "start_review", REVIEWER, {"occurred_at": "2021-12-06T02:00:00Z"}, start
    )
    assert in_utc.status_code == 200, in_utc.text  # the same moment, written otherwise
    assert await station.stored() == count

    history = {e["event_type"]: e for e in await station.history(case_id)}
    approved = history["CaseApproved"]
    assert approved["occurred_at"].startswith("2021-12-07T01:00:00")
    assert approved["recorded_at"] > "2026"
    assert approved["delegation_id"] == PENSION_DELEGATION
    assert approved["authority"] == "hc_hrss"
    assert history["CaseDelivered"]["occurred_at"].startswith("2021-12-07T02:00:00")
    assert "occurred_at" not in history["CaseDelivered"]["payload"]
    stored = await EventLog(create_engine(station.url)).read_case(uuid.UUID(case_id))
    acts = ["CaseReceived", "CaseAccepted", "ReviewStarted", "ReviewCompleted"]
    acts += ["CaseApproved", "CaseDelivered"]
    assert {e.event_type: entered_late(e) for e in stored if e.event_type in acts} == dict.fromkeys(
        acts, True
    )
    assert not entered_late(next(e for e in stored if e.event_type == "ActionRefused"))

    # The clock ran on the days it happened: one working day, within the 1-day promise.
    case = (await station.processing.get(f"/cases/{case_id}", headers=CLERK)).json()
    assert (case["clock"]["used"], case["clock"]["running"]) == (1, False), case["clock"]


async def test_the_delegation_is_judged_at_the_moment_of_the_act(station: Station) -> None:
    """Suspended today, the pension delegation was in force in 2021: a decision dated then
    stands in its name; one taken now is refused."""
    backdated = await station.hand_in("2021-12-08T09:00:00+08:00")
    now = await station.hand_in("2021-12-08T09:30:00+08:00")
    for case_id in (backdated, now):
        for action, when in (("start_review", "10:00"), ("complete_review", "11:00")):
            body = {"occurred_at": f"2021-12-08T{when}:00+08:00"}
            if action == "complete_review":
                body |= {"recommendation": "approve", "opinion": "材料齐全"}
            answer = await station.act(case_id, action, REVIEWER, body)
            assert answer.status_code == 200, answer.text
    log = EventLog(create_engine(station.url))
    officer = Actor(user="liu.hrss", role="department_officer", station="hc_hrss")
    await suspend(log, PENSION_DELEGATION, reason="整改检查期间暂停", actor=officer)

    then = await station.act(
        backdated, "approve", HEAD, {"occurred_at": "2021-12-09T09:00:00+08:00"}
    )
    assert then.status_code == 200, then.text
    assert then.json()["status"] == "approved"
    today = await station.act(now, "approve", HEAD)
    assert today.status_code == 403, today.text
    assert "suspended" in today.json()["detail"]


async def test_timers_of_a_paper_file_wait_for_the_rest_of_it(station: Station) -> None:
    """Received only on 6 December 2021: the five-day notice window and every clock warning
    are long past. Its timers are due an hour after the hand-in was entered, not at once,
    so the file's own acceptance, entered next, makes them stale."""
    intake = await station.intake.post(
        "/cases",
        json={
            "item_code": "pension_enrolment",
            "applicant": APPLICANT,
            "decide": "later",
            "occurred_at": "2021-12-06T09:00:00+08:00",
        },
        headers={**CLERK, **key()},
    )
    assert intake.status_code == 201, intake.text
    case_id = uuid.UUID(intake.json()["case_id"])
    log = EventLog(create_engine(station.url))
    received = (await log.read_case(case_id))[-1]
    async with log.transaction() as tx:
        await TimerScheduler(load_reference()).handle(received, UnitOfWork(tx, "timers-test"))
    async with log.engine.connect() as conn:
        due = (await conn.execute(sa.select(timers.c.kind, timers.c.due_at))).all()
    assert [kind for kind, _ in due] == ["notice_window"]
    waits = aware(due[0][1]) - aware(received.recorded_at)
    assert PAPER_FILE_GRACE - timedelta(seconds=1) <= waits <= PAPER_FILE_GRACE, waits


async def test_an_outsider_with_the_permission_can_neither_date_nor_see_a_case(
    station: Station,
) -> None:
    """Longmen's reviewer, though allowed to enter paper records, finds no Xuefeng case to
    date an act on (the same 404 as for an unknown id); and Xuefeng's reviewer sending
    Longmen's Idempotency-Key makes a request of their own. Nothing of Longmen's lands."""
    case_id = await station.hand_in("2021-12-10T09:00:00+08:00")
    outsider = staff_headers("chen.reviewer", "reviewer", "longmen_station", permissions=BACKFILL)
    before = await station.stored()
    dated = {"occurred_at": "2021-12-10T10:00:00+08:00"}
    shared_key = key()
    refused = await station.act(case_id, "start_review", outsider, dated, shared_key)
    assert refused.status_code == 404, refused.text
    unknown = await station.act(str(uuid.uuid4()), "start_review", outsider, dated)
    assert unknown.status_code == 404
    assert refused.json()["title"] == unknown.json()["title"]
    assert await station.stored() == before
    mine = await station.act(case_id, "start_review", REVIEWER, dated, shared_key)
    assert mine.status_code == 200, mine.text
    assert mine.json()["status"] == "in_review"
    history = await station.history(case_id)
    assert {e["actor"]["station"] for e in history if e["event_type"] == "ReviewStarted"} == {
        "xuefeng_station"
    }
