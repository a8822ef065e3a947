"""A case's lifecycle as a fold over its events: the events are the transitions.

The thin workflow of the foundation: received → accepted | correction requested.
Notifications don't change the state.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from types import MappingProxyType

from shared.events import StoredEvent


class CaseStatus(enum.StrEnum):
    """Where a case stands."""

    NEW = "new"
    RECEIVED = "received"
    ACCEPTED = "accepted"
    CORRECTION_REQUESTED = "correction_requested"


TRANSITIONS = MappingProxyType(
    {
        (CaseStatus.NEW, "CaseReceived"): CaseStatus.RECEIVED,
        (CaseStatus.RECEIVED, "CaseAccepted"): CaseStatus.ACCEPTED,
        (CaseStatus.RECEIVED, "CorrectionRequested"): CaseStatus.CORRECTION_REQUESTED,
    }
)
"""(status, event type) → next status. Event types absent here leave the status alone."""

STATE_CHANGING = frozenset(event_type for _, event_type in TRANSITIONS)


class IllegalTransition(Exception):
    """An event that the case's status does not allow."""


@dataclasses.dataclass(frozen=True)
class CaseState:
    """The state of a case after some of its events."""

    status: CaseStatus = CaseStatus.NEW
    version: int = 0
    item_code: str | None = None


def apply(state: CaseState, event: StoredEvent) -> CaseState:
    """The state after ``event``."""
    status = state.status
    if event.event_type in STATE_CHANGING:
        try:
            status = TRANSITIONS[(state.status, event.event_type)]
        except KeyError:
            raise IllegalTransition(
                f"{event.event_type} is not allowed when the case is {state.status}"
            ) from None
    item_code = event.payload.get("item_code", state.item_code)
    return CaseState(status=status, version=event.version, item_code=item_code)


def fold(events: Iterable[StoredEvent]) -> CaseState:
    """The state after all of ``events``, in order."""
    state = CaseState()
    for event in events:
        state = apply(state, event)
    return state
