"""The AsyncAPI 3.0 document of caseflow's subjects, generated from the payload schemas.

Generated from the same pydantic models that the handlers validate with, so the document
can't drift from the code.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from shared.bus.streams import dlq_subject, event_subject
from shared.messages import PAYLOADS

CASE_KIND = "application"
CONSUMERS = ("processing", "notify")


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
    for event_type, model in PAYLOADS.items():
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
            "address": event_subject(CASE_KIND, event_type),
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
            "JetStream (stream CASEFLOW_EVENTS), and the dead letters.",
        },
        "defaultContentType": "application/json",
        "servers": {"nats": {"host": "localhost:4222", "protocol": "nats"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
