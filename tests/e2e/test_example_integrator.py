"""The example department system (``examples/department_system``) answers forwarded cases
over the real stack: intake and processing as processes, a nats-server of the test's
own, the log on SQLite and on PostgreSQL; the example runs as a standalone program.

A logging permit (林木采伐许可证) goes through the window, review and forwarding to the
city forestry bureau (hc_forestry) over HTTP; the department system, started after the
forward, finds the request on its durable consumer, approves it in its officer's name,
and the clerk delivers the decision. A second forestry case that lacks a material the
department requires is rejected with the reason. Notify is not needed and not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import yaml
from nats.js import api

from shared import devservers
from shared.catalogue import load_catalogue
from tests.services import (
    CLERK,
    REVIEWER,
    VALID_APPLICANT,
    ServiceProcess,
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
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A nats-server of this test's own: the department's durable consumer and the
    streams see only this test's requests."""
    with devservers.nats_server(tmp_path / "jetstream", devservers.free_port()) as url:
        yield url


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
                [sys.executable, "-m", "shared.cli", "serve", name],
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
        response = httpx.post(f"{self.intake}/cases", json=dict(body), headers=headers, timeout=10)
        assert response.status_code == 201, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def act(
        self, case_id: str, action: str, who: Mapping[str, str], body: Mapping[str, Any] = {}
    ) -> dict[str, Any]:
        response = httpx.post(
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


def run_example(
    nats_url: str, log_path: Path, cwd: Path, durable: str = "dept-hc_forestry"
) -> subprocess.Popen[bytes]:
    """The department system as its own program: ``python -I`` from another folder, so it
    can import nothing of caseflow's (only the standard library and nats-py)."""
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-I",
                str(EXAMPLE),
                "--nats-url",
                nats_url,
                "--authority",
                "hc_forestry",
                "--approve-if-materials",
                "forest_right_certificate,logging_design",
                "--officer",
                OFFICER,
                "--decision-prefix",
                "韩林采字",
                "--durable",
                durable,
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
    stack: dict[str, ServiceProcess], nats_url: str, tmp_path: Path
) -> None:
    desk = Desk(stack)
    logging_permit = desk.forward("logging_permit", language="en")
    # Intake records the notice language: CaseReceived schema version 2.
    received = wait_for_event(desk.intake, logging_permit, "CaseForwarded")[0]
    assert received["event_type"] == "CaseReceived"
    assert received["schema_version"] == 2 and received["payload"]["language"] == "en"

    log_path = tmp_path / "department.log"
    example = run_example(nats_url, log_path, cwd=tmp_path)
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
    served = httpx.get(f"{desk.processing}/asyncapi.json", timeout=5).json()
    assert served["components"]["messages"]["CaseReceived"]["x-schema-version"] == 2
    assert served["channels"]["dept-answers"]["address"] == "caseflow.dept.{authority}.answers"
    assert "processing-dept-answers" in served["x-caseflow-consumers"]
    as_yaml = httpx.get(f"{desk.intake}/asyncapi.yaml", timeout=5)
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == served

    # Every request it answered was acked, and nothing is left for it.
    consumer, answers, letters = asyncio.run(bus_state(nats_url))
    assert consumer.num_ack_pending == 0 and consumer.num_pending == 0, consumer
    assert answers == 2 and letters == 0

    # A second department system reading the same requests from the start answers both
    # again, with the same answer ids: JetStream keeps one answer each, and caseflow
    # records no second decision (nor a dead letter).
    replay = run_example(nats_url, log_path, cwd=tmp_path, durable="dept-hc_forestry-replay")
    wait_for_log(log_path, "answered case", after=logs, count=2)
    logs = stop_example(replay, log_path)
    consumer, answers, letters = asyncio.run(bus_state(nats_url))
    assert answers == 2 and letters == 0

    # The clerk delivers both decisions.
    for case_id, outcome in ((logging_permit, "approved"), (compensation, "rejected")):
        delivered = desk.act(case_id, "deliver", CLERK, {"method": "in_person"})
        assert delivered["status"] == "delivered" and delivered["outcome"] == outcome
    for case_id, decided in ((logging_permit, "CaseApproved"), (compensation, "CaseRejected")):
        history = [e["event_type"] for e in wait_for_event(desk.intake, case_id, "CaseDelivered")]
        assert history.count(decided) == 1, history


async def bus_state(nats_url: str) -> tuple[api.ConsumerInfo, int, int]:
    """The department's consumer, how many answers the stream holds, and how many dead
    letters of caseflow's answer consumer."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        consumer = await js.consumer_info("CASEFLOW_DEPT", "dept-hc_forestry")
        dept = await js.stream_info("CASEFLOW_DEPT", subjects_filter="caseflow.dept.>")
        dlq = await js.stream_info("CASEFLOW_DLQ", subjects_filter="caseflow.dlq.>")
        answers = (dept.state.subjects or {}).get("caseflow.dept.hc_forestry.answers", 0)
        letters = (dlq.state.subjects or {}).get("caseflow.dlq.processing-dept-answers", 0)
        return consumer, answers, letters
    finally:
        await nc.close()


def wait_for_log(path: Path, text: str, after: str, count: int, timeout: float = 15.0) -> None:
    """Until ``text`` appears ``count`` times in the log past what it held before."""
    deadline = time.monotonic() + timeout
    while path.read_text("utf-8")[len(after) :].count(text) < count:
        assert time.monotonic() < deadline, path.read_text("utf-8")
        time.sleep(0.05)
