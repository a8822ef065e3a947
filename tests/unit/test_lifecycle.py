"""The thin lifecycle: the events are the transitions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from shared.events import StoredEvent
from shared.lifecycle import CaseStatus, IllegalTransition, fold


def stored(event_type: str, version: int, **payload: object) -> StoredEvent:
    now = datetime.now(UTC)
    return StoredEvent(
        position=version,
        event_id=uuid.uuid4(),
        case_id=uuid.UUID(int=7),
        case_kind="application",
        version=version,
        event_type=event_type,
        schema_version=1,
        occurred_at=now,
        recorded_at=now,
        actor_user="u",
        actor_role="window_clerk",
        actor_station="XF",
        authority=None,
        delegation_id=None,
        delegation_version=None,
        correlation_id=None,
        causation_id=None,
        payload=dict(payload),
        prev_hash=None,
        hash="0" * 64,
    )


def test_received_then_accepted() -> None:
    state = fold([stored("CaseReceived", 1, item_code="pension"), stored("CaseAccepted", 2)])
    assert state.status is CaseStatus.ACCEPTED
    assert state.version == 2 and state.item_code == "pension"


def test_notifications_do_not_change_the_state() -> None:
    events = [
        stored("CaseReceived", 1),
        stored("CorrectionRequested", 2),
        stored("NotificationSent", 3),
    ]
    assert fold(events).status is CaseStatus.CORRECTION_REQUESTED


def test_a_case_cannot_be_accepted_twice() -> None:
    with pytest.raises(
        IllegalTransition, match="CaseAccepted is not allowed when the case is accepted"
    ):
        fold([stored("CaseReceived", 1), stored("CaseAccepted", 2), stored("CaseAccepted", 3)])


def test_nothing_happens_before_receipt() -> None:
    with pytest.raises(IllegalTransition):
        fold([stored("CaseAccepted", 1)])


def test_envelope_round_trips() -> None:
    event = stored("CaseReceived", 1, item_code="pension")
    assert StoredEvent.from_envelope(event.envelope()) == event
