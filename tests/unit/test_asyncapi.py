"""The AsyncAPI document covers every event the workflows record, the department
subjects and the dead letters, with schemas from the models the code validates with."""

from __future__ import annotations

from shared.bus.asyncapi import document
from shared.workflow.definitions import load_workflows


def test_every_workflow_event_has_a_channel_and_a_schema() -> None:
    doc = document()
    channels = doc["channels"]
    for workflow in load_workflows():
        for step in (workflow.start, *workflow.transitions):
            channel = channels[step.event]
            assert channel["address"] == f"caseflow.events.{{case_kind}}.{step.event}"
            assert workflow.case_kind in channel["parameters"]["case_kind"]["enum"]
            assert f"{step.event}Payload" in doc["components"]["schemas"]


def test_refusals_departments_and_dead_letters_are_documented() -> None:
    doc = document()
    addresses = {c["address"] for c in doc["channels"].values()}
    assert "caseflow.dept.{authority}.requests" in addresses
    assert "caseflow.dept.{authority}.answers" in addresses
    assert "caseflow.dlq.processing-dept-answers" in addresses
    refused = doc["components"]["schemas"]["ActionRefusedPayload"]
    assert {"action", "reason", "message"} <= set(refused["properties"])
    answer = doc["components"]["schemas"]["DepartmentAnswer"]
    assert set(answer["required"]) >= {"case_id", "outcome", "officer"}
