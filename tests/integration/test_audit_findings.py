"""The audit on a real log (both backends) with what a faulty or bypassed writer could have
written into it: every finding named where it is, and none hiding the rest."""

from __future__ import annotations

import json

from shared.adapters import delegations as store
from shared.adapters.eventlog import EventLog
from tests.audit_helpers import (
    HEAD,
    OFFICER,
    REVIEWER,
    CaseScript,
    china,
    instrument,
    received_and_accepted,
)
from tests.integration.test_audit_api import AUDITOR, Stack, problem
from tests.integration.test_audit_api import stack as stack  # the services, as a fixture
from tests.integration.test_audit_log import caseflow, write

CODE = "hrss-audit-2026"


PERIOD = ("--station", "xuefeng_station", "--from", "2026-11-01", "--to", "2026-11-30")


async def test_the_period_starts_at_midnight_in_china(log: EventLog, db_url: str) -> None:
    """An action at 02:00 China time on the first day (18:00 UTC the day before) is in the
    period, one at 23:30 the day before is not; the last day counts until midnight."""
    await store.publish(log, instrument(CODE), actor=OFFICER, at=china(1, 6))
    early = received_and_accepted(CaseScript("XF-2026-000501"), china(11, 1, 2), (CODE, 1))
    await write(log, early)
    eve = received_and_accepted(CaseScript("XF-2026-000502"), china(10, 31, 23, 30), (CODE, 1))
    await write(log, eve)
    late = received_and_accepted(CaseScript("XF-2026-000503"), china(11, 30, 23, 30), (CODE, 1))
    await write(log, late)
    after = received_and_accepted(CaseScript("XF-2026-000504"), china(12, 1, 0, 30), (CODE, 1))
    await write(log, after)

    result = await caseflow(
        "audit", "compliance", *PERIOD, "--format", "json", "--database-url", db_url
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    numbers = [a["case_number"] for a in report["actions"]]
    assert numbers == ["XF-2026-000501"] * 2 + ["XF-2026-000503"] * 2


async def test_an_event_the_workflow_does_not_allow_hides_nothing(
    log: EventLog, db_url: str
) -> None:
    await store.publish(log, instrument(CODE), actor=OFFICER, at=china(1, 6))
    script = received_and_accepted(CaseScript("XF-2026-000511"), china(11, 16), (CODE, 1))
    script.add("CaseApproved", china(11, 16, 10), HEAD, action="approve", delegation=(CODE, 1))
    script.add(
        "ReviewStarted", china(11, 17), REVIEWER, action="start_review", delegation=(CODE, 1)
    )
    await write(log, script)
    url = ("--database-url", db_url)

    timeline = await caseflow("audit", "case", "XF-2026-000511", "--json", *url)
    assert timeline.exit_code == 0, timeline.output
    events = json.loads(timeline.output)["events"]
    assert [e["not_allowed"] is not None for e in events] == [False, False, True, False]
    assert "from status accepted" in events[2]["not_allowed"]
    assert events[3]["status_after"] == "in_review"
    table = await caseflow("audit", "case", "XF-2026-000511", *url)
    assert table.exit_code == 0 and "NOT ALLOWED" in table.output

    report = await caseflow("audit", "compliance", *PERIOD, "--format", "json", *url)
    assert report.exit_code == 0, report.output
    data = json.loads(report.output)
    assert [a["use"] for a in data["actions"]] == ["within", "within", "not_allowed", "within"]
    assert data["counts"]["not_allowed"] == 1 and data["compliant"] is False


async def test_an_unknown_item_and_out_of_range_moments_are_named_not_crashed(
    log: EventLog, db_url: str
) -> None:
    await store.publish(log, instrument(CODE), actor=OFFICER, at=china(1, 6))
    unknown = CaseScript("XF-2026-000521", item_code="no_such_item")
    await write(log, received_and_accepted(unknown, china(11, 16), (CODE, 1)))
    url = ("--database-url", db_url)

    timeline = await caseflow("audit", "case", "XF-2026-000521", "--json", *url)
    assert timeline.exit_code == 0, timeline.output
    checks = [e["delegation"]["check"] for e in json.loads(timeline.output)["events"]]
    assert [c["use"] for c in checks] == ["unknown_item", "unknown_item"]
    report = await caseflow("audit", "compliance", *PERIOD, "--format", "json", *url)
    assert report.exit_code == 0, report.output
    assert json.loads(report.output)["counts"]["unknown_item"] == 2

    for moment in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-12:00"):
        far = await caseflow("audit", "case", "XF-2026-000521", "--as-of", moment, *url)
        assert far.exit_code == 2, far.output
        assert "out of range" in far.output and "Traceback" not in far.output
    early = await caseflow(
        "audit", "compliance", "--station", "xuefeng_station", "--from", "0001-01-01",
        "--to", "2026-11-30", *url,
    )  # fmt: skip
    assert early.exit_code == 2 and "out of range" in early.output, early.output


async def test_the_api_answers_the_same_findings_and_problems(stack: Stack) -> None:
    await store.publish(stack.log, instrument(CODE), actor=OFFICER, at=china(1, 6))
    unknown = CaseScript("XF-2026-000522", item_code="no_such_item")
    await write(stack.log, received_and_accepted(unknown, china(11, 16), (CODE, 1)))
    path = "/audit/cases/XF-2026-000522/timeline"

    found = await stack.processing.get(path, headers=AUDITOR)
    assert found.status_code == 200, found.text
    assert [e["delegation"]["check"]["use"] for e in found.json()["events"]] == [
        "unknown_item",
        "unknown_item",
    ]
    far = await stack.processing.get(
        path, params={"as_of": "0001-01-01T00:00:00+14:00"}, headers=AUDITOR
    )
    assert "out of range" in problem(far, 422)["detail"]
    early = await stack.processing.get(
        "/audit/compliance",
        params={"station": "xuefeng_station", "from": "0001-01-01", "to": "2026-11-30"},
        headers=AUDITOR,
    )
    assert "out of range" in problem(early, 422)["detail"]
