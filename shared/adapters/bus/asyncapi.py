"""The AsyncAPI 3.0 document of caseflow's subjects, generated from the payload schemas.

Generated from the same pydantic models that the handlers validate with — the action
bodies of the workflow definitions, the instruments' payloads and ``shared.domain.messages`` —
and from the upcasters' current versions (``shared.domain.upcasting``), so the document can't
drift from the code. It describes caseflow as the application: caseflow *sends* events,
department requests and dead letters, and *receives* department answers.

What it covers:

- every event type, per case kind, on ``caseflow.events.<case_kind>.<EventType>``: those
  the workflow definitions record and those the code records outside them (refusals,
  task claims, clock warnings, overdue forwards, notices sent or given up on, visits,
  personal data viewed or disclosed, delegation instruments), each message with its
  ``x-schema-version`` and, where the log still holds older versions, those versions as
  messages of their own. Each is the event's masked view (``personal_data: masked``, the
  ``Caseflow-Personal-Data`` header) carrying the stored row's ``hash``;
- the department subjects ``caseflow.dept.<authority>.requests`` and
  ``.answers.<credential>``, and the consumer per authority its systems read;
- the dead letters ``caseflow.dlq.<consumer>`` of every consumer (:data:`CONSUMERS`),
  with the reason headers, and where notify keeps the deliveries it gave up on;
- the internal wake-up subject the relays listen on;
- that the server takes NKEY-authenticated clients only, and what each kind of user may
  publish and subscribe to (``x-caseflow-access``, from ``shared.adapters.bus.access``).
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.adapters.bus import access
from shared.adapters.bus.durables import CONSUMERS as CONSUMERS  # documented here, defined there
from shared.adapters.bus.headers import (
    CORRELATION_HEADER,
    DLQ_CONSUMER_HEADER,
    DLQ_REASON_HEADER,
    DLQ_SUBJECT_HEADER,
    MSG_ID_HEADER,
    PERSONAL_DATA_HEADER,
)
from shared.adapters.bus.streams import (
    DEPT_STREAM,
    DEPT_SUBJECTS,
    DLQ_STREAM,
    EVENTS_STREAM,
    REDRIVE_STREAM,
    WAKE_SUBJECT,
    dept_durable,
    dlq_subject,
    redrive_subject,
)
from shared.domain.catalogue import load_catalogue
from shared.domain.event_catalogue import event_payloads
from shared.domain.messages import (
    EARLIER_PAYLOADS,
    DeliveredBy,
    DepartmentAnswer,
    DepartmentRequest,
)
from shared.domain.upcasting import current_version
from shared.domain.workflow.definitions import load_workflows


def department_authorities() -> tuple[str, ...]:
    """Authorities that cases are forwarded to (any catalogue version, drafts included)."""
    return tuple(
        sorted({item.forward_to for item in load_catalogue().entries() if item.forward_to})
    )


class ActorSchema(BaseModel):
    """Who acted."""

    user: str
    role: str
    station: str | None


class EnvelopeSchema(BaseModel):
    """Every event on ``caseflow.events.>``: the envelope around the payload, a masked view
    of the event as stored.

    ID numbers, phone numbers and e-mail addresses are masked in the payload
    (``110105********002X``, ``138****5678``, ``w***@example.com``), and
    ``personal_data`` says so. The log is the record and the bus is distribution:
    ``hash`` is the stored row's and does not verify against a masked payload (an
    auditor verifies the log or its export). caseflow's own consumers take each event
    from the log by its ``case_id`` and ``event_id``; a message whose event the log does
    not hold is dead-lettered unhandled."""

    position: int = Field(description="global position in the log")
    event_id: str = Field(description="also the Nats-Msg-Id header")
    case_id: str
    case_kind: str
    version: int = Field(description="per-case version, from 1")
    event_type: str
    schema_version: int = Field(
        description="version of the payload's schema (x-schema-version of the message); "
        "the bus carries events at the version stored, so older versions appear too"
    )
    occurred_at: str = Field(description="ISO 8601: when it happened")
    recorded_at: str = Field(description="ISO 8601: when the log recorded it")
    actor: ActorSchema
    authority: str | None = Field(description="authority acted for")
    delegation_id: str | None
    delegation_version: int | None
    correlation_id: str | None
    causation_id: str | None
    payload: dict[str, Any] = Field(
        description="the payload with ID and phone numbers and e-mail addresses masked"
    )
    prev_hash: str | None = Field(description="hash of the case's previous event")
    hash: str = Field(
        description="SHA-256 over the canonical encoding of the event as stored (the "
        "version and the unmasked payload the log holds): it identifies the stored row "
        "and does not verify against this masked copy"
    )
    personal_data: Literal["masked"] = Field(
        description="a masked view: personal data is masked in the payload (also the "
        f"{PERSONAL_DATA_HEADER} header); the full applicant is read through "
        "GET /cases/{id}/applicant, with a reason, recorded as PersonalDataViewed"
    )


_EVENT_HEADERS = {
    "type": "object",
    "properties": {
        MSG_ID_HEADER: {"type": "string", "description": "the event id (JetStream de-duplicates)"},
        CORRELATION_HEADER: {"type": "string", "description": "the request that caused it"},
        PERSONAL_DATA_HEADER: {
            "const": "masked",
            "description": "the payload is a masked view (ID and phone numbers, e-mail "
            "addresses); hash is the stored row's",
        },
    },
    "required": [MSG_ID_HEADER, PERSONAL_DATA_HEADER],
}

_DEAD_LETTER_REASONS = [
    "not a caseflow event envelope: … (undecodable; dead-lettered at once)",
    "not in the log: case <case_id> has no event <event_id>; the message is not a caseflow "
    "event and was not handled (dead-lettered at once, nothing recorded)",
    "the log's event <event_id> is <EventType> (<case_kind>), published on "
    "caseflow.events.<case_kind>.<EventType>, not on <subject>; the message was not handled "
    "(dead-lettered at once)",
    "<EventType> schema version N is newer than this code knows (version M); upgrade the "
    "consumer, then re-drive the message (dead-lettered at once)",
    "<ExceptionType>: … (the handler itself failed max_deliver times, 5; outages of the "
    "database or NATS are waited out and never counted)",
    "undecodable answer from credential C: … / answer from credential C not taken: … / "
    "answer refused (not_forwarded_to_authority | not_awaiting_answer | "
    "officer_of_another_organisation): … (processing-dept-answers only; a refusal is also "
    "recorded on the case as ActionRefused)",
]


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    return schema


_RECORDED = {
    "action": {"type": "string", "description": "the workflow action that recorded it"},
    "status_before": {"type": "string", "description": "the case's status before"},
    "status_after": {"type": "string", "description": "the case's status after"},
}
"""What the engine adds to every event a workflow step records."""
_OPENED = {
    "case_number": {"type": ["string", "null"], "description": "e.g. XF-2026-000123"},
    "station": {"type": "string", "description": "the station that opened the case"},
    "workflow": {
        "type": "object",
        "description": "the workflow version the case pins",
        "properties": {"name": {"type": "string"}, "version": {"type": "integer"}},
    },
}
"""What every case's first event adds (the item version, for applications, is pinned too)."""
ANSWER_ACTIONS = ("approve", "reject")
"""The actions a department's answer over NATS takes: their events say who delivered it."""
_DELIVERED = {
    "delivered_by": {
        "$ref": "#/components/schemas/DeliveredBy",
        "description": "set by caseflow when a department's answer came over NATS: the "
        "credential that delivered it (absent for decisions taken over HTTP)",
    }
}


def _event_schema(
    model: type[BaseModel],
    schemas: dict[str, Any],
    *,
    recorded: bool,
    opened: bool,
    answered: bool = False,
) -> dict[str, Any]:
    """The stored payload: the model's fields, and what the engine adds to a step's body.

    An event of a workflow step stores the action's body plus the engine's fields (and,
    per action, e.g. the receipt or the forwarding deadline), so the schema stays open.
    """
    schema = _schema(model, schemas)
    schema["additionalProperties"] = True
    properties = schema.setdefault("properties", {})
    if recorded:
        for name, spec in (*_RECORDED.items(), *(_OPENED.items() if opened else ())):
            properties.setdefault(name, spec)
    if answered:
        properties.update(_DELIVERED)
    if opened:
        schema["description"] = (
            f"{schema.get('description', '')} The case's first event: it also carries what "
            "the case was opened with (for matters, the body of intake's POST "
            "/matters/{kind})."
        ).strip()
    return schema


def _event_message(
    event_type: str,
    version: int,
    model: type[BaseModel],
    schema_name: str,
    *,
    current: int,
) -> dict[str, Any]:
    summary = inspect.cleandoc(model.__doc__ or "")
    if version < current:
        summary += (
            f"\n\nAn earlier schema version still in the log, published at that version; "
            f"caseflow's consumers read it upcast to version {current}."
        )
    elif current > 1:
        summary += (
            f"\n\nEvents stored before version {current} are published at their own "
            f"schema_version ({', '.join(str(v) for v in range(1, current))})."
        )
    return {
        "name": event_type,
        "title": f"{event_type} v{version}",
        "summary": summary,
        "contentType": "application/json",
        "x-schema-version": version,
        "x-current-schema-version": current,
        "headers": _EVENT_HEADERS,
        "payload": {
            "allOf": [
                {"$ref": "#/components/schemas/Envelope"},
                {
                    "type": "object",
                    "properties": {
                        "event_type": {"const": event_type},
                        "schema_version": {"const": version},
                        "payload": {"$ref": f"#/components/schemas/{schema_name}"},
                    },
                },
            ]
        },
    }


def document() -> dict[str, Any]:
    """The AsyncAPI document as a JSON-ready dict."""
    schemas: dict[str, Any] = {}
    schemas["Envelope"] = _schema(EnvelopeSchema, schemas)
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    schemas["DeliveredBy"] = _schema(DeliveredBy, schemas)
    workflows = list(load_workflows())
    opened = {workflow.start.event for workflow in workflows}
    recorded = opened | {event for workflow in workflows for event in workflow.event_types}
    answered = {
        step.event
        for workflow in workflows
        for step in workflow.transitions
        if step.action in ANSWER_ACTIONS and "department_officer" in step.roles
    }
    for event_type, (model, kinds) in event_payloads().items():
        current = current_version(event_type)
        flags = {
            "recorded": event_type in recorded,
            "opened": event_type in opened,
            "answered": event_type in answered,
        }
        schemas[f"{event_type}Payload"] = _event_schema(model, schemas, **flags)
        messages[event_type] = _event_message(
            event_type, current, model, f"{event_type}Payload", current=current
        )
        in_channel = {event_type: {"$ref": f"#/components/messages/{event_type}"}}
        for version in range(1, current):
            earlier = EARLIER_PAYLOADS.get((event_type, version), model)
            key = f"{event_type}V{version}"
            schemas[f"{key}Payload"] = _event_schema(earlier, schemas, **flags)
            messages[key] = _event_message(
                event_type, version, earlier, f"{key}Payload", current=current
            )
            in_channel[key] = {"$ref": f"#/components/messages/{key}"}
        channels[event_type] = {
            "address": f"caseflow.events.{{case_kind}}.{event_type}",
            "title": event_type,
            "description": f"{event_type} events (stream {EVENTS_STREAM})",
            "parameters": {"case_kind": {"enum": list(kinds), "description": "the case's kind"}},
            "messages": in_channel,
        }
        operations[f"publish{event_type}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{event_type}"},
            "summary": f"{event_type} events, published by the relay in log order",
            "messages": [{"$ref": f"#/channels/{event_type}/messages/{k}"} for k in in_channel],
        }
    _departments(channels, messages, operations, schemas)
    _dead_letters(channels, messages, operations)
    channels["relay-wake"] = {
        "address": WAKE_SUBJECT,
        "title": "relay wake-up",
        "description": "Core NATS, no stream: sent after a commit so the leading relay (in "
        "any process) publishes at once instead of at its next poll. Internal.",
        "messages": {"RelayWake": {"$ref": "#/components/messages/RelayWake"}},
    }
    messages["RelayWake"] = {
        "name": "RelayWake",
        "summary": "An empty message: there are new events in the log",
        "x-schema-version": 1,
        "x-current-schema-version": 1,
        "payload": {"type": "string", "maxLength": 0},
    }
    operations["wakeRelay"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/relay-wake"},
        "summary": "every process, after it commits events; every relay listens",
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "caseflow events",
            "version": "0.2.0",
            "description": "Every committed event of the caseflow log, published on NATS "
            f"JetStream (stream {EVENTS_STREAM}) as a masked view (ID and phone numbers "
            "and e-mail addresses masked, personal_data: masked, the stored row's hash) "
            "with its payload's schema_version — the log is the record, the bus is "
            "distribution, and caseflow's consumers read each event from the log; requests "
            "to departments, which carry the applicant in full (each one recorded on the "
            "case as PersonalDataDisclosed), and their answers (stream "
            f"{DEPT_STREAM}); and the dead letters of caseflow's consumers (stream "
            f"{DLQ_STREAM}). Payload schemas are versioned per event type: a message's "
            "x-schema-version is the version it describes, x-current-schema-version the "
            "one caseflow writes now; caseflow's consumers upcast older ones. The server "
            "admits NKEY-authenticated users only, each with the subjects of its kind "
            "(x-caseflow-access); only caseflow's relay publishes events.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "localhost:4222",
                "protocol": "nats",
                "security": [{"$ref": "#/components/securitySchemes/nkey"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "securitySchemes": {
                "nkey": {
                    "type": "asymmetricEncryption",
                    "description": "NATS NKEY: the client signs the server's nonce with its "
                    "Ed25519 seed; the server knows each user's public key and its "
                    "permissions. No anonymous access. A department system's credential "
                    "comes from caseflow's operator (`caseflow nats credentials "
                    "--department <authority>`), as one file with the seed, the server, "
                    "the inbox prefix, the stream, the consumer and the answer subject.",
                }
            },
        },
        "x-caseflow-access": _access(),
        "x-caseflow-consumers": {
            c.name: {
                "service": c.service,
                "stream": c.stream,
                "subjects": list(c.subjects),
                "summary": c.summary,
                "deadLetters": {"$ref": f"#/channels/dlq-{c.name}"},
                **({"redrive": {"$ref": f"#/channels/redrive-{c.name}"}} if c.redrive else {}),
            }
            for c in CONSUMERS
        },
    }


def _access() -> dict[str, Any]:
    """What each kind of user may publish and subscribe to, for an example of each."""
    examples = (
        access.Credential(name="processing", kind=access.Kind.service, public_key=_KEY),
        access.Credential(name="relay", kind=access.Kind.relay, public_key=_KEY),
        access.Credential(name="operator", kind=access.Kind.operator, public_key=_KEY),
        access.Credential(
            name="forestry-system",
            kind=access.Kind.department,
            authority="hc_forestry",
            public_key=_KEY,
        ),
    )
    described = {
        access.Kind.service: "intake, processing (shown), notify: each its own consumers; "
        "processing also publishes the department requests and keeps a consumer per "
        "authority",
        access.Kind.relay: "the relay's own connection in each service process",
        access.Kind.operator: "inspection: stream and consumer info, stored events and dead "
        "letters; asking for dead letters to be handled again (caseflow.redrive.>)",
        access.Kind.department: "a department system (hc_forestry's, named forestry-system): "
        "its authority's consumer only, its own answer subject",
    }
    found: dict[str, Any] = {}
    for credential in examples:
        allowed = access.permissions(credential, ["hc_forestry"]).as_config()
        found[credential.kind.value] = {"summary": described[credential.kind], **allowed}
    return found


_KEY = "U" + "A" * 55
"""A placeholder public key for the examples of :func:`_access`."""


def _departments(
    channels: dict[str, Any],
    messages: dict[str, Any],
    operations: dict[str, Any],
    schemas: dict[str, Any],
) -> None:
    authorities = list(department_authorities())
    parameter = {
        "enum": authorities,
        "description": "the authority's code (the items' forward_to), e.g. hc_forestry",
    }
    headers = {
        "DepartmentRequest": {
            MSG_ID_HEADER: {
                "type": "string",
                "description": "the CaseForwarded event's id: one request per forwarding",
            }
        },
        "DepartmentAnswer": {
            MSG_ID_HEADER: {
                "type": "string",
                "description": "a stable id per decision: caseflow records an answer once "
                "per credential and id (JetStream drops a repeat within 10 minutes, the "
                "idempotency key dept-answer:<credential>:<id> ever after); without it the "
                "stream sequence is used",
            }
        },
    }
    for name, model, kind, address, action, summary in (
        (
            "DepartmentRequest",
            DepartmentRequest,
            "requests",
            "caseflow.dept.{authority}.requests",
            "send",
            "A forwarded case for its department to decide. It carries the applicant in "
            "full (the department decides on them): each request is recorded on the case "
            "as PersonalDataDisclosed (to which authority, which fields, over this subject, "
            "why). A department system reads it "
            f"from the pull consumer processing keeps for the authority on stream "
            f"{DEPT_STREAM}, dept_<authority> (e.g. {dept_durable('hc_forestry')}; it may "
            "create none of its own), acks after its answer was stored, and answers on its "
            "credential's answer subject",
        ),
        (
            "DepartmentAnswer",
            DepartmentAnswer,
            "answers",
            "caseflow.dept.{authority}.answers.{credential}",
            "receive",
            "A department's decision, recorded as that authority's approve or reject by "
            "the officer it names, with the credential in delivered_by (only that "
            "credential may publish on its subject). An answer for a case not forwarded "
            "to that authority or not awaiting its answer, or naming an officer of "
            "another organisation, is refused: recorded on the case as ActionRefused "
            "(with the credential) and sent to "
            f"{dlq_subject('processing-dept-answers')}, as is an undecodable one",
        ),
    ):
        schemas[name] = _schema(model, schemas)
        messages[name] = {
            "name": name,
            "title": f"{name} v1",
            "summary": inspect.cleandoc(model.__doc__ or ""),
            "description": summary,
            "contentType": "application/json",
            "x-schema-version": 1,
            "x-current-schema-version": 1,
            "headers": {"type": "object", "properties": headers[name]},
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
        parameters: dict[str, Any] = {"authority": parameter}
        if "{credential}" in address:
            parameters["credential"] = {
                "description": "the department credential's name (`caseflow nats "
                "credentials --name`): only that credential may publish here",
                "examples": ["hc_forestry-system"],
            }
        channels[f"dept-{kind}"] = {
            "address": address,
            "title": f"department {kind}",
            "description": f"stream {DEPT_STREAM} on {DEPT_SUBJECTS}",
            "parameters": parameters,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"{action}{name}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/dept-{kind}"},
            "summary": summary,
        }


def _dead_letters(
    channels: dict[str, Any], messages: dict[str, Any], operations: dict[str, Any]
) -> None:
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "title": "DeadLetter",
        "summary": "A message a consumer could not handle, unchanged, with the reason in "
        "its headers",
        "description": "Reasons: " + "; ".join(_DEAD_LETTER_REASONS),
        "x-schema-version": 1,
        "x-current-schema-version": 1,
        "headers": {
            "type": "object",
            "required": [DLQ_REASON_HEADER, DLQ_SUBJECT_HEADER, DLQ_CONSUMER_HEADER],
            "properties": {
                DLQ_REASON_HEADER: {
                    "type": "string",
                    "maxLength": 1000,
                    "description": "why it was dead-lettered",
                    "examples": _DEAD_LETTER_REASONS,
                },
                DLQ_SUBJECT_HEADER: {"type": "string", "description": "where it was read"},
                DLQ_CONSUMER_HEADER: {"type": "string", "description": "the consumer"},
                MSG_ID_HEADER: {
                    "type": "string",
                    "description": "<consumer>:<the original Nats-Msg-Id>, when it had one "
                    "(event consumers)",
                },
            },
        },
        "payload": {"description": "the original message body, unchanged"},
    }
    for consumer in CONSUMERS:
        description = (
            f"Dead letters of {consumer.service}'s consumer {consumer.name} "
            f"({consumer.summary}; reads {', '.join(consumer.subjects)} on stream "
            f"{consumer.stream}). Stream {DLQ_STREAM}."
        )
        if consumer.name == "notify":
            description += (
                " Only events notify could not plan land here. Deliveries it planned but "
                "gave up on (a channel refused, or every retry failed) are not bus "
                "messages: they stay in notify's outbox as delivery dead letters "
                "(GET /dead-letters, re-drive with POST /dead-letters/redrive or `caseflow "
                "notify redrive`), and the case records NotificationFailed "
                "(caseflow.events.<case_kind>.NotificationFailed)."
            )
        channels[f"dlq-{consumer.name}"] = {
            "address": consumer.dead_letters,
            "title": f"dead letters of {consumer.name}",
            "description": description,
            "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
        }
        operations[f"deadLetter-{consumer.name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/dlq-{consumer.name}"},
            "summary": f"{consumer.name} gives up on a message",
        }
        if consumer.redrive:
            channels[f"redrive-{consumer.name}"] = {
                "address": redrive_subject(consumer.name),
                "title": f"redrive requests of {consumer.name}",
                "description": f"Requests to handle a dead letter of {consumer.name} again "
                f"(`caseflow bus redrive`; stream {REDRIVE_STREAM}, a work queue). The "
                f"consumer reads the letter named from {DLQ_STREAM}, handles its event as "
                "the log holds it, whatever its age, and deletes the letter once handled.",
                "messages": {"RedriveRequest": {"$ref": "#/components/messages/RedriveRequest"}},
            }
            operations[f"redrive-{consumer.name}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/redrive-{consumer.name}"},
                "summary": f"{consumer.name} handles a dead letter again",
            }
    messages["RedriveRequest"] = {
        "name": "RedriveRequest",
        "title": "RedriveRequest",
        "summary": "Handle this dead letter again (the operator asks)",
        "x-schema-version": 1,
        "x-current-schema-version": 1,
        "headers": {
            "type": "object",
            "properties": {
                MSG_ID_HEADER: {
                    "type": "string",
                    "description": "redrive:<sequence>: asking twice is asking once",
                }
            },
        },
        "payload": {
            "type": "object",
            "required": ["dead_letter"],
            "properties": {
                "dead_letter": {
                    "type": "integer",
                    "minimum": 1,
                    "description": f"the dead letter's sequence in {DLQ_STREAM}",
                }
            },
        },
    }
