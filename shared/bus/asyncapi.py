"""The AsyncAPI 3.0 document of caseflow's subjects, generated from the payload schemas.

Generated from the same pydantic models that the handlers validate with — the action
bodies of the workflow definitions, the instruments' payloads and ``shared.messages`` —
so the document can't drift from the code.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, Field

from shared.bus.streams import DEPT_SUBJECTS, dlq_subject
from shared.delegation import PAYLOADS as DELEGATION_PAYLOADS
from shared.messages import PAYLOADS, DepartmentAnswer, DepartmentRequest
from shared.workflow.definitions import load_workflows
from shared.workflow.payloads import body_for

CONSUMERS = (
    "processing-projection",
    "processing-dept",
    "processing-dept-answers",
    "notify",
)
ALL_KINDS = (
    "application",
    "mediation",
    "legal_publicity",
    "assistance",
    "police_assistance",
)


@functools.cache
def event_payloads() -> dict[str, tuple[type[BaseModel], tuple[str, ...]]]:
    """Every event type → its payload model and the case kinds it occurs in."""
    found: dict[str, tuple[type[BaseModel], set[str]]] = {}

    def add(event_type: str, model: type[BaseModel], kind: str) -> None:
        model = PAYLOADS.get(event_type, model)
        found.setdefault(event_type, (model, set()))[1].add(kind)

    for workflow in load_workflows():
        for step in (workflow.start, *workflow.transitions):
            add(step.event, body_for(step.action), workflow.case_kind)
    for event_type in ("ActionRefused", "TaskClaimed", "TaskReleased", "CallbackCompleted"):
        for kind in ALL_KINDS:
            add(event_type, body_for("complete_callback"), kind)
    for event_type in ("ClockWarningRaised", "ForwardOverdue", "NotificationSent"):
        add(event_type, PAYLOADS[event_type], "application")
    add("VisitorReceived", PAYLOADS["VisitorReceived"], "reception")
    for event_type, model in DELEGATION_PAYLOADS.items():
        add(event_type, model, "delegation")
    return {k: (m, tuple(sorted(kinds))) for k, (m, kinds) in sorted(found.items())}


class ActorSchema(BaseModel):
    """Who acted."""

    user: str
    role: str
    station: str | None


class EnvelopeSchema(BaseModel):
    """Every event on ``caseflow.events.>``: the envelope around the payload."""

    position: int = Field(description="global position in the log")
    event_id: str = Field(description="also the Nats-Msg-Id header")
    case_id: str
    case_kind: str
    version: int = Field(description="per-case version, from 1")
    event_type: str
    schema_version: int
    occurred_at: str = Field(description="ISO 8601: when it happened")
    recorded_at: str = Field(description="ISO 8601: when the log recorded it")
    actor: ActorSchema
    authority: str | None = Field(description="authority acted for")
    delegation_id: str | None
    delegation_version: int | None
    correlation_id: str | None
    causation_id: str | None
    payload: dict[str, Any]
    prev_hash: str | None = Field(description="hash of the case's previous event")
    hash: str = Field(description="SHA-256 over the canonical encoding")


def document() -> dict[str, Any]:
    """The AsyncAPI document as a JSON-ready dict."""
    envelope = EnvelopeSchema.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = {"Envelope": envelope}
    schemas.update(envelope.pop("$defs", {}))
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for event_type, (model, kinds) in event_payloads().items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[f"{event_type}Payload"] = schema
        messages[event_type] = {
            "name": event_type,
            "title": event_type,
            "summary": (model.__doc__ or "").strip(),
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "Nats-Msg-Id": {"type": "string", "description": "the event id"},
                    "Caseflow-Correlation-Id": {"type": "string"},
                },
            },
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/Envelope"},
                    {
                        "type": "object",
                        "properties": {
                            "event_type": {"const": event_type},
                            "payload": {"$ref": f"#/components/schemas/{event_type}Payload"},
                        },
                    },
                ]
            },
        }
        channel = event_type
        channels[channel] = {
            "address": f"caseflow.events.{{case_kind}}.{event_type}",
            "parameters": {"case_kind": {"enum": list(kinds), "description": "the case's kind"}},
            "messages": {event_type: {"$ref": f"#/components/messages/{event_type}"}},
        }
        operations[f"receive{event_type}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"{event_type} events, published by the relay in log order",
        }
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "summary": "A message a consumer could not handle, with the reason in its headers",
        "headers": {
            "type": "object",
            "properties": {
                "Caseflow-Dead-Letter-Reason": {"type": "string"},
                "Caseflow-Original-Subject": {"type": "string"},
                "Caseflow-Consumer": {"type": "string"},
            },
        },
        "payload": {"description": "the original message body, unchanged"},
    }
    for name, model, action, summary in (
        ("DepartmentRequest", DepartmentRequest, "requests", "forwarded cases, to answer"),
        ("DepartmentAnswer", DepartmentAnswer, "answers", "departments' decisions"),
    ):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
        messages[name] = {
            "name": name,
            "summary": (model.__doc__ or "").strip(),
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
        channels[f"dept-{action}"] = {
            "address": f"caseflow.dept.{{authority}}.{action}",
            "parameters": {"authority": {"description": "the authority's code, e.g. hc_forestry"}},
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"{'receive' if action == 'requests' else 'send'}{name}"] = {
            "action": "receive" if action == "requests" else "send",
            "channel": {"$ref": f"#/channels/dept-{action}"},
            "summary": f"{summary} (stream CASEFLOW_DEPT on {DEPT_SUBJECTS})",
        }
    for consumer in CONSUMERS:
        channels[f"dlq-{consumer}"] = {
            "address": dlq_subject(consumer),
            "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "caseflow events",
            "version": "0.1.0",
            "description": "Every committed event of the caseflow log, published on NATS "
            "JetStream (stream CASEFLOW_EVENTS); requests to departments and their answers "
            "(stream CASEFLOW_DEPT); and the dead letters (stream CASEFLOW_DLQ).",
        },
        "defaultContentType": "application/json",
        "servers": {"nats": {"host": "localhost:4222", "protocol": "nats"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
