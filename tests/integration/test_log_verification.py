"""The log's verification status for auditors (issue 15): processing verifies the whole
log in the background and ``GET /audit/verification`` tells the latest outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import sqlalchemy as sa

from services.processing.verification import LogVerification
from shared.adapters.eventlog import EventLog
from shared.adapters.tables.eventlog import events
from shared.application.audit.writer import write_all
from tests.integration.audit_support import Superuser, audit_key, fill
from tests.services import build_app, staff_headers


async def test_a_clean_log_is_verified_and_a_changed_event_is_found(
    log: EventLog, db_url: str, tmp_path: Path
) -> None:
    key = audit_key(tmp_path)
    cases = await fill(log)
    await write_all(log.engine, key, max_events=7)
    checker = LogVerification(db_url, tmp_path / "keys" / "audit-ed25519.pem", interval=3600)
    assert checker.status()["status"] == "not_yet"
    stop = asyncio.Event()
    running = asyncio.create_task(checker.run(stop))
    try:
        async with asyncio.timeout(60):
            while checker.latest is None:
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await running
    status = checker.status()
    assert status["status"] == "verified", status
    assert (status["events"], status["cases"], status["checkpoints"]) == (24, 6, 4)
    assert status["findings"] == [] and status["uncovered_events"] == 0

    target = (await log.read_case(cases[2]))[1]
    await Superuser(log.engine).run(
        sa.update(events)
        .where(events.c.position == target.position)
        .values(payload={**target.payload, "step": 99})
    )
    checker.latest = await asyncio.to_thread(checker._verify)
    status = checker.status()
    assert status["status"] == "problems" and status["findings_count"] == 1
    (finding,) = status["findings"]
    assert finding["kind"] == "modified" and finding["case_number"] == "XF-2026-000002"


async def test_only_auditors_read_the_status(db_url: str, tmp_path: Path) -> None:
    app = build_app("processing", db_url, audit_key_file=tmp_path / "audit.pem")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://processing") as client:
        auditor = staff_headers("gao.auditor", "auditor", "hc_audit")
        answer = await client.get("/audit/verification", headers=auditor)
        assert answer.status_code == 200 and answer.json()["status"] == "not_yet"
        reviewer = staff_headers("wang.reviewer", "reviewer", "xuefeng_station")
        answer = await client.get("/audit/verification", headers=reviewer)
        assert answer.status_code == 403
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert (await client.get("/audit/verification")).status_code == 401
