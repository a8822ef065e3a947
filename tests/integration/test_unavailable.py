"""Unavailable means 503: while the database can't be reached a request answers 503
problem+json with ``Retry-After`` (nothing saved) and the log gets one line, no traceback;
the service recovers by itself once the database is back. NATS being down makes ``/readyz``
say so, and the window keeps working (events wait in the log).

PostgreSQL is a dedicated embedded server of this test's own, stopped and started with
``pg_ctl`` (not the session's shared one); SQLite is a file made unreadable (a directory in
its place: the tests run as root, which permission bits don't stop); nats-server is this
test's own, stopped and started."""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from shared.adapters.db import migrate
from shared.cli.supervisor import publish_seed_delegations
from shared.devtools import servers as devservers
from shared.devtools.waiting import wait_until
from shared.web.http import PROBLEM_JSON, RETRY_AFTER_SECONDS
from tests.conftest import _admin
from tests.own_postgres import OwnPostgres
from tests.services import (
    CLERK,
    NOT_LISTENING,
    VALID_APPLICATION,
    ServiceProcess,
    seed_delegations,
    service_env,
    session_bus,
    session_keys,
    staff_headers,
    start_process,
    wait_ready,
)

DEADLINE = 60.0


def apply(http: httpx.Client, key: str) -> httpx.Response:
    return http.post(
        "/cases", json=VALID_APPLICATION, headers={**CLERK, "Idempotency-Key": key}, timeout=30
    )


def assert_unavailable(response: httpx.Response, dependency: str = "database") -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert response.json()["unavailable"] == dependency
    assert "nothing was saved" in response.json()["detail"]


def intake_process(database_url: str, nats_url: str, log_dir: Path) -> ServiceProcess:
    port = devservers.free_port()
    # No relay: its own retries would log while the database is down; this test is about
    # what requests log.
    env = service_env("intake", database_url, nats_url, port, relay="false")
    return start_process(
        "intake", [sys.executable, "-m", "shared.cli.main", "serve", "intake"], env, port, log_dir
    )


@pytest.mark.timeout(300)  # a service process: readiness alone may take 120 s
def test_postgres_stopped_is_a_503_and_the_service_recovers_by_itself(
    own_postgres: OwnPostgres, nats_url: str, tmp_path: Path
) -> None:
    server = make_url(own_postgres.server_url)
    database_url = server.set(database="caseflow").render_as_string(hide_password=False)
    asyncio.run(_admin(own_postgres.server_url, "CREATE DATABASE caseflow"))
    migrate(database_url)
    seed_delegations(database_url)
    intake = intake_process(database_url, nats_url, tmp_path)
    try:
        wait_ready(intake)
        with httpx.Client(base_url=intake.base_url) as http:
            assert apply(http, "outage-before-1").status_code == 201
            own_postgres.stop()
            failed = 0
            for attempt in range(3):
                assert_unavailable(apply(http, f"outage-during-{attempt}"))
                failed += 1
            case = http.get(f"/cases/{uuid.uuid4()}", headers=CLERK, timeout=30)
            assert_unavailable(case)
            failed += 1
            ready = http.get("/readyz", timeout=30)
            assert ready.status_code == 503 and "database" in ready.json()["detail"]
            assert ready.headers["retry-after"] == str(RETRY_AFTER_SECONDS)

            own_postgres.start()

            def recovered() -> httpx.Response | None:
                nonlocal failed
                answer = apply(http, "outage-after-1")
                if answer.status_code == 503:
                    failed += 1
                    return None
                return answer

            answer = wait_until(
                recovered, what="a case taken after PostgreSQL is back", timeout=DEADLINE
            )
            assert answer.status_code == 201, answer.text
            assert http.get("/readyz", timeout=30).status_code == 200
        logs = intake.logs()
        assert "Traceback" not in logs, logs[-3000:]
        assert logs.count("dependency unavailable: answered 503") == failed
    finally:
        intake.terminate()


async def test_an_unreadable_sqlite_file_is_a_503_until_it_is_back(
    sqlite_url: str, tmp_path: Path
) -> None:
    database = Path(make_url(sqlite_url).database or "")
    await publish_seed_delegations(sqlite_url)
    app = create_intake(
        IntakeSettings(
            database_url=sqlite_url,
            jwt_public_key_file=session_keys().public_path,
            nats_url=NOT_LISTENING,
        )
    )
    moved = tmp_path / "moved.db"
    shutil.move(database, moved)
    database.mkdir()  # what was a database file can't be opened as one now
    transport = httpx.ASGITransport(app=app)  # an app failure would be raised here
    body: dict[str, Any] = VALID_APPLICATION
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
            with capture_logs() as logs:
                for attempt in range(2):
                    response = await http.post(
                        "/cases",
                        json=body,
                        headers={**CLERK, "Idempotency-Key": f"sqlite-gone-{attempt}"},
                    )
                    assert_unavailable(response)
            logs = [e for e in logs if e["event"] != "request"]  # besides the access log
            assert [e["event"] for e in logs] == ["dependency unavailable: answered 503"] * 2
            assert all("exc_info" not in e for e in logs)
            assert "unable to open database file" in logs[0]["error"]

            database.rmdir()
            shutil.move(moved, database)
            response = await http.post(
                "/cases", json=body, headers={**CLERK, "Idempotency-Key": "sqlite-back"}
            )
            assert response.status_code == 201, response.text
    finally:
        await app.state.runtime.engine.dispose()


@pytest.mark.timeout(300)  # a service process: readiness alone may take 120 s
def test_nats_stopped_makes_readyz_say_so_and_the_window_keeps_working(
    sqlite_url: str, tmp_path: Path
) -> None:
    port = devservers.free_port()
    nats = devservers.start_nats(port, tmp_path / "js", config=session_bus().config_path)
    nats_url = f"nats://127.0.0.1:{port}"
    seed_delegations(sqlite_url)
    intake = intake_process(sqlite_url, nats_url, tmp_path)
    try:
        wait_ready(intake)
        devservers.stop_process(nats)
        with httpx.Client(base_url=intake.base_url) as http:

            def noticed() -> httpx.Response | None:
                ready = http.get("/readyz", timeout=30)
                return None if ready.status_code == 200 else ready

            ready = wait_until(noticed, what="/readyz to notice NATS is gone", timeout=DEADLINE)
            assert ready.status_code == 503
            assert ready.json()["checks"] == {"database": "ok", "nats": "unreachable"}
            assert ready.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
            # The case is in the log: a relay publishes it once NATS is back.
            assert apply(http, "nats-down-1").status_code == 201

            nats = devservers.start_nats(port, tmp_path / "js", config=session_bus().config_path)
            wait_until(
                lambda: http.get("/readyz", timeout=30).status_code == 200,
                what="intake to reconnect to NATS",
                timeout=DEADLINE,
            )
        assert "Traceback" not in intake.logs()
    finally:
        intake.terminate()
        devservers.stop_process(nats)


@pytest.mark.timeout(300)
def test_a_dated_act_sent_while_postgres_is_down_is_a_503_and_lands_once_after(
    own_postgres: OwnPostgres, nats_url: str, tmp_path: Path
) -> None:
    """A paper record's review (补录), sent while PostgreSQL is stopped: 503, nothing saved;
    sent again with the same key once it is back: recorded once, at the moment it claimed."""
    server = make_url(own_postgres.server_url)
    database_url = server.set(database="caseflow").render_as_string(hide_password=False)
    asyncio.run(_admin(own_postgres.server_url, "CREATE DATABASE caseflow"))
    migrate(database_url)
    seed_delegations(database_url)
    port = devservers.free_port()
    env = service_env("processing", database_url, nats_url, port, relay="false")
    command = [sys.executable, "-m", "shared.cli.main", "serve", "processing"]
    processing = start_process("processing", command, env, port, tmp_path)
    intake = create_intake(
        IntakeSettings(
            database_url=database_url,
            jwt_public_key_file=session_keys().public_path,
            nats_url=NOT_LISTENING,
        )
    )
    reviewer = staff_headers(
        "wang.reviewer", "reviewer", "xuefeng_station", permissions=frozenset({"backfill"})
    )
    paper = {**VALID_APPLICATION, "occurred_at": "2021-12-06T09:00:00+08:00"}

    async def hand_in() -> str:
        transport = httpx.ASGITransport(app=intake)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as window:
            answer = await window.post(
                "/cases", json=paper, headers={**CLERK, "Idempotency-Key": "paper-0001"}
            )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["case_id"])

    try:
        wait_ready(processing)
        case_id = asyncio.run(hand_in())
        review = {"occurred_at": "2021-12-06T10:00:00+08:00"}
        headers = {**reviewer, "Idempotency-Key": "paper-1-review"}
        path = f"/cases/{case_id}/actions/start_review"
        with httpx.Client(base_url=processing.base_url, timeout=30) as http:
            own_postgres.stop()
            assert_unavailable(http.post(path, json=review, headers=headers))
            own_postgres.start()

            def reviewed() -> httpx.Response | None:
                answer = http.post(path, json=review, headers=headers)
                return None if answer.status_code == 503 else answer

            answer = wait_until(reviewed, what="the review once PostgreSQL is back", timeout=60)
            assert answer.status_code == 200, answer.text
            again = http.post(path, json=review, headers=headers)
            assert again.status_code == 200 and again.json()["version"] == answer.json()["version"]
            events = http.get(f"/cases/{case_id}/events", headers=CLERK).json()["events"]
        started = [e for e in events if e["event_type"] == "ReviewStarted"]
        assert len(started) == 1
        assert started[0]["occurred_at"].startswith("2021-12-06T02:00:00")
        assert "Traceback" not in processing.logs()
    finally:
        processing.terminate()
