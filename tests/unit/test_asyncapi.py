"""The AsyncAPI document covers every event the workflows and the code record (with its
schema version), the department subjects, the dead letters of every consumer and every
subject a consumer reads, with schemas from the models the code validates with."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Sequence
from itertools import product
from pathlib import Path
from typing import Any

import pytest

from services.notify.planning import planning_consumer
from services.processing.app import create_app as create_processing
from services.processing.dept import ANSWERS_CONSUMER, ANSWERS_FILTER
from services.processing.settings import ProcessingSettings
from shared.adapters.bus import asyncapi
from shared.adapters.bus.asyncapi import document
from shared.domain.delegation import PAYLOADS as DELEGATION_PAYLOADS
from shared.domain.events import StoredEvent
from shared.domain.upcasting import CURRENT_VERSIONS, current_version
from shared.domain.workflow.definitions import load_workflows
from shared.domain.workflow.engine import _TASK_EVENTS
from shared.web import runtime

ROOT = Path(__file__).resolve().parents[2]
EVENT_TYPE = re.compile(r"^[A-Z][A-Za-z0-9]{1,63}$")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def _python_files() -> Iterator[Path]:
    for folder in ("shared", "services"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def _recorded_in_code() -> dict[str, set[str]]:
    """Event types the code records outside the workflow tables → where, found by reading
    the source: ``event_type="X"`` arguments, ``event_type = "X"`` assignments, and
    string arguments given to functions whose first parameter is ``event_type``."""
    trees = {path: ast.parse(path.read_text("utf-8")) for path in _python_files()}
    makers: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                params = [a.arg for a in node.args.args if a.arg not in ("self", "cls")]
                if params[:1] == ["event_type"]:
                    makers.add(node.name)
    found: dict[str, set[str]] = {}

    def note(value: ast.expr | None, path: Path) -> None:
        text = value.value if isinstance(value, ast.Constant) else None
        if isinstance(text, str) and EVENT_TYPE.match(text):
            found.setdefault(text, set()).add(str(path.relative_to(ROOT)))

    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg == "event_type":
                        note(keyword.value, path)
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in makers and node.args:
                    note(node.args[0], path)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id == "event_type":
                        note(node.value, path)
                    elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        for element, value in zip(target.elts, node.value.elts, strict=False):
                            if isinstance(element, ast.Name) and element.id == "event_type":
                                note(value, path)
    return found


def recordable_event_types() -> dict[str, str]:
    """Every event type a workflow definition or the code can record → where it comes from."""
    found: dict[str, str] = {}
    for workflow in load_workflows():
        for step in (workflow.start, *workflow.transitions):
            found.setdefault(step.event, f"{workflow.name}.v{workflow.version}.yaml")
    for event_type in _TASK_EVENTS.values():  # claim, release, call back: every workflow
        found.setdefault(event_type, "shared/domain/workflow/engine.py")
    for event_type in DELEGATION_PAYLOADS:
        found.setdefault(event_type, "shared/domain/delegation.py")
    for event_type, paths in _recorded_in_code().items():
        found.setdefault(event_type, ", ".join(sorted(paths)))
    return found


def test_the_source_scan_finds_what_the_code_records() -> None:
    # The scan itself must work, or the next test would prove nothing.
    code = _recorded_in_code()
    assert "services/processing/deadlines.py" in code["ClockWarningRaised"]
    assert "services/notify/outbox.py" in code["NotificationFailed"]
    assert "services/intake/api.py" in code["VisitorReceived"]
    assert "shared/domain/delegation.py" in code["DelegationRevoked"]
    assert "shared/domain/workflow/engine.py" in code["ActionRefused"]
    assert "services/processing/dept.py" in code["PersonalDataDisclosed"]


def test_every_recordable_event_has_a_message_with_its_schema_version(
    doc: dict[str, Any],
) -> None:
    messages = doc["components"]["messages"]
    schemas = doc["components"]["schemas"]
    recordable = recordable_event_types()
    missing = {t: where for t, where in recordable.items() if t not in messages}
    assert not missing, f"event types without a message in the AsyncAPI document: {missing}"
    for event_type in recordable:
        message = messages[event_type]
        version = current_version(event_type)
        assert message["x-schema-version"] == version, event_type
        assert message["x-current-schema-version"] == version
        extra = message["payload"]["allOf"][1]["properties"]
        assert extra["event_type"] == {"const": event_type}
        assert extra["schema_version"] == {"const": version}
        assert extra["payload"]["$ref"].removeprefix("#/components/schemas/") in schemas
        channel = doc["channels"][event_type]
        assert channel["address"] == f"caseflow.events.{{case_kind}}.{event_type}"
        assert {"$ref": f"#/components/messages/{event_type}"} in channel["messages"].values()
    for workflow in load_workflows():
        for step in (workflow.start, *workflow.transitions):
            kinds = doc["channels"][step.event]["parameters"]["case_kind"]["enum"]
            assert workflow.case_kind in kinds


def test_case_received_v2_and_its_stored_v1_are_both_documented(doc: dict[str, Any]) -> None:
    assert CURRENT_VERSIONS["CaseReceived"] == 2
    messages = doc["components"]["messages"]
    schemas = doc["components"]["schemas"]
    assert messages["CaseReceived"]["x-schema-version"] == 2
    assert messages["CaseReceivedV1"]["x-schema-version"] == 1
    assert messages["CaseReceivedV1"]["x-current-schema-version"] == 2
    assert set(doc["channels"]["CaseReceived"]["messages"]) == {"CaseReceived", "CaseReceivedV1"}
    v2 = schemas["CaseReceivedPayload"]["properties"]
    assert v2["language"]["enum"] == ["zh-CN", "en"] and "通知语言" in v2["language"]["description"]
    assert v2["channels"]["items"]["enum"] == ["sms", "email"]
    assert "language" not in schemas["CaseReceivedV1Payload"]["properties"]
    # Every message has a version, the non-event ones too.
    assert all("x-schema-version" in message for message in messages.values())


def test_notices_sent_and_given_up_on_are_documented(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    failed = schemas["NotificationFailedPayload"]
    assert {"channel", "delivery_id", "attempts", "reason"} <= set(failed["required"])
    sent = schemas["NotificationSentPayload"]
    assert {"channel", "recipient", "about_event_type"} <= set(sent["required"])
    kinds = set(doc["channels"]["NotificationFailed"]["parameters"]["case_kind"]["enum"])
    assert {"application", "mediation", "reception"} <= kinds
    notify_letters = doc["channels"]["dlq-notify"]["description"]
    assert "NotificationFailed" in notify_letters and "/dead-letters" in notify_letters


def _real_consumers() -> dict[str, tuple[str, ...]]:
    """Each consumer the services run → the subjects it reads, from the code itself."""
    settings = ProcessingSettings(
        database_url="sqlite+aiosqlite:///unused.db", jwt_public_key_file=None
    )
    processing = create_processing(settings).state.runtime.specs
    found = {spec.name: spec.subjects for spec in processing}

    class NoNotices:
        def plan(self, event: StoredEvent, history: Sequence[StoredEvent]) -> list[Any]:
            return []

    notify = planning_consumer(NoNotices())
    found[notify.name] = notify.subjects
    found[ANSWERS_CONSUMER] = (ANSWERS_FILTER,)
    return found


def _concrete_subjects(doc: dict[str, Any]) -> set[str]:
    """Every documented channel address with its parameters filled in from their enums (or,
    for open ones such as a credential's name, their examples)."""
    subjects: set[str] = set()
    for channel in doc["channels"].values():
        address: str = channel["address"]
        names = re.findall(r"\{(\w+)\}", address)
        params = channel.get("parameters", {})
        choices = [params[name].get("enum") or params[name]["examples"] for name in names]
        for values in product(*choices):
            subject = address
            for name, value in zip(names, values, strict=True):
                subject = subject.replace(f"{{{name}}}", value)
            subjects.add(subject)
    return subjects


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` one or more at the end."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or token not in ("*", have[i]):
            return False
    return len(want) == len(have)


def test_subject_matching() -> None:
    assert _matches("caseflow.events.>", "caseflow.events.application.CaseReceived")
    assert _matches("caseflow.dept.*.answers.*", "caseflow.dept.hc_forestry.answers.f-sys")
    assert not _matches("caseflow.dept.*.answers.*", "caseflow.dept.hc_forestry.answers")
    assert not _matches("caseflow.dept.*.answers", "caseflow.dept.hc_forestry.requests")
    assert not _matches("caseflow.events.reception.>", "caseflow.events.reception")


def test_every_consumer_and_every_subject_it_reads_is_documented(doc: dict[str, Any]) -> None:
    real = _real_consumers()
    declared = {c.name: c.subjects for c in asyncapi.CONSUMERS}
    assert declared == real, (
        "shared.adapters.bus.asyncapi.CONSUMERS differs from the services' consumers"
    )
    documented = doc["x-caseflow-consumers"]
    subjects = _concrete_subjects(doc)
    for name, patterns in real.items():
        assert documented[name]["subjects"] == list(patterns)
        for pattern in patterns:
            hits = [s for s in subjects if _matches(pattern, s)]
            assert hits, f"{name} reads {pattern}, which no channel of the document carries"
        letters = doc["channels"][f"dlq-{name}"]
        assert letters["address"] == f"caseflow.dlq.{name}"
        assert documented[name]["deadLetters"] == {"$ref": f"#/channels/dlq-{name}"}
    # The core subscription every relay has, too.
    assert runtime.WAKE_SUBJECT in subjects
    # Every event channel reaches a consumer: notify reads them all.
    assert all(_matches("caseflow.events.>", s) for s in subjects if ".events." in s)


def test_departments_and_dead_letters_are_documented(doc: dict[str, Any]) -> None:
    channels = doc["channels"]
    addresses = {c["address"] for c in channels.values()}
    assert "caseflow.dept.{authority}.requests" in addresses
    assert "caseflow.dept.{authority}.answers.{credential}" in addresses
    assert "hc_forestry" in channels["dept-requests"]["parameters"]["authority"]["enum"]
    schemas = doc["components"]["schemas"]
    refused = schemas["ActionRefusedPayload"]
    assert {"action", "reason", "message", "delivered_by"} <= set(refused["properties"])
    # A department's decision over NATS says which credential delivered it; the schema of
    # that field is the model caseflow writes it with.
    for decided in ("CaseApprovedPayload", "CaseRejectedPayload"):
        delivered = schemas[decided]["properties"]["delivered_by"]
        assert delivered["$ref"] == "#/components/schemas/DeliveredBy"
    assert set(schemas["DeliveredBy"]["required"]) == {"channel", "credential"}
    assert "delivered_by" not in schemas["CaseAcceptedPayload"]["properties"]
    answer = doc["components"]["schemas"]["DepartmentAnswer"]
    assert set(answer["required"]) >= {"case_id", "outcome", "officer"}
    request = doc["components"]["schemas"]["DepartmentRequest"]
    assert "answer_subject" in request["required"]
    assert (
        "Nats-Msg-Id" in doc["components"]["messages"]["DepartmentAnswer"]["headers"]["properties"]
    )
    # The bus admits NKEY users only; each kind's subjects come from shared.adapters.bus.access.
    assert doc["servers"]["nats"]["security"] == [{"$ref": "#/components/securitySchemes/nkey"}]
    assert "NKEY" in doc["components"]["securitySchemes"]["nkey"]["description"]
    department = doc["x-caseflow-access"]["department"]
    assert department["publish"]["allow"][-1] == "caseflow.dept.hc_forestry.answers.forestry-system"
    assert department["subscribe"]["allow"] == ["_INBOX.forestry-system.>"]
    assert doc["x-caseflow-access"]["relay"]["publish"]["allow"] == ["caseflow.events.>"]
    for kind in ("service", "operator", "department"):
        assert "caseflow.events.>" in doc["x-caseflow-access"][kind]["publish"]["deny"]
    letter = doc["components"]["messages"]["DeadLetter"]["headers"]
    assert set(letter["required"]) == {
        "Caseflow-Dead-Letter-Reason",
        "Caseflow-Original-Subject",
        "Caseflow-Consumer",
    }
    assert any(
        "newer than this code knows" in r
        for r in letter["properties"]["Caseflow-Dead-Letter-Reason"]["examples"]
    )


def test_operations_point_at_channels_and_messages_that_exist(doc: dict[str, Any]) -> None:
    def resolve(ref: str) -> Any:
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(doc)
    assert len(refs) > 100
    for ref in refs:
        resolve(ref)  # a dangling reference raises KeyError
    for operation in doc["operations"].values():
        assert operation["action"] in ("send", "receive")


def test_events_on_the_bus_are_documented_as_a_masked_view(doc: dict[str, Any]) -> None:
    envelope = doc["components"]["schemas"]["Envelope"]
    assert envelope["properties"]["personal_data"]["const"] == "masked"
    assert "personal_data" in envelope["required"]
    assert (
        "does not verify against this masked copy" in envelope["properties"]["hash"]["description"]
    )
    assert "the log is the record" in doc["info"]["description"]
    headers = doc["components"]["messages"]["CaseReceived"]["headers"]
    assert headers["properties"]["Caseflow-Personal-Data"]["const"] == "masked"
    assert "Caseflow-Personal-Data" in headers["required"]
    reasons = doc["components"]["messages"]["DeadLetter"]["headers"]["properties"][
        "Caseflow-Dead-Letter-Reason"
    ]["examples"]
    assert any(r.startswith("not in the log") for r in reasons)


def test_a_disclosure_to_a_department_is_a_documented_fact(doc: dict[str, Any]) -> None:
    message = doc["components"]["messages"]["PersonalDataDisclosed"]
    assert "the status is unchanged, nobody is told" in message["summary"]
    payload = doc["components"]["schemas"]["PersonalDataDisclosedPayload"]
    assert {"to", "fields", "channel", "reason", "request_id"} <= set(payload["required"])
    assert doc["channels"]["PersonalDataDisclosed"]["parameters"]["case_kind"]["enum"] == [
        "application"
    ]
    request = doc["components"]["messages"]["DepartmentRequest"]["description"]
    assert "PersonalDataDisclosed" in request
