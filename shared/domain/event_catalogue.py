"""The catalogue of event types: every type the log may hold, its current payload model
and schema version, and the case kinds it occurs in.

One source for everything that needs to know the events: the AsyncAPI document
(``shared.adapters.bus.asyncapi``), notify's rules and subscriptions (an unknown type is
refused), the fold (the workflow definitions, read here too) and the upcasters
(``shared.domain.upcasting`` holds the versions and the steps between them). Types come
from the workflows' transition tables (the events *are* the transitions) and from the
events the code records outside them (:func:`code_events`).
"""

from __future__ import annotations

import dataclasses
import functools

from pydantic import BaseModel

from shared.domain.delegation import PAYLOADS as DELEGATION_PAYLOADS
from shared.domain.messages import PAYLOADS, NotificationFailed
from shared.domain.upcasting import current_version
from shared.domain.workflow.definitions import load_workflows
from shared.domain.workflow.payloads import body_for


@dataclasses.dataclass(frozen=True, slots=True)
class EventType:
    """One type of event as the code records it today."""

    name: str
    model: type[BaseModel]
    """Its payload at the current schema version."""
    version: int
    """The current schema version (older ones are upcast on reading)."""
    kinds: tuple[str, ...]
    """The case kinds (streams) it occurs in."""


@functools.cache
def workflow_kinds() -> tuple[str, ...]:
    """The case kinds the workflow definitions run, sorted."""
    return tuple(sorted({workflow.case_kind for workflow in load_workflows()}))


def code_events() -> list[tuple[str, type[BaseModel], tuple[str, ...]]]:
    """Events the code records outside the workflows' transition tables, with their kinds."""
    every = workflow_kinds()
    told = (*every, "reception")  # notify tells about what happens to cases and visits
    found: list[tuple[str, type[BaseModel], tuple[str, ...]]] = [
        # A refused attempt; a refused opening is kept in an "attempt" stream of its own.
        ("ActionRefused", PAYLOADS["ActionRefused"], (*every, "attempt")),
        ("TaskClaimed", PAYLOADS["TaskClaimed"], every),
        ("TaskReleased", PAYLOADS["TaskReleased"], every),
        ("CallbackCompleted", body_for("complete_callback"), every),
        ("ClockWarningRaised", PAYLOADS["ClockWarningRaised"], ("application",)),
        ("ForwardOverdue", PAYLOADS["ForwardOverdue"], ("application",)),
        ("NotificationSent", PAYLOADS["NotificationSent"], told),
        ("NotificationFailed", NotificationFailed, told),
        ("VisitorReceived", PAYLOADS["VisitorReceived"], ("reception",)),
        ("PersonalDataViewed", PAYLOADS["PersonalDataViewed"], ("application",)),
        ("PersonalDataDisclosed", PAYLOADS["PersonalDataDisclosed"], ("application",)),
    ]
    found += [(t, model, ("delegation",)) for t, model in DELEGATION_PAYLOADS.items()]
    return found


@functools.cache
def event_payloads() -> dict[str, tuple[type[BaseModel], tuple[str, ...]]]:
    """Every event type → its current payload model and the case kinds it occurs in."""
    found: dict[str, tuple[type[BaseModel], set[str]]] = {}

    def add(event_type: str, model: type[BaseModel], kinds: tuple[str, ...]) -> None:
        model = PAYLOADS.get(event_type, model)
        found.setdefault(event_type, (model, set()))[1].update(kinds)

    for workflow in load_workflows():
        for step in (workflow.start, *workflow.transitions):
            add(step.event, body_for(step.action), (workflow.case_kind,))
    for event_type, model, kinds in code_events():
        add(event_type, model, kinds)
    return {k: (m, tuple(sorted(kinds))) for k, (m, kinds) in sorted(found.items())}


@functools.cache
def event_types() -> dict[str, EventType]:
    """Every event type by name, with its payload model, version and case kinds."""
    return {
        name: EventType(name, model, current_version(name), kinds)
        for name, (model, kinds) in event_payloads().items()
    }
