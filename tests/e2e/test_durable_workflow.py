"""Durable timers and version pinning over the real stack (on ``CASEFLOW_TEST_E2E_BACKENDS``).

- Clock warnings, deemed acceptance and forwarding deadlines fire exactly once, with two
  processing replicas running and one of them killed and restarted mid-run.
- A case pins its item and workflow versions at intake: publishing version 2 while
  version-1 cases run changes nothing for them, and new cases follow version 2.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from shared.adapters.db import create_engine
from shared.adapters.eventlog import EventLog
from shared.adapters.tables.timers import timers
from shared.application.workflow.wiring import case_service
from shared.devtools import servers as devservers
from shared.devtools.waiting import wait_until
from shared.domain.catalogue import lock_catalogue
from shared.domain.workcalendar import CHINA_TZ, load_calendar
from shared.domain.workflow import clock as clocks
from shared.domain.workflow.engine import Staff
from shared.domain.workflow.reference import load_reference
from tests.services import (
    CLERK,
    HEAD,
    REVIEWER,
    VALID_APPLICANT,
    running_stack,
    service_env,
    start_process,
    wait_ready,
)

CALENDAR = load_calendar()
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def working_days_ago(n: int) -> datetime:
    """10:00 at the station, ``n`` working days before today."""
    day = datetime.now(CHINA_TZ).date()
    while n > 0:
        day -= timedelta(days=1)
        n -= CALENDAR.is_working_day(day)
    return datetime.combine(day, clock_time(10), tzinfo=CHINA_TZ)


def application(item_code: str, materials: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "item_code": item_code,
        "applicant": VALID_APPLICANT,
        "materials": [{"code": code, "original_checked": True} for code in materials],
        **extra,
    }


def submit(intake: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{intake}/cases",
        json=body,
        headers={**CLERK, "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def act(
    processing: str, case_id: str, action: str, who: Any, body: dict[str, Any] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{processing}/cases/{case_id}/actions/{action}",
        json=body or {},
        headers={**who, "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )


def history(base: str, case_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/cases/{case_id}/events", headers=CLERK, timeout=5)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


PATIENCE = 90.0
"""Seconds to wait for a timer's work: long enough for events a killed replica had fetched
to come back after their ack wait (30 s) on a loaded machine."""


def count(events: list[dict[str, Any]], event_type: str) -> int:
    return sum(e["event_type"] == event_type for e in events)


def holding(base: str, case_id: str, event_type: str) -> list[dict[str, Any]] | None:
    """The case's history once it holds an ``event_type`` event (None before)."""
    events = history(base, case_id)
    return events if count(events, event_type) else None


async def _forward_in_the_past(database_url: str, case_id: str, at: datetime) -> None:
    """Review and forward a case as if it had happened at ``at`` (the HTTP API records
    the present; the test needs a forwarding deadline that has already passed)."""
    engine = create_engine(database_url)
    try:
        service = case_service(EventLog(engine), load_reference())
        reviewer = Staff(user="wang.reviewer", role="reviewer", org="xuefeng_station")
        case = uuid.UUID(case_id)
        steps: list[tuple[str, dict[str, Any]]] = [
            ("start_review", {}),
            ("complete_review", {"recommendation": "approve", "opinion": "材料齐全"}),
            ("forward", {}),
        ]
        for action, body in steps:
            await service.act(case, action, body, reviewer, idempotency_key=uuid.uuid4().hex, at=at)
    finally:
        await engine.dispose()


async def _timer_rows(database_url: str, case_ids: list[str]) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.select(timers).where(timers.c.case_id.in_([uuid.UUID(c) for c in case_ids]))
            )
            return [dict(r._mapping) for r in rows]
    finally:
        await engine.dispose()


def test_timers_fire_once_across_replicas_and_a_killed_replica(
    module_db_url: str, nats_url: str, tmp_path: Path
) -> None:
    with running_stack(module_db_url, nats_url, tmp_path) as stack:
        intake = stack["intake"].base_url
        processing = stack["processing"].base_url
        port = devservers.free_port()
        second = start_process(
            "processing-2",
            [sys.executable, "-m", "shared.cli.main", "serve", "processing"],
            service_env("processing", module_db_url, nats_url, port),
            port,
            tmp_path,
        )
        try:
            wait_ready(second)
            # Paper forms entered late: the clocks are already running late.
            red = submit(
                intake,
                application(
                    "pension_enrolment",
                    ["id_card", "household_register", "application_form"],
                    occurred_at=working_days_ago(10).isoformat(),
                ),
            )
            yellow_item = "pension_benefit_claim"
            yellow = submit(
                intake,
                application(
                    yellow_item,
                    [
                        "id_card",
                        "household_register",
                        "bank_card",
                        "pension_contribution_record",
                        "application_form",
                    ],
                    occurred_at=working_days_ago(5).isoformat(),
                ),
            )
            deemed = submit(
                intake,
                application(
                    "pension_enrolment",
                    ["id_card", "household_register", "application_form"],
                    decide="later",
                    occurred_at=working_days_ago(10).isoformat(),
                ),
            )
            assert deemed["status"] == "received"
            forwarded = submit(
                intake,
                application(
                    "logging_permit",
                    ["id_card", "application_form", "forest_right_certificate", "logging_design"],
                    occurred_at=working_days_ago(30).isoformat(),
                ),
            )
            asyncio.run(
                _forward_in_the_past(module_db_url, forwarded["case_id"], working_days_ago(25))
            )
            # Kill one replica without warning mid-run and start it again.
            stack["processing"].proc.send_signal(signal.SIGKILL)
            stack["processing"].proc.wait()
            restarted = start_process(
                "processing-restarted",
                [sys.executable, "-m", "shared.cli.main", "serve", "processing"],
                service_env(
                    "processing", module_db_url, nats_url, int(processing.rsplit(":", 1)[1])
                ),
                int(processing.rsplit(":", 1)[1]),
                tmp_path,
            )
            stack["processing"] = restarted
            wait_ready(restarted)

            red_events = wait_until(
                lambda: holding(intake, red["case_id"], "ClockWarningRaised"),
                what="a red warning",
                timeout=PATIENCE,
            )
            deemed_events = wait_until(
                lambda: holding(intake, deemed["case_id"], "CaseDeemedAccepted"),
                what="deemed acceptance",
                timeout=PATIENCE,
            )
            forward_events = wait_until(
                lambda: holding(intake, forwarded["case_id"], "ForwardOverdue"),
                what="the forwarding deadline",
                timeout=PATIENCE,
            )
            yellow_events = wait_until(
                lambda: holding(intake, yellow["case_id"], "ClockWarningRaised"),
                what="a yellow warning",
                timeout=PATIENCE,
            )
            time.sleep(3)  # give a second firing every chance to happen
            red_events = history(intake, red["case_id"])
            warnings = [e for e in red_events if e["event_type"] == "ClockWarningRaised"]
            assert [w["payload"]["level"] for w in warnings] == ["red"]
            assert warnings[0]["actor"]["role"] == "system"
            assert warnings[0]["authority"] == "hc_hrss"

            deemed_events = history(intake, deemed["case_id"])
            assert count(deemed_events, "CaseDeemedAccepted") == 1
            deemed_event = next(e for e in deemed_events if e["event_type"] == "CaseDeemedAccepted")
            received_on = datetime.fromisoformat(deemed_events[0]["occurred_at"])
            assert deemed_event["payload"]["accepted_on"] == (
                received_on.astimezone(CHINA_TZ).date().isoformat()
            )
            assert count(history(intake, forwarded["case_id"]), "ForwardOverdue") == 1
            assert count(forward_events, "ForwardOverdue") == 1

            yellow_events = history(intake, yellow["case_id"])
            levels = [
                e["payload"]["level"]
                for e in yellow_events
                if e["event_type"] == "ClockWarningRaised"
            ]
            assert levels == ["yellow"]
            # The red warning waits on a timer due the day the committed limit is passed.
            # (scheduled by the consumer that handled the yellow warning)
            pending = wait_until(
                lambda: [
                    r
                    for r in asyncio.run(_timer_rows(module_db_url, [yellow["case_id"]]))
                    if r["fired_at"] is None and r["kind"] == "clock_warning"
                ],
                what="the red warning's timer",
                timeout=PATIENCE,
            )
            assert [r["payload"]["level"] for r in pending] == ["red"]
            accepted_on = date.fromisoformat(yellow_events[1]["payload"]["accepted_on"])
            today = datetime.now(CHINA_TZ).date()
            used = CALENDAR.working_days_between(accepted_on, today)
            red_day = CALENDAR.add_working_days(today, 5 + 1 - used)
            due = pending[0]["due_at"]
            due = due if due.tzinfo else due.replace(tzinfo=UTC)
            assert due.astimezone(CHINA_TZ).date() == red_day
            assert clocks.yellow_at(5) == 4

            # The station head sees the late cases as escalations.
            def escalations() -> set[str]:
                tasks = httpx.get(f"{processing}/worklist", headers=HEAD, timeout=5).json()
                return {t["case_id"] for t in tasks["tasks"] if t["task"] == "escalation"}

            wait_until(
                lambda: {red["case_id"], yellow["case_id"]} <= escalations(),
                what="escalations",
                timeout=PATIENCE,
            )
            # Every timer fired at most once, and each fired one did its work once.
            cases = [red["case_id"], deemed["case_id"], forwarded["case_id"]]
            for row in asyncio.run(_timer_rows(module_db_url, cases)):
                assert row["attempts"] <= 1 or row["last_error"], row
        finally:
            second.terminate()
            assert "Traceback" not in second.logs(), second.logs()[-3000:]


@pytest.fixture
def data_copy(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "data"
    shutil.copytree(DATA, target)
    yield target


def publish_station_item_v2(data: Path) -> None:
    """What an operator does to publish version 2: the workflow, a new item version pinning
    it, and the lock."""
    workflow = data / "workflows" / "station_item.v2.yaml"
    workflow.write_text(
        workflow.read_text("utf-8").replace("status: draft", "status: published"), "utf-8"
    )
    items_file = data / "catalogue" / "items.yaml"
    items = yaml.safe_load(items_file.read_text("utf-8"))
    v1 = next(i for i in items["items"] if i["code"] == "pension_enrolment")
    items["items"].append({**v1, "version": 2, "workflow_version": 2, "committed_limit_days": 2})
    items_file.write_text(yaml.safe_dump(items, allow_unicode=True, sort_keys=False), "utf-8")
    assert lock_catalogue(data) == ["pension_enrolment@2"]


def test_version_2_never_changes_a_running_case(
    module_db_url: str, nats_url: str, tmp_path: Path, data_copy: Path
) -> None:
    materials = ["id_card", "household_register", "application_form"]
    extra = {"data_dir": str(data_copy)}
    (tmp_path / "v1").mkdir()
    with running_stack(module_db_url, nats_url, tmp_path / "v1", **extra) as stack:
        intake, processing = stack["intake"].base_url, stack["processing"].base_url
        # Version 2 is still a draft: new cases pin version 1.
        old = submit(intake, application("pension_enrolment", materials))
        assert old["workflow"] == {"name": "station_item", "version": 1}
        assert old["item"]["version"] == 1
        waiting = submit(intake, application("pension_enrolment", materials))
        for case in (old, waiting):
            assert act(processing, case["case_id"], "start_review", REVIEWER).status_code == 200
        review = {"recommendation": "approve", "opinion": "材料齐全"}
        assert act(processing, old["case_id"], "complete_review", REVIEWER, review).is_success

    publish_station_item_v2(data_copy)
    (tmp_path / "v2").mkdir()
    with running_stack(module_db_url, nats_url, tmp_path / "v2", **extra) as stack:
        intake, processing = stack["intake"].base_url, stack["processing"].base_url
        new = submit(intake, application("pension_enrolment", materials))
        assert new["workflow"] == {"name": "station_item", "version": 2}
        assert new["item"]["version"] == 2
        received = history(intake, new["case_id"])[0]["payload"]
        assert received["workflow"] == {"name": "station_item", "version": 2}
        assert received["item_version"] == 2

        # The version-1 cases finish under version 1: decided straight after review.
        assert act(processing, old["case_id"], "approve", HEAD).json()["status"] == "approved"
        assert act(processing, waiting["case_id"], "complete_review", REVIEWER, review).is_success
        assert act(processing, waiting["case_id"], "sign_off", HEAD).status_code == 409
        assert act(processing, waiting["case_id"], "approve", HEAD).is_success

        # The version-2 case needs the head's sign-off before the decision.
        assert act(processing, new["case_id"], "start_review", REVIEWER).is_success
        assert act(processing, new["case_id"], "complete_review", REVIEWER, review).is_success
        premature = act(processing, new["case_id"], "approve", HEAD)
        assert premature.status_code == 409, premature.text
        assert "sign_off" in premature.json()["detail"]
        assert act(processing, new["case_id"], "sign_off", HEAD).json()["status"] == "signed_off"
        assert act(processing, new["case_id"], "approve", HEAD).json()["status"] == "approved"

        for case in (old, waiting, new):
            delivered = act(processing, case["case_id"], "deliver", CLERK, {"method": "in_person"})
            assert delivered.json()["status"] == "delivered"
            closed = act(processing, case["case_id"], "close", CLERK).json()
            assert closed["status"] == "closed"
            assert closed["workflow"]["version"] == (2 if case is new else 1)
