"""The log's verification status for auditors: ``GET /audit/verification``.

Processing verifies the whole log — every event's hash, every case's links, every signed
checkpoint — shortly after it starts and then every ``audit_verify_interval_seconds``,
and keeps the latest report. The work runs in a thread of its own, with its own event
loop and database connection, so the service's requests don't wait behind it. It is the
same verification as ``caseflow audit verify`` (one process), against the public half of
the audit key this service signs checkpoints with; an auditor who trusts no service runs
that command on an export instead."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from fastapi import APIRouter, Request

from shared.adapters.auth import Role
from shared.adapters.db import create_engine
from shared.application.audit.database import verify_database
from shared.application.audit.keys import keys_by_id, load_signing_key
from shared.application.audit.verify import Report
from shared.web.auth import StaffDep, require_role

log = structlog.get_logger()

FIRST_AFTER_SECONDS = 5.0
RETRY_SECONDS = 60.0
SHOWN_FINDINGS = 20

router = APIRouter(tags=["audit"])


@dataclass(frozen=True)
class Verified:
    finished_at: datetime
    seconds: float
    report: Report


class LogVerification:
    """The latest verification of the log, renewed in the background."""

    def __init__(self, database_url: str, key_file: Path, interval: float) -> None:
        self.database_url = database_url
        self.key_file = key_file
        self.interval = interval
        self.latest: Verified | None = None
        self.failed: str | None = None

    def _verify(self) -> Verified:
        """One whole verification, in the calling (worker) thread."""
        keys = keys_by_id([load_signing_key(self.key_file).public_key()])

        async def run() -> Report:
            engine = create_engine(self.database_url)
            try:
                return await verify_database(engine, keys, split_at=0)
            finally:
                await engine.dispose()

        started = datetime.now(UTC)
        report = asyncio.run(run())
        finished = datetime.now(UTC)
        return Verified(finished, (finished - started).total_seconds(), report)

    async def run(self, stop: asyncio.Event) -> None:
        wait = FIRST_AFTER_SECONDS
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
            if stop.is_set():
                return
            wait = self.interval
            try:
                done = await asyncio.to_thread(self._verify)
            except Exception as err:  # the database away, the key unreadable: try again later
                self.failed = f"{type(err).__name__}: {err}"[:300]
                log.warning("log verification failed; retrying later", error=self.failed)
                wait = min(self.interval, RETRY_SECONDS)
                continue
            self.latest, self.failed = done, None
            if not done.report.ok:
                log.error("log verification found problems", findings=len(done.report.findings))

    def status(self) -> dict[str, Any]:
        if self.latest is None:
            return {"status": "not_yet", "error": self.failed}
        report = self.latest.report
        return {
            "status": "verified" if report.ok else "problems",
            "verified_at": self.latest.finished_at.isoformat(),
            "seconds": round(self.latest.seconds, 3),
            "events": report.events,
            "cases": report.cases,
            "checkpoints": report.checkpoints,
            "valid_checkpoints": report.valid_checkpoints,
            "covered_upto": report.covered_upto,
            "uncovered_events": report.uncovered_events,
            "findings_count": len(report.findings),
            "findings": [f.as_dict() for f in report.findings[:SHOWN_FINDINGS]],
            "error": self.failed,
        }


@router.get("/audit/verification", summary="The log's latest verification (auditors)")
async def verification(request: Request, staff: StaffDep) -> dict[str, Any]:
    """When the whole log was last verified here and what was found: every event's hash,
    every case's links, every signed checkpoint. ``not_yet`` until the first verification
    after start-up has finished; ``problems`` lists the first findings."""
    require_role(staff, Role.auditor)
    checker: LogVerification | None = request.app.state.log_verification
    if checker is None:
        return {"status": "not_configured", "error": "this service signs no checkpoints"}
    return checker.status()
