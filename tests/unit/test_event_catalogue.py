"""The one catalogue of event types that the AsyncAPI document, notify and the fold read."""

from __future__ import annotations

from shared.adapters.bus import asyncapi
from shared.domain.event_catalogue import event_types, workflow_kinds
from shared.domain.messages import CaseReceived
from shared.domain.workflow.definitions import load_workflows


def test_every_transition_of_every_workflow_is_an_event_type() -> None:
    types = event_types()
    for workflow in load_workflows():
        for step in (workflow.start, *workflow.transitions):
            assert workflow.case_kind in types[step.event].kinds, (workflow.name, step.event)


def test_versions_and_models_are_the_current_ones() -> None:
    received = event_types()["CaseReceived"]
    assert received.version == 2 and received.model is CaseReceived
    assert event_types()["CaseAccepted"].version == 1
    # events the code records outside the transition tables are there too
    assert set(event_types()["NotificationSent"].kinds) >= {*workflow_kinds(), "reception"}
    assert "attempt" in event_types()["ActionRefused"].kinds


def test_the_asyncapi_document_describes_exactly_the_catalogue() -> None:
    document = asyncapi.document()
    current = {
        message["name"]: message["x-schema-version"]
        for message in document["components"]["messages"].values()
        if message.get("x-schema-version") == message.get("x-current-schema-version")
    }
    events = {name: version for name, version in current.items() if name in event_types()}
    assert events == {t.name: t.version for t in event_types().values()}
    # what else the document describes is not an event of the log
    assert set(current) - set(events) == {
        "DeadLetter",
        "DepartmentAnswer",
        "DepartmentRequest",
        "RedriveRequest",
        "RelayWake",
    }
