"""Workflow timers over the real stack: they fire exactly once across replicas and restarts.

Two processing processes share one database and one NATS server (the same durable
consumers, each with its own timer wheel); one is killed with SIGKILL right after a batch
of late cases arrives and started again, later the other one too. Paper forms entered
late (``occurred_at`` in the past) make the clocks late already (with no grace for the rest
of a paper file, ``CASEFLOW_PROCESSING_PAPER_FILE_GRACE_SECONDS=0``: see test_backfill for
the hour's wait by default):

- a case accepted five working days past its committed limit → one red ``ClockWarningRaised``,
  escalated to the station head's worklist;
- a case past 80 % of its limit but not over it → one yellow warning now, and the red
  timer waiting for the day the limit is passed;
- a case received without a decision ten working days ago → one ``CaseDeemedAccepted``
  (accepted on the day of receipt, §32);
- a forwarded case whose forwarding deadline passed → one ``ForwardOverdue``;
- a case accepted today → nothing yet, its yellow timer waiting.

Each event is counted in the case's history, and each timer row must have fired once.
Events a killed replica had fetched but not acknowledged come back to the survivors after
the consumers' ack wait (30 s), hence the generous polls.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shared.adapters.db import create_engine
from shared.adapters.eventlog import EventLog
from shared.adapters.tables.eventlog import inbox
from shared.adapters.tables.timers import timers
from shared.application.workflow.wiring import case_service
from shared.devtools import httpcalls
from shared.devtools import servers as devservers
from shared.devtools.waiting import wait_until
from shared.domain.workcalendar import CHINA_TZ, load_calendar
from shared.domain.workflow import clock as clocks
from shared.domain.workflow.engine import Staff
from shared.domain.workflow.reference import load_reference
from tests.services import (
    CLERK,
    HEAD,
    REVIEWER,
    VALID_APPLICANT,
    ServiceProcess,
    running_stack_each,
    service_env,
    start_process,
    wait_ready,
)

CALENDAR = load_calendar()
NO_GRACE = {"PAPER_FILE_GRACE_SECONDS": "0"}
"""These paper forms are whole as entered: their timers need not wait for later acts."""
STATION_ITEM = "pension_benefit_claim"
"""Completed at the station; committed limit 5 working days (yellow at 4, red past 5)."""
STATION_MATERIALS = [
    "id_card",
    "household_register",
    "bank_card",
    "pension_contribution_record",
    "application_form",
]
LIMIT = 5
QUICK_ITEM = "pension_enrolment"
"""Committed limit 1 working day."""
QUICK_MATERIALS = ["id_card", "household_register", "application_form"]
FORWARDED_ITEM = "logging_permit"
"""Forwarded to the forestry bureau; committed limit 5."""
FORWARDED_MATERIALS = ["id_card", "application_form", "forest_right_certificate", "logging_design"]


def today() -> date:
    return datetime.now(CHINA_TZ).date()


def used_days_ago(used: int) -> datetime:
    """10:00 at the station on the latest working day from which ``used`` working days
    have passed by today (the half-open interval (day, today])."""
    day = today()
    while not (
        CALENDAR.is_working_day(day) and CALENDAR.working_days_between(day, today()) == used
    ):
        day -= timedelta(days=1)
    return datetime.combine(day, clock_time(10), tzinfo=CHINA_TZ)


def local_day(stamp: str | datetime) -> date:
    moment = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite keeps UTC
    return moment.astimezone(CHINA_TZ).date()


def submit(
    intake: str, item: str, materials: list[str], at: datetime, **extra: Any
) -> dict[str, Any]:
    body = {
        "item_code": item,
        "applicant": VALID_APPLICANT,
        "materials": [{"code": code, "original_checked": True} for code in materials],
        "occurred_at": at.isoformat(),
        **extra,
    }
    headers = {**CLERK, "Idempotency-Key": uuid.uuid4().hex}
    response = httpcalls.post(f"{intake}/cases", json=body, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def history(base: str, case_id: str) -> list[dict[str, Any]]:
    response = httpcalls.get(f"{base}/cases/{case_id}/events", headers=CLERK, timeout=5)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


PATIENCE = 90.0
"""Seconds to wait for a timer's work (a killed replica's events come back after their ack
wait)."""


def warnings(events: list[dict[str, Any]]) -> list[str]:
    return [e["payload"]["level"] for e in events if e["event_type"] == "ClockWarningRaised"]


def count(events: list[dict[str, Any]], event_type: str) -> int:
    return sum(e["event_type"] == event_type for e in events)


async def forward_in_the_past(database_url: str, case_id: str, at: datetime) -> None:
    """Review and forward the case as if it had happened at ``at``: the HTTP API records
    the present, and the test needs a forwarding deadline that has passed already."""
    engine = create_engine(database_url)
    try:
        service = case_service(EventLog(engine), load_reference())
        reviewer = Staff(user="wang.reviewer", role="reviewer", org="xuefeng_station")
        steps: list[tuple[str, dict[str, Any]]] = [
            ("start_review", {}),
            ("complete_review", {"recommendation": "approve", "opinion": "采伐设计符合规定"}),
            ("forward", {}),
        ]
        for action, body in steps:
            key = f"setup:{case_id}:{action}"
            await service.act(
                uuid.UUID(case_id), action, body, reviewer, idempotency_key=key, at=at
            )
    finally:
        await engine.dispose()


async def timer_rows(database_url: str) -> tuple[list[dict[str, Any]], Counter[uuid.UUID]]:
    """Every timer, and how often each timer id is in the inbox (the firing's record)."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(sa.select(timers))]
            handled = await conn.execute(
                sa.select(inbox.c.event_id).where(inbox.c.consumer.like("timer:%"))
            )
            return rows, Counter(r[0] for r in handled)
    finally:
        await engine.dispose()


def processing_replica(name: str, database_url: str, nats_url: str, logs: Path) -> ServiceProcess:
    port = devservers.free_port()
    replica = start_process(
        name,
        [sys.executable, "-m", "shared.cli.main", "serve", "processing"],
        service_env("processing", database_url, nats_url, port, **NO_GRACE),
        port,
        logs,
    )
    wait_ready(replica)
    return replica


def head_tasks(processing: ServiceProcess) -> set[tuple[str, str, str]]:
    """The station head's worklist: (case id, task, case status)."""
    response = httpcalls.get(f"{processing.base_url}/worklist", headers=HEAD, timeout=5)
    assert response.status_code == 200, response.text
    return {(t["case_id"], t["task"], t["status"]) for t in response.json()["tasks"]}


def kill(replica: ServiceProcess) -> None:
    """No drain, no goodbye: whatever the process had in hand is lost with it."""
    replica.proc.send_signal(signal.SIGKILL)
    replica.proc.wait(10)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    """Extra processing processes a test starts; stopped at the end."""
    started: list[ServiceProcess] = []
    yield started
    for replica in started:
        replica.terminate()


def late_cases(intake: str) -> dict[str, dict[str, Any]]:
    """One case of each lateness, handed in as paper forms entered late."""
    red = submit(intake, STATION_ITEM, STATION_MATERIALS, used_days_ago(LIMIT + 5))
    yellow_used = clocks.yellow_at(LIMIT)
    assert yellow_used <= LIMIT  # 80 % passed, the limit not yet
    yellow = submit(intake, STATION_ITEM, STATION_MATERIALS, used_days_ago(yellow_used))
    deemed = submit(intake, QUICK_ITEM, QUICK_MATERIALS, used_days_ago(10), decide="later")
    forwarded = submit(intake, FORWARDED_ITEM, FORWARDED_MATERIALS, used_days_ago(30))
    for case in (red, yellow, forwarded):
        assert case["status"] == "accepted", case
    assert deemed["status"] == "received", deemed
    return {"red": red, "yellow": yellow, "deemed": deemed, "forwarded": forwarded}


def test_clock_warnings_deemed_acceptance_and_forward_escalation_fire_once(
    db_url: str, nats_url: str, tmp_path: Path, replicas: list[ServiceProcess]
) -> None:
    forwarded_on = used_days_ago(clocks.FORWARD_LIMIT_DAYS + 5)
    with running_stack_each(db_url, nats_url, tmp_path, {"processing": NO_GRACE}) as stack:
        intake = stack["intake"].base_url
        replicas.append(processing_replica("processing-b", db_url, nats_url, tmp_path))

        # Batch 1 arrives with both replicas up; one dies at once, mid-work.
        first = late_cases(intake)
        on_time = submit(intake, STATION_ITEM, STATION_MATERIALS, datetime.now(CHINA_TZ))
        kill(stack["processing"])
        asyncio.run(forward_in_the_past(db_url, first["forwarded"]["case_id"], forwarded_on))
        stack["processing"] = processing_replica("processing-a2", db_url, nats_url, tmp_path)

        # Batch 2 with both up again.
        second = late_cases(intake)
        asyncio.run(forward_in_the_past(db_url, second["forwarded"]["case_id"], forwarded_on))
        batches = (first, second)

        def fired(kind: str, event_type: str, level: str | None = None) -> Callable[[], bool]:
            def check() -> bool:
                for batch in batches:
                    events = history(intake, batch[kind]["case_id"])
                    found = warnings(events) if level else [e["event_type"] for e in events]
                    if (level or event_type) not in found:
                        return False
                return True

            return check

        wait_until(fired("red", "ClockWarningRaised", "red"), what="red warnings", timeout=PATIENCE)
        wait_until(
            fired("yellow", "ClockWarningRaised", "yellow"),
            what="yellow warnings",
            timeout=PATIENCE,
        )
        wait_until(
            fired("deemed", "CaseDeemedAccepted"), what="deemed acceptance", timeout=PATIENCE
        )
        wait_until(
            fired("deemed", "ClockWarningRaised", "red"),
            what="red warnings after deemed acceptance",
            timeout=PATIENCE,
        )
        wait_until(
            fired("forwarded", "ForwardOverdue"), what="the forwarding deadlines", timeout=PATIENCE
        )
        wait_until(
            fired("forwarded", "ClockWarningRaised", "red"),
            what="red warnings on forwarded cases",
            timeout=PATIENCE,
        )

        # Suspending and resuming a late case moves its deadline, not its lateness: the red
        # card stands (still escalated), and no second one is raised.
        paused = first["red"]["case_id"]
        for action, body in (
            ("start_review", {}),
            ("suspend", {"kind": "expert_review", "reason": "待专家评审养老金核定"}),
            ("resume", {}),
        ):
            response = httpcalls.post(
                f"{stack['processing'].base_url}/cases/{paused}/actions/{action}",
                json=body,
                headers={**REVIEWER, "Idempotency-Key": uuid.uuid4().hex},
                timeout=10,
            )
            assert response.status_code == 200, response.text
        assert response.json()["warning"] == "red"
        wait_until(
            lambda: (paused, "escalation", "in_review") in head_tasks(stack["processing"]),
            what="the resumed case on the head's worklist",
            timeout=PATIENCE,
        )

        # The other replica dies too and comes back; a sentinel case's red warning shows
        # the restarted wheels have been round (and found nothing else to fire again).
        kill(replicas[0])
        replicas[0] = processing_replica("processing-b2", db_url, nats_url, tmp_path)
        sentinel = submit(intake, STATION_ITEM, STATION_MATERIALS, used_days_ago(LIMIT + 1))
        wait_until(
            lambda: "red" in warnings(history(intake, sentinel["case_id"])),
            what="the sentinel's red warning",
            timeout=PATIENCE,
        )

        for batch in batches:
            red = history(intake, batch["red"]["case_id"])
            assert warnings(red) == ["red"]
            warning = next(e for e in red if e["event_type"] == "ClockWarningRaised")
            assert warning["actor"]["role"] == "system"
            assert warning["authority"] == "hc_hrss"
            payload = warning["payload"]
            accepted_on = date.fromisoformat(red[1]["payload"]["accepted_on"])
            used = CALENDAR.working_days_between(accepted_on, local_day(warning["occurred_at"]))
            assert (payload["used"], payload["limit"], payload["remaining"]) == (
                used,
                LIMIT,
                LIMIT - used,
            )
            assert used == LIMIT + 5 and payload["escalated_to"] == "station_head"

            assert warnings(history(intake, batch["yellow"]["case_id"])) == ["yellow"]

            deemed = history(intake, batch["deemed"]["case_id"])
            assert count(deemed, "CaseDeemedAccepted") == 1
            assert count(deemed, "CaseAccepted") == 0
            deemed_event = next(e for e in deemed if e["event_type"] == "CaseDeemedAccepted")
            received_on = local_day(deemed[0]["occurred_at"])
            assert deemed_event["payload"]["accepted_on"] == received_on.isoformat()
            assert deemed_event["payload"]["deemed"] is True
            assert deemed_event["actor"]["role"] == "system"
            assert warnings(deemed) == ["red"]

            forwarded = history(intake, batch["forwarded"]["case_id"])
            assert count(forwarded, "CaseForwarded") == 1
            assert count(forwarded, "ForwardOverdue") == 1
            overdue = next(e for e in forwarded if e["event_type"] == "ForwardOverdue")
            deadline = CALENDAR.add_working_days(
                forwarded_on.date(), clocks.FORWARD_LIMIT_DAYS
            ).isoformat()
            assert overdue["payload"] == {
                "to": "hc_forestry",
                "deadline": deadline,
                "case_number": batch["forwarded"]["case_number"],
            }
            assert warnings(forwarded) == ["red"]
        assert warnings(history(intake, sentinel["case_id"])) == ["red"]
        assert warnings(history(intake, on_time["case_id"])) == []

        # Escalated: the station head's worklist has the late cases, not the one on time.
        late = {
            (batch[kind]["case_id"], "escalation")
            for batch in batches
            for kind in ("red", "yellow", "deemed", "forwarded")
        }
        chase = {(batch["forwarded"]["case_id"], "chase_department") for batch in batches}

        def listed() -> set[tuple[str, str]]:
            return {(case, task) for case, task, _ in head_tasks(stack["processing"])}

        wait_until(
            lambda: late | chase <= listed(),
            what="escalations on the head's worklist",
            timeout=PATIENCE,
        )
        assert (on_time["case_id"], "escalation") not in listed()

        # The waiting timers are scheduled by consumers (the red one after the yellow
        # warning was handled), maybe by a replica after a killed one's ack wait.
        def waiting() -> bool:
            rows, _ = asyncio.run(timer_rows(db_url))
            open_ = {str(r["case_id"]) for r in rows if r["fired_at"] is None}
            return {on_time["case_id"], *(b["yellow"]["case_id"] for b in batches)} <= open_

        wait_until(waiting, what="the timers that wait", timeout=PATIENCE)

        # The timers table: every due timer fired, each exactly once; the others wait.
        rows, handled = asyncio.run(timer_rows(db_url))
        now = datetime.now(UTC)
        by_case: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_case.setdefault(str(row["case_id"]), []).append(row)
            due = row["due_at"] if row["due_at"].tzinfo else row["due_at"].replace(tzinfo=UTC)
            if row["fired_at"] is not None:
                assert handled[row["timer_id"]] == 1, row
                assert row["attempts"] >= 1 and (row["attempts"] == 1 or row["last_error"]), row
            else:
                assert handled[row["timer_id"]] == 0, row
                assert due > now, f"a due timer never fired: {row}"

        def kinds(case: dict[str, Any], fired: bool) -> list[tuple[str, str | None]]:
            return sorted(
                (r["kind"], r["payload"].get("level"))
                for r in by_case[case["case_id"]]
                if (r["fired_at"] is not None) == fired
            )

        for batch in batches:
            assert kinds(batch["red"], True) == [("clock_warning", "red")]
            assert kinds(batch["red"], False) == []
            assert kinds(batch["deemed"], True) == [
                ("clock_warning", "red"),
                ("notice_window", None),
            ]
            assert kinds(batch["deemed"], False) == []
            assert kinds(batch["forwarded"], True) == [
                ("clock_warning", "red"),
                ("forward_deadline", None),
            ]
            assert kinds(batch["forwarded"], False) == []
            # Yellow now; the red one waits for the day the committed limit is passed.
            yellow = batch["yellow"]
            assert kinds(yellow, True) == [("clock_warning", "yellow")]
            assert kinds(yellow, False) == [("clock_warning", "red")]
            (red_timer,) = [r for r in by_case[yellow["case_id"]] if r["fired_at"] is None]
            scheduled_on = local_day(red_timer["created_at"])
            accepted_on = date.fromisoformat(yellow["receipt"]["accepted_on"])
            used = CALENDAR.working_days_between(accepted_on, scheduled_on)
            red_day = CALENDAR.add_working_days(scheduled_on, LIMIT + 1 - used)
            due = red_timer["due_at"]
            due = due if due.tzinfo else due.replace(tzinfo=UTC)
            assert due == datetime.combine(red_day, clock_time(0), tzinfo=CHINA_TZ)
            assert red_timer["payload"]["epoch"] == 2  # the clock started at CaseAccepted
        # Accepted today: nothing yet; yellow is due once 80 % of the limit is used.
        assert kinds(on_time, True) == []
        (yellow_timer,) = by_case[on_time["case_id"]]
        assert yellow_timer["payload"]["level"] == "yellow"
        yellow_day = CALENDAR.add_working_days(
            local_day(yellow_timer["created_at"]), clocks.yellow_at(LIMIT)
        )
        due = yellow_timer["due_at"]
        due = due if due.tzinfo else due.replace(tzinfo=UTC)
        assert due == datetime.combine(yellow_day, clock_time(0), tzinfo=CHINA_TZ)

    for process in (*replicas, stack["processing"]):
        assert "Traceback" not in process.logs(), process.logs()[-3000:]
