"""The compliance report's period is days in China on both backends: an action at 02:00
China time on the first day (18:00 UTC the day before) is in it, one at 23:30 China time
the day before is not, and the last day counts until midnight in China."""

from __future__ import annotations

import json

from shared import delegations_store as store
from shared.eventlog import EventLog
from tests.audit_helpers import OFFICER, CaseScript, china, instrument, received_and_accepted
from tests.integration.test_audit_log import caseflow, write

CODE = "hrss-audit-2026"


async def test_the_period_starts_at_midnight_in_china(log: EventLog, db_url: str) -> None:
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
        "audit", "compliance", "--station", "xuefeng_station", "--from", "2026-11-01",
        "--to", "2026-11-30", "--format", "json", "--database-url", db_url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    numbers = [a["case_number"] for a in report["actions"]]
    assert numbers == ["XF-2026-000501"] * 2 + ["XF-2026-000503"] * 2
