"""The audit against a real log on both backends, with the bad cases written straight into
it (as a faulty or bypassed writer would: the live system refuses them), read back
through ``caseflow audit case`` and ``caseflow audit compliance``."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

from typer.testing import CliRunner, Result

from shared.adapters import delegations as store
from shared.adapters.eventlog import EventLog
from shared.cli.main import app
from tests.audit_helpers import (
    HEAD,
    ID_NUMBER,
    OFFICER,
    REVIEWER,
    CaseScript,
    china,
    instrument,
    received_and_accepted,
)

CODE = "hrss-audit-2026"


async def caseflow(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the ``caseflow`` command (its own event loop, in a thread)."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def write(log: EventLog, script: CaseScript) -> None:
    await log.append(script.case_id, 0, script.new_events(), case_kind="application")


async def bad_station(log: EventLog) -> None:
    """One delegation, revoked on 20 Nov at 10:00; cases acting before and after."""
    await store.publish(log, instrument(CODE), actor=OFFICER, at=china(1, 6))
    await store.revoke(log, CODE, reason="站点撤并", actor=OFFICER, at=china(11, 20, 10))
    before = received_and_accepted(CaseScript("XF-2026-000901"), china(11, 16), (CODE, 1))
    before.add(
        "ReviewStarted", china(11, 17), REVIEWER, action="start_review", delegation=(CODE, 1)
    )
    before.add(
        "ReviewCompleted",
        china(11, 20, 11),  # an hour after the revocation
        REVIEWER,
        action="complete_review",
        delegation=(CODE, 1),
        recommendation="approve",
    )
    before.add("CaseApproved", china(11, 20, 12), REVIEWER, action="approve", delegation=(CODE, 1))
    before.add(
        "PersonalDataViewed",
        china(11, 20, 13),
        HEAD,
        authority=None,
        reason="核对身份 / checking the identity",
        fields=["id_number", "name", "phone"],
    )
    await write(log, before)
    # Outside: no instrument covers this item at all.
    outside = received_and_accepted(
        CaseScript("XF-2026-000902", item_code="maternal_health_handbook"),
        china(11, 18),
        (CODE, 1),
    )
    await write(log, outside)


async def test_bad_actions_written_into_the_log_are_classified_and_located(
    log: EventLog, db_url: str
) -> None:
    await bad_station(log)
    url = ("--database-url", db_url)
    period = ("--station", "xuefeng_station", "--from", "2026-11-01", "--to", "2026-11-30")

    as_json = await caseflow("audit", "compliance", *period, "--format", "json", *url)
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    found = [(a["case_number"], a["action"], a["use"]) for a in report["actions"]]
    assert found == [
        ("XF-2026-000901", "receive", "within"),
        ("XF-2026-000901", "accept", "within"),
        ("XF-2026-000901", "start_review", "within"),
        ("XF-2026-000902", "receive", "outside"),
        ("XF-2026-000902", "accept", "outside"),
        ("XF-2026-000901", "complete_review", "after_revocation"),
        ("XF-2026-000901", "approve", "wrong_role"),
    ]
    assert report["compliant"] is False
    assert report["counts"]["after_revocation"] == 1 and report["counts"]["outside"] == 2
    revoked = report["actions"][5]
    assert (revoked["delegation_id"], revoked["in_force_id"], revoked["in_force_version"]) == (
        CODE,
        CODE,
        2,
    )
    assert "revoked" in revoked["message"]

    as_csv = await caseflow("audit", "compliance", *period, "--format", "csv", *url)
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert [(r["case_number"], r["use"]) for r in rows] == [(c, u) for c, _, u in found]

    table = await caseflow("audit", "compliance", *period, *url)
    assert table.exit_code == 0, table.output
    assert "after_revocation" in table.output and "wrong_role" in table.output
    assert "some actions were not covered" in table.output

    # The timeline names the same event and shows the reading of personal data.
    timeline = await caseflow("audit", "case", "XF-2026-000901", "--json", *url)
    assert timeline.exit_code == 0, timeline.output
    data: dict[str, Any] = json.loads(timeline.output)
    events = data["events"]
    assert [e["delegation"]["valid"] for e in events] == [True, True, True, False, False, None]
    assert events[3]["delegation"]["check"]["use"] == "after_revocation"
    assert events[5]["event_type"] == "PersonalDataViewed"
    assert events[5]["details"]["reason"] == "核对身份 / checking the identity"
    assert events[5]["actor"] == {
        "user": "zhao.head",
        "role": "station_head",
        "station": "xuefeng_station",
    }
    assert ID_NUMBER not in timeline.output
    assert data["state"]["status"] == "approved"

    # Twice the same: nothing in the output depends on when it is run.
    again = await caseflow("audit", "case", "XF-2026-000901", "--json", *url)
    assert again.output == timeline.output
    from_env = await caseflow(
        "audit", "case", "XF-2026-000901", "--json", env={"CASEFLOW_DATABASE_URL": db_url}
    )
    assert from_env.output == timeline.output
    shown = await caseflow("audit", "case", data["case_id"], *url)
    assert shown.exit_code == 0, shown.output
    assert "PersonalDataViewed" in shown.output and "NOT VALID" in shown.output


async def test_a_user_s_mistakes_are_named_without_a_traceback(log: EventLog, db_url: str) -> None:
    await bad_station(log)
    url = ("--database-url", db_url)
    unknown = await caseflow("audit", "case", "XF-2026-999999", *url)
    assert unknown.exit_code == 1
    assert "no case XF-2026-999999" in unknown.output
    assert "Traceback" not in unknown.output
    garbled = await caseflow("audit", "case", "not-a-case", *url)
    assert garbled.exit_code == 1 and "neither a case number" in garbled.output
    naive = await caseflow("audit", "case", "XF-2026-000901", "--as-of", "2026-11-18 12:00", *url)
    assert naive.exit_code == 2 and "time zone" in naive.output
    alone = await caseflow("audit", "case", "XF-2026-000901", "--basis", "recorded", *url)
    assert alone.exit_code == 2 and "--basis goes with --as-of" in alone.output
    station = await caseflow(
        "audit", "compliance", "--station", "nowhere", "--from", "2026-11-01", "--to", "2026-11-30",
        *url,
    )  # fmt: skip
    assert station.exit_code == 2 and "'nowhere' is not a station" in station.output
    department = await caseflow(
        "audit", "compliance", "--station", "hc_hrss", "--from", "2026-11-01", "--to", "2026-11-30",
        *url,
    )  # fmt: skip
    assert department.exit_code == 2 and "'hc_hrss' is not a station" in department.output
    backwards = await caseflow(
        "audit", "compliance", "--station", "xuefeng_station", "--from", "2026-11-30", "--to",
        "2026-11-01", *url,
    )  # fmt: skip
    assert backwards.exit_code == 2 and "before --from" in backwards.output
    missing = await caseflow(
        "audit", "case", "XF-2026-000901", "--database-url", "sqlite+aiosqlite:////nonexistent/x.db"
    )
    assert missing.exit_code == 1 and "no database at /nonexistent/x.db" in missing.output
