"""The example department system (``examples/department_system``) answers forwarded cases
over the real stack: intake and processing as processes, a nats-server of the test's
own, the log on SQLite and on PostgreSQL; the example runs as a standalone program.

A logging permit (林木采伐许可证) goes through the window, review and forwarding to the
city forestry bureau (hc_forestry) over HTTP; the department system, started after the
forward with the credential file ``caseflow nats credentials`` issues, finds the request
on the authority's consumer, approves it in its officer's name, and the clerk delivers
the decision, which names the credential that delivered it. A second forestry case that
lacks a material the department requires is rejected with the reason. Notify is not
needed and not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from nats.js import api

from shared.devtools import httpcalls
from shared.devtools import servers as devservers
from shared.domain.catalogue import load_catalogue
from tests.services import (
    CLERK,
    REVIEWER,
    VALID_APPLICANT,
    BusServer,
    ServiceProcess,
    bus_server,
    connect_as,
    connect_department,
    issue_department,
    seed_delegations,
    service_env,
    start_process,
    wait_for_event,
    wait_ready,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "department_system" / "department_system.py"
CATALOGUE = load_catalogue()
OFFICER = "liu.forestry"


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[BusServer]:
    """A nats-server of this test's own: the department's consumer and the streams see only
    this test's requests."""
    with bus_server(tmp_path) as server:
        yield server


@pytest.fixture
def nats_url(bus: BusServer) -> str:
    return bus.url


@pytest.fixture
def stack(db_url: str, nats_url: str, tmp_path: Path) -> Iterator[dict[str, ServiceProcess]]:
    """Intake and processing as processes (``caseflow serve``), ready."""
    seed_delegations(db_url)
    services: dict[str, ServiceProcess] = {}
    try:
        for name in ("intake", "processing"):
            port = devservers.free_port()
            services[name] = start_process(
                name,
                [sys.executable, "-m", "shared.cli.main", "serve", name],
                service_env(name, db_url, nats_url, port),
                port,
                tmp_path,
            )
        for service in services.values():
            wait_ready(service)
        yield services
    finally:
        for service in services.values():
            with contextlib.suppress(Exception):
                service.terminate()


class Desk:
    """Station staff over HTTP."""

    def __init__(self, stack: Mapping[str, ServiceProcess]) -> None:
        self.intake = stack["intake"].base_url
        self.processing = stack["processing"].base_url

    def submit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        headers = {**CLERK, "Idempotency-Key": uuid.uuid4().hex}
        response = httpcalls.post(
            f"{self.intake}/cases", json=dict(body), headers=headers, timeout=10
        )
        assert response.status_code == 201, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def act(
        self, case_id: str, action: str, who: Mapping[str, str], body: Mapping[str, Any] = {}
    ) -> dict[str, Any]:
        response = httpcalls.post(
            f"{self.processing}/cases/{case_id}/actions/{action}",
            json=dict(body),
            headers={**who, "Idempotency-Key": uuid.uuid4().hex},
            timeout=10,
        )
        assert response.status_code == 200, (action, response.text)
        answer: dict[str, Any] = response.json()
        return answer

    def forward(self, item_code: str, language: str) -> str:
        """Through the window, review and forwarding; the case id."""
        item = CATALOGUE.get(item_code)
        received = self.submit(
            {
                "item_code": item.code,
                "applicant": VALID_APPLICANT,
                "materials": [{"code": m.code, "original_checked": True} for m in item.materials],
                "language": language,
            }
        )
        assert received["status"] == "accepted", received
        case_id = str(received["case_id"])
        self.act(case_id, "start_review", REVIEWER)
        self.act(
            case_id, "complete_review", REVIEWER, {"recommendation": "approve", "opinion": "ok"}
        )
        forwarded = self.act(case_id, "forward", REVIEWER)
        assert forwarded["status"] == "forwarded" and forwarded["forward_to"] == "hc_forestry"
        return case_id


def run_example(credentials: Path, log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """The department system as its own program: ``python -I`` from another folder, so it
    can import nothing of caseflow's (only the standard library, nats-py and nkeys)."""
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-I",
                str(EXAMPLE),
                "--credentials",
                str(credentials),
                "--approve-if-materials",
                "forest_right_certificate,logging_design",
                "--officer",
                f"{OFFICER}@hc_forestry",
                "--decision-prefix",
                "韩林采字",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )


def stop_example(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    """SIGTERM: it finishes what it holds, drains and exits 0."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    logs = log_path.read_text("utf-8")
    assert code == 0, logs
    assert "stopped" in logs.splitlines()[-1], logs
    return logs


def test_the_example_department_answers_forwarded_cases(
    stack: dict[str, ServiceProcess], bus: BusServer, tmp_path: Path
) -> None:
    file = issue_department(bus, "hc_forestry")
    credentials = tmp_path / "forestry.json"
    credentials.write_text(json.dumps(file), encoding="utf-8")
    desk = Desk(stack)
    logging_permit = desk.forward("logging_permit", language="en")
    # Intake records the notice language: CaseReceived schema version 2.
    received = wait_for_event(desk.intake, logging_permit, "CaseForwarded")[0]
    assert received["event_type"] == "CaseReceived"
    assert received["schema_version"] == 2 and received["payload"]["language"] == "en"

    log_path = tmp_path / "department.log"
    example = run_example(credentials, log_path, cwd=tmp_path)
    try:
        # Forwarded while the department system runs (the first one was forwarded before).
        compensation = desk.forward("ecological_forest_compensation", language="zh-CN")

        approved = wait_for_event(desk.intake, logging_permit, "CaseApproved", timeout=30)
        decision = next(e for e in approved if e["event_type"] == "CaseApproved")
        assert decision["actor"] == {
            "user": OFFICER,
            "role": "department_officer",
            "station": "hc_forestry",
        }
        assert decision["authority"] == "hc_forestry"
        # The server vouches for the credential: only it may publish on its answer subject.
        assert decision["payload"]["delivered_by"] == {
            "channel": "nats",
            "credential": file["name"],
        }
        number = next(e for e in approved if e["event_type"] == "CaseAccepted")["payload"][
            "case_number"
        ]
        assert decision["payload"]["decision_number"] == f"韩林采字-{number}"

        rejected = wait_for_event(desk.intake, compensation, "CaseRejected", timeout=30)
        refusal = next(e for e in rejected if e["event_type"] == "CaseRejected")
        assert refusal["actor"]["user"] == OFFICER
        assert refusal["payload"]["reasons"] == ["缺少材料 / missing material: logging_design"]
    finally:
        logs = stop_example(example, log_path)
    assert logs.count("answered case") == 2, logs
    # Cases by id and number only: the applicant's personal data never reaches its log.
    for personal in VALID_APPLICANT.values():
        assert personal not in logs

    # The services document all of it (processing's consumers, the department subjects).
    served = httpcalls.get(f"{desk.processing}/asyncapi.json", timeout=5).json()
    assert served["components"]["messages"]["CaseReceived"]["x-schema-version"] == 2
    assert (
        served["channels"]["dept-answers"]["address"]
        == "caseflow.dept.{authority}.answers.{credential}"
    )
    assert "processing-dept-answers" in served["x-caseflow-consumers"]
    as_yaml = httpcalls.get(f"{desk.intake}/asyncapi.yaml", timeout=5)
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == served

    # Every request it answered was acked, and nothing is left for it.
    consumer, answers, letters = asyncio.run(bus_state(bus.url, file["answer_subject"]))
    assert consumer.num_ack_pending == 0 and consumer.num_pending == 0, consumer
    assert answers == 2 and letters == 0

    # The same answer sent again (a crash between the answer's publish and the request's
    # ack brings the request back, and the same answer id with it): JetStream keeps one
    # answer, and caseflow records no second decision (nor a dead letter).
    forwarded = next(e for e in approved if e["event_type"] == "CaseForwarded")
    asyncio.run(answer_again(file, forwarded["event_id"], logging_permit))
    time.sleep(1.0)
    consumer, answers, letters = asyncio.run(bus_state(bus.url, file["answer_subject"]))
    assert answers == 2 and letters == 0

    # The clerk delivers both decisions.
    for case_id, outcome in ((logging_permit, "approved"), (compensation, "rejected")):
        delivered = desk.act(case_id, "deliver", CLERK, {"method": "in_person"})
        assert delivered["status"] == "delivered" and delivered["outcome"] == outcome
    for case_id, decided in ((logging_permit, "CaseApproved"), (compensation, "CaseRejected")):
        history = [e["event_type"] for e in wait_for_event(desk.intake, case_id, "CaseDelivered")]
        assert history.count(decided) == 1, history


async def bus_state(nats_url: str, answer_subject: str) -> tuple[api.ConsumerInfo, int, int]:
    """The authority's consumer, how many answers the stream holds, and how many dead
    letters of caseflow's answer consumer (read as the operator)."""
    nc = await connect_as(nats_url, "operator")
    try:
        js = nc.jetstream()
        consumer = await js.consumer_info("CASEFLOW_DEPT", "dept_hc_forestry")
        dept = await js.stream_info("CASEFLOW_DEPT", subjects_filter="caseflow.dept.>")
        dlq = await js.stream_info("CASEFLOW_DLQ", subjects_filter="caseflow.dlq.>")
        answers = (dept.state.subjects or {}).get(answer_subject, 0)
        letters = (dlq.state.subjects or {}).get("caseflow.dlq.processing-dept-answers", 0)
        return consumer, answers, letters
    finally:
        await nc.close()


async def answer_again(file: dict[str, Any], request_id: str, case_id: str) -> None:
    """Publish the example's answer to one request once more, with the same answer id."""
    nc = await connect_department(file)
    try:
        answer = {"case_id": case_id, "outcome": "approve", "officer": OFFICER}
        await nc.jetstream().publish(
            file["answer_subject"],
            json.dumps(answer).encode(),
            headers={"Nats-Msg-Id": f"hc_forestry:answer:{request_id}"},
        )
    finally:
        await nc.close()
