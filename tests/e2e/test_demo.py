"""``caseflow demo`` loads station activity through the real APIs, and only once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import sqlalchemy as sa

from shared.db import create_engine
from shared.eventlog.schema import events
from tests.services import running_stack, session_keys, staff_headers

STAFF_EVENTS = sa.select(sa.func.count()).where(
    events.c.actor_role != "system", events.c.case_kind != "delegation"
)


async def _count(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(STAFF_EVENTS)).scalar_one())
    finally:
        await engine.dispose()


def test_demo_loads_every_kind_of_case_once(sqlite_url: str, nats_url: str, tmp_path: Path) -> None:
    with running_stack(sqlite_url, nats_url, tmp_path) as stack:
        tokens = tmp_path / "demo-tokens.json"
        command = [
            str(Path(sys.executable).parent / "caseflow"),
            "demo",
            "--intake-url",
            stack["intake"].base_url,
            "--processing-url",
            stack["processing"].base_url,
            "--key-dir",
            str(session_keys().directory),
            "--days",
            "12",
            "--tokens",
            str(tokens),
        ]
        first = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "What the demo did" in first.stdout
        after_first = asyncio.run(_count(sqlite_url))

        roster = json.loads(tokens.read_text("utf-8"))
        assert roster["li.clerk"]["role"] == "window_clerk"
        cases = httpx.get(
            f"{stack['processing'].base_url}/cases",
            params={"limit": 500},
            headers=staff_headers("gao.auditor", "auditor", "hc_justice"),
            timeout=10,
        ).json()["cases"]
        kinds = Counter(c["case_kind"] for c in cases)
        for kind in ("application", "mediation", "legal_publicity", "assistance"):
            assert kinds[kind] >= 1, kinds
        assert kinds["reception"] >= kinds["application"] - 2  # a visit per application
        statuses = {c["status"] for c in cases if c["case_kind"] == "application"}
        assert {"closed", "accepted", "in_review"} & statuses, statuses
        assert {c["station"] for c in cases} >= {"xuefeng_station", "longmen_station"}

        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert asyncio.run(_count(sqlite_url)) == after_first  # the same seed adds nothing
