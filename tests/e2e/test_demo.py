"""``caseflow demo`` against ``caseflow up``: every kind of case in its expected states,
through the real APIs, and only once; instruments published through the API if missing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from shared.adapters.delegations import load_seed_delegations
from shared.cli.demo import SHOWCASE, Slot, Station, application, ensure_delegations
from shared.devtools import httpcalls
from shared.devtools import servers as devservers
from shared.domain.catalogue import load_catalogue
from tests.services import (
    CASEFLOW,
    SANDBOX,
    SERVICES,
    caseflow_up,
    service_env,
    session_keys,
    start_process,
    stop_caseflow_up,
    wait_ready,
)

STAFF_EVENTS = "SELECT count(*) FROM events WHERE actor_role != 'system'"


def _staff_events(data: Path) -> int:
    with sqlite3.connect(data / "caseflow.db") as db:
        return int(db.execute(STAFF_EVENTS).fetchone()[0])


def _events(processing: str, case_id: str, token: str) -> list[dict[str, Any]]:
    answer = httpcalls.get(
        f"{processing}/cases/{case_id}/events",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


def test_demo_loads_every_kind_of_case_in_its_states_once(tmp_path: Path) -> None:
    data = tmp_path / "var"
    ports = {n: devservers.free_port() for n in (*SERVICES, "console", "nats", *SANDBOX)}
    proc = caseflow_up(data, ports, tmp_path / "up.log")
    intake, processing = (f"http://127.0.0.1:{ports[n]}" for n in ("intake", "processing"))
    tokens = tmp_path / "demo-tokens.json"
    command = [
        CASEFLOW, "demo", "--intake-url", intake, "--processing-url", processing,
        "--key-dir", str(data / "keys"), "--tokens", str(tokens),
        "--days", "3", "--scale", "small",
    ]  # fmt: skip
    try:
        first = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "Cases by kind and status" in first.stdout
        staff_events = _staff_events(data)

        roster = json.loads(tokens.read_text("utf-8"))
        token = {user: entry["token"] for user, entry in roster.items()}
        assert roster["li.clerk"] | {"token": ""} == {
            "role": "window_clerk", "org": "xuefeng_station", "name": "李娜", "token": ""
        }  # fmt: skip
        listed = httpcalls.get(
            f"{processing}/cases",
            params={"limit": 500},
            headers={"Authorization": f"Bearer {token['gao.auditor']}"},
            timeout=10,
        ).json()["cases"]
        kinds = Counter(c["case_kind"] for c in listed)
        for kind in ("application", "reception", "mediation", "legal_publicity", "assistance"):
            assert kinds[kind] >= 1, kinds
        assert kinds["police_assistance"] >= 1, kinds
        assert kinds["application"] >= len(SHOWCASE), kinds
        assert kinds["reception"] >= kinds["application"], kinds  # a visit per application

        # The showcase's paths, whatever the day: each ends where it should.
        statuses = Counter(c["status"] for c in listed if c["case_kind"] == "application")
        for status in (
            "closed", "not_accepted", "withdrawn", "suspended", "correction_requested",
            "forwarded", "in_review", "accepted", "approved",
        ):  # fmt: skip
            assert statuses[status] >= 1, (status, statuses)
        assert statuses["closed"] >= 5, statuses

        # A forwarded case was decided by the department it went to, in its own name …
        decided = {}
        for case in listed:
            if (
                case["case_kind"] == "application"
                and case["forward_to"]
                and (case["status"] == "closed")
            ):
                for event in _events(processing, case["case_id"], token["gao.auditor"]):
                    if event["event_type"] in ("CaseApproved", "CaseRejected"):
                        decided[case["item_code"]] = event
        assert decided["logging_permit"]["actor"]["user"] == "officer.hc_forestry"
        assert decided["logging_permit"]["authority"] == "hc_forestry"
        # … or by the town, under the civil affairs bureau's delegation.
        rejected = decided["minimum_living_allowance"]
        assert rejected["event_type"] == "CaseRejected"
        assert rejected["actor"]["station"] == "banqiao_town"
        assert rejected["authority"] == "hc_civil_affairs"
        assert rejected["delegation_id"] == "civil-affairs-banqiao-2021"

        # Poor ratings: one call-back done, one waiting on the station head's worklist.
        worklist = httpcalls.get(
            f"{processing}/worklist",
            headers={"Authorization": f"Bearer {token['zhao.head']}"},
            timeout=10,
        ).json()["tasks"]
        assert "call_back" in {t["task"] for t in worklist}, worklist

        # Stations are kept apart: Longmen's cases exist, Xuefeng's clerk doesn't see them.
        assert {c["station"] for c in listed} == {"xuefeng_station", "longmen_station"}
        mine = httpcalls.get(
            f"{processing}/cases",
            params={"limit": 500},
            headers={"Authorization": f"Bearer {token['li.clerk']}"},
            timeout=10,
        ).json()["cases"]
        assert mine and {c["station"] for c in mine} == {"xuefeng_station"}

        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already there" in again.stdout
        assert _staff_events(data) == staff_events  # the same seed adds nothing
    finally:
        left = stop_caseflow_up(proc)
    assert left == [], f"left behind: {left}"


def test_demo_publishes_missing_delegations_through_the_api(
    sqlite_url: str, nats_url: str, tmp_path: Path
) -> None:
    """A deployment whose log has no instruments yet: the demo publishes them as an
    officer of each delegating body, and its cases are then handled under them."""
    services = {}
    try:
        for name in ("intake", "processing"):
            port = devservers.free_port()
            services[name] = start_process(
                name,
                [sys.executable, "-m", "shared.cli.main", "serve", name],
                service_env(name, sqlite_url, nats_url, port),
                port,
                tmp_path,
            )
        for service in services.values():
            wait_ready(service)
        station = Station(
            services["intake"].base_url,
            services["processing"].base_url,
            session_keys().directory,
            seed=7,
        )
        assert station.get("/delegations", "gao.auditor")["delegations"] == []
        instruments = load_seed_delegations()
        assert ensure_delegations(station) == len(instruments)
        assert ensure_delegations(station) == 0
        for instrument in instruments:
            stored = station.get(f"/delegations/{instrument.code}", "gao.auditor")
            assert stored["instrument"] == instrument.model_dump(mode="json")
            assert stored["history"][0]["actor"]["user"] == f"officer.{instrument.delegator}"

        slot = Slot("application", date.today() - timedelta(days=2), 0, seed=7)
        application(station, slot, load_catalogue(), SHOWCASE[0])  # pension, to closed
        (case_id,) = station.tally.versions
        events = _events(station.processing, case_id, station.tokens["gao.auditor"])
        assert events[-1]["event_type"] == "CaseClosed"
        assert events[-1]["delegation_id"] == "hrss-xuefeng-2021"
        assert station.tally.problems == []
    finally:
        for service in services.values():
            service.terminate()
