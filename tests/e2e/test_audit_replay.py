"""Issue 5's done-when: from an export alone, an auditor's machine verifies the log,
replays it, and prints the same timelines and reports as the live system.

A few days of station life (``shared.cli.demo``) go through the real services on one backend;
the live read models are kept by processing's projection runner and the checkpoints signed
by ``caseflow audit checkpoint``. The auditor gets the exported folder and the public key
only, verifies the bundle, replays it into an empty database of the *other* backend, and
every case's timeline, the compliance and statistics reports and every read-model row
equal the live ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from shared.adapters.db import create_engine
from shared.adapters.tables.statistics import delegation_usage, station_statistics
from shared.adapters.tables.workflow import case_index, tasks
from shared.application.audit.keys import ensure_audit_key
from shared.cli.demo import Station, plan, run_demo, settle
from shared.cli.main import app
from shared.devtools.waiting import wait_until
from shared.domain.workcalendar import CHINA_TZ
from tests.conftest import fresh_postgres_db, fresh_sqlite_db
from tests.e2e.conftest import E2E_BACKENDS
from tests.services import ServiceProcess, running_stack, session_keys

CASEFLOW = str(Path(sys.executable).parent / "caseflow")
READ_MODELS = (case_index, tasks, station_statistics, delegation_usage)
STATION = "xuefeng_station"


def caseflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The auditor's command line, as a process."""
    return subprocess.run(
        [CASEFLOW, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def cli_json(*args: str, database_url: str) -> Any:
    """``caseflow …`` in process (many calls), its JSON output."""
    result = CliRunner().invoke(app, [*args, "--database-url", database_url])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def rows(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every read model's rows, sorted (JSON columns as canonical text)."""

    async def read() -> dict[str, list[tuple[Any, ...]]]:
        engine = create_engine(database_url)
        try:
            found: dict[str, list[tuple[Any, ...]]] = {}
            async with engine.connect() as conn:
                for table in READ_MODELS:
                    result = await conn.execute(sa.select(table))
                    found[table.name] = sorted(
                        (tuple(_plain(v) for v in row) for row in result), key=repr
                    )
            return found
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _plain(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if hasattr(value, "isoformat") and getattr(value, "tzinfo", 1) is None:
        return value.isoformat()  # SQLite hands back naive UTC times
    if hasattr(value, "astimezone"):
        return value.astimezone().replace(tzinfo=None).isoformat()
    return value


def wait_until_quiet(database_url: str, timeout: float = 90.0) -> None:
    """Until the log has stopped growing (notices sent, timers done) and every projection's
    checkpoint has reached its head (the live runner)."""
    seen: list[int] = []

    def quiet() -> bool:
        status = cli_json("projections", "status", "--json", database_url=database_url)
        seen.append(sum(p["events_applied"] for p in status))
        caught_up = all(p["lag"] == 0 for p in status)
        return caught_up and len(seen) >= 4 and len(set(seen[-4:])) == 1

    wait_until(
        quiet,
        what="the log to stop growing and every projection to reach its head",
        timeout=timeout,
        interval=0.5,
        detail=lambda: cli_json("projections", "status", "--json", database_url=database_url),
    )


@pytest.fixture(params=E2E_BACKENDS)
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(the live database, the auditor's empty database of the other backend)."""
    with fresh_postgres_db(request.getfixturevalue("postgres_server")) as postgres:
        if request.param == "sqlite":
            (tmp_path / "live").mkdir()
            yield fresh_sqlite_db(tmp_path / "live"), postgres
        else:
            yield postgres, f"sqlite+aiosqlite:///{tmp_path / 'auditor.db'}"


def test_an_export_verifies_and_replays_to_the_same_timelines_and_reports(
    backends: tuple[str, str], nats_url: str, tmp_path: Path
) -> None:
    live, auditor_db = backends
    keys, _ = ensure_audit_key(tmp_path / "keys" / "audit-ed25519.pem")
    env = {"CASEFLOW_DATABASE_URL": live, "CASEFLOW_AUDIT_KEY_FILE": str(keys.private_path)}
    stack: dict[str, ServiceProcess]
    with running_stack(live, nats_url, tmp_path, audit_key_file=str(keys.private_path)) as stack:
        station = Station(
            stack["intake"].base_url, stack["processing"].base_url, session_keys().directory, 5
        )
        run_demo(station, plan(5, 3, 0.5, datetime.now(CHINA_TZ).date()))
        settle(station)
        # No notice is recorded after this: a retried send could otherwise land after the
        # export and the live log would no longer be what was exported.
        assert stack["notify"].terminate() in (0, -signal.SIGTERM)
        wait_until_quiet(live)
        assert caseflow("audit", "checkpoint", env=env).returncode == 0
        bundle = tmp_path / "bundle"
        exported = caseflow("audit", "export", "--out", str(bundle), env=env)
        assert exported.returncode == 0, exported.stderr
        public = tmp_path / "auditor-public.pem"
        public.write_text(caseflow("audit", "public-key", env=env).stdout)

    # The services are stopped: the live database is what was exported. The auditor's
    # machine: the folder and the public key, nothing else.
    checked = caseflow("audit", "verify", "--bundle", str(bundle), "--public-key", str(public))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    replayed = caseflow("audit", "replay", str(bundle), "--database-url", auditor_db)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    verified = caseflow(
        "audit", "verify", "--database-url", auditor_db, "--public-key", str(public)
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr

    manifest = json.loads((bundle / "manifest.json").read_text())
    live_check = cli_json(
        "audit", "verify", "--json", "--public-key", str(public), database_url=live
    )
    assert manifest["events"]["count"] == live_check["events"], (manifest, live_check)
    live_rows = rows(live)
    assert all(live_rows[t.name] for t in READ_MODELS), {k: len(v) for k, v in live_rows.items()}
    numbers = sorted(r[1] for r in live_rows["case_index"] if r[1])
    assert len(numbers) >= 5, numbers
    for number in numbers:
        assert cli_json("audit", "case", number, "--json", database_url=auditor_db) == cli_json(
            "audit", "case", number, "--json", database_url=live
        ), number
    today = datetime.now(CHINA_TZ).date()  # the demo's days are days at the station
    period = ["--station", STATION, "--from", str(today - timedelta(days=60)), "--to", str(today)]
    reports = {}
    for report in ("compliance", "statistics"):
        args = ["audit", report, *period, "--format", "json"]
        reports[report] = cli_json(*args, database_url=live)
        assert cli_json(*args, database_url=auditor_db) == reports[report], report
    assert len(reports["compliance"]["actions"]) > 10, reports["compliance"]
    assert reports["statistics"]["matters_handled"] > 3, reports["statistics"]
    assert reports["statistics"]["people_received"] > 0, reports["statistics"]
    assert rows(auditor_db) == live_rows
