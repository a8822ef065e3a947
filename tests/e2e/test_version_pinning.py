"""Version pinning over the real stack (service processes, nats-server; the database of
``CASEFLOW_TEST_E2E_BACKENDS``).

A case pins its catalogue item version and that version's workflow at intake. The test
runs the stack on a copy of the reference data, takes version-1 cases partway, then does
what an operator does to publish version 2 — the workflow's status, a new item version
pinning it, ``caseflow catalogue lock`` — and restarts intake and processing on the new
data. New cases follow version 2 (the head signs the review off before deciding); the
running cases finish under version 1 (decided straight after review). While version 2
was a draft, it was never used.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.devtools import httpcalls
from shared.devtools.waiting import wait_until
from tests.services import CLERK, HEAD, REVIEWER, VALID_APPLICANT, running_stack

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ITEM = "pension_enrolment"
MATERIALS = ["id_card", "household_register", "application_form"]
REVIEW = {"recommendation": "approve", "opinion": "材料齐全，符合参保条件"}
V2_COMMITTED_DAYS = 3
"""Version 2 of the item also promises a different limit: the item version is pinned too."""


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    """The packaged reference data, copied, with version 2 of the item added as a draft."""
    target = tmp_path / "data"
    shutil.copytree(DATA, target)
    items = target / "catalogue" / "items.yaml"
    text = items.read_text("utf-8")
    v1 = next(i for i in yaml.safe_load(text)["items"] if i["code"] == ITEM and i["version"] == 1)
    # Version 2: the station head signs the review off before deciding (station_item v2).
    v2 = {**v1, "version": 2, "status": "draft", "committed_limit_days": V2_COMMITTED_DAYS}
    v2["workflow_version"] = 2
    entry = yaml.safe_dump([v2], allow_unicode=True, sort_keys=False)
    items.write_text(text + "\n" + "".join(f"  {line}\n" for line in entry.splitlines()), "utf-8")
    workflow = yaml.safe_load((target / "workflows" / "station_item.v2.yaml").read_text("utf-8"))
    assert workflow["status"] == "draft"  # the test starts from a draft version 2
    return target


def publish_version_2(data: Path) -> None:
    """What an operator does: publish workflow and item version 2, then lock the catalogue."""
    for path, marker in (
        (data / "workflows" / "station_item.v2.yaml", "status: draft"),
        (data / "catalogue" / "items.yaml", "    version: 2\n    status: draft"),
    ):
        text = path.read_text("utf-8")
        assert text.count(marker) == 1, path
        path.write_text(text.replace(marker, marker.replace("draft", "published")), "utf-8")
    locked = subprocess.run(
        [sys.executable, "-m", "shared.cli.main", "catalogue", "lock", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert locked.returncode == 0, locked.stderr
    assert locked.stdout.strip() == f"locked: {ITEM}@2"


def submit(intake: str, item_code: str = ITEM, materials: list[str] = MATERIALS) -> dict[str, Any]:
    body = {
        "item_code": item_code,
        "applicant": VALID_APPLICANT,
        "materials": [{"code": code, "original_checked": True} for code in materials],
    }
    headers = {**CLERK, "Idempotency-Key": uuid.uuid4().hex}
    response = httpcalls.post(f"{intake}/cases", json=body, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    assert answer["status"] == "accepted"
    return answer


def act(
    processing: str,
    case: Mapping[str, Any],
    action: str,
    who: Mapping[str, str],
    body: dict[str, Any] | None = None,
    expect: int = 200,
) -> dict[str, Any]:
    response = httpcalls.post(
        f"{processing}/cases/{case['case_id']}/actions/{action}",
        json=body or {},
        headers={**who, "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert response.status_code == expect, f"{action}: {response.text}"
    answer: dict[str, Any] = response.json()
    return answer


def history(base: str, case: Mapping[str, Any]) -> list[dict[str, Any]]:
    response = httpcalls.get(f"{base}/cases/{case['case_id']}/events", headers=CLERK, timeout=5)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def acts(base: str, case: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The case's workflow events (notifications left out: they come when notify gets there)."""
    return [e for e in history(base, case) if not e["event_type"].startswith("Notification")]


def steps(base: str, case: Mapping[str, Any]) -> list[str]:
    return [e["event_type"] for e in acts(base, case)]


def pinned(base: str, case: Mapping[str, Any]) -> tuple[int, int]:
    """(item version, workflow version) as the case's CaseReceived recorded them."""
    received = history(base, case)[0]
    assert received["event_type"] == "CaseReceived"
    payload = received["payload"]
    assert payload["item_code"] == case["item"]["code"]
    assert payload["workflow"]["name"] == "station_item"
    return payload["item_version"], payload["workflow"]["version"]


def head_tasks(processing: str) -> dict[str, str]:
    """The station head's worklist: case id → task."""
    response = httpcalls.get(f"{processing}/worklist", headers=HEAD, timeout=5)
    assert response.status_code == 200, response.text
    return {t["case_id"]: t["task"] for t in response.json()["tasks"]}


def test_running_cases_finish_under_their_version_while_new_ones_follow_version_2(
    db_url: str, nats_url: str, tmp_path: Path, data_copy: Path
) -> None:
    data = {"data_dir": str(data_copy)}
    (tmp_path / "draft").mkdir()
    with running_stack(db_url, nats_url, tmp_path / "draft", **data) as stack:
        intake, processing = stack["intake"].base_url, stack["processing"].base_url
        # Version 2 of the item and of its workflow are drafts: new cases pin version 1.
        accepted = submit(intake)
        in_review = submit(intake)
        reviewed = submit(intake)
        for case in (accepted, in_review, reviewed):
            assert case["item"]["version"] == 1
            assert case["workflow"] == {"name": "station_item", "version": 1}
            assert case["receipt"]["committed_limit_days"] == 1
            assert pinned(intake, case) == (1, 1)
        act(processing, in_review, "start_review", REVIEWER)
        act(processing, reviewed, "start_review", REVIEWER)
        assert act(processing, reviewed, "complete_review", REVIEWER, REVIEW)["status"] == (
            "reviewed"
        )
        # No version-2 step is open on a version-1 case, draft or not.
        act(processing, reviewed, "sign_off", HEAD, expect=409)

    publish_version_2(data_copy)
    (tmp_path / "published").mkdir()
    with running_stack(db_url, nats_url, tmp_path / "published", **data) as stack:
        intake, processing = stack["intake"].base_url, stack["processing"].base_url
        new = submit(intake)
        assert new["item"]["version"] == 2
        assert new["workflow"] == {"name": "station_item", "version": 2}
        assert new["receipt"]["committed_limit_days"] == V2_COMMITTED_DAYS
        assert pinned(intake, new) == (2, 2)
        # An item whose newest published version is still 1 keeps workflow version 1.
        other = submit(intake, "medical_insurance_enrolment", ["id_card", "household_register"])
        assert other["item"]["version"] == 1
        assert other["workflow"] == {"name": "station_item", "version": 1}
        # The running cases still read as version 1, clocks on version 1's limit.
        for case in (accepted, in_review, reviewed):
            view = httpcalls.get(f"{processing}/cases/{case['case_id']}", headers=CLERK, timeout=5)
            assert view.json()["item"]["version"] == 1
            assert view.json()["workflow"]["version"] == 1
            assert view.json()["clock"]["limit"] == 1

        act(processing, accepted, "start_review", REVIEWER)
        act(processing, new, "start_review", REVIEWER)
        for case in (accepted, in_review, new):
            assert act(processing, case, "complete_review", REVIEWER, REVIEW)["status"] == (
                "reviewed"
            )
        # The read model gives each reviewed case its own version's next task.
        expected = {
            accepted["case_id"]: "decide",
            in_review["case_id"]: "decide",
            reviewed["case_id"]: "decide",
            new["case_id"]: "sign_off",
        }
        wait_until(
            lambda: expected.items() <= head_tasks(processing).items(),
            what="the head's worklist to show decide (v1) and sign_off (v2)",
            timeout=20,
        )

        # Version 2: no decision straight after review; nothing is recorded for trying.
        before = acts(processing, new)
        premature = httpcalls.post(
            f"{processing}/cases/{new['case_id']}/actions/approve",
            json={},
            headers={**HEAD, "Idempotency-Key": uuid.uuid4().hex},
            timeout=10,
        )
        assert premature.status_code == 409, premature.text
        assert premature.headers["content-type"] == "application/problem+json"
        assert "sign_off" in premature.json()["detail"]
        assert len(acts(processing, new)) == len(before)
        assert act(processing, new, "sign_off", HEAD)["status"] == "signed_off"
        assert act(processing, new, "approve", HEAD)["status"] == "approved"

        # Version 1: decided straight after review, and sign-off doesn't exist for them.
        for case in (accepted, in_review, reviewed):
            act(processing, case, "sign_off", HEAD, expect=409)
            approved = act(processing, case, "approve", HEAD)
            assert approved["status"] == "approved"
            assert approved["workflow"]["version"] == 1

        for case in (accepted, in_review, reviewed, new):
            act(processing, case, "deliver", CLERK, {"method": "in_person"})
            closed = act(processing, case, "close", CLERK)
            assert closed["status"] == "closed"

        v1 = [
            "CaseReceived",
            "CaseAccepted",
            "ReviewStarted",
            "ReviewCompleted",
            "CaseApproved",
            "CaseDelivered",
            "CaseClosed",
        ]
        for case in (accepted, in_review, reviewed):
            assert steps(intake, case) == v1
            assert pinned(intake, case) == (1, 1)
        v2 = [*v1[:4], "ReviewSignedOff", *v1[4:]]
        assert steps(intake, new) == v2
        assert pinned(intake, new) == (2, 2)
        decision = next(e for e in history(intake, new) if e["event_type"] == "CaseApproved")
        assert decision["payload"]["status_before"] == "signed_off"
        assert decision["actor"]["role"] == "station_head"
        assert decision["authority"] == "hc_hrss" and decision["delegation_version"]
