"""Processing's rules for a received case: accept it, or list every missing material
at once (一次性告知). Pure: takes the received payload, returns the events to append."""

from __future__ import annotations

import uuid

from shared.catalogue import ITEMS
from shared.events import NewEvent, StoredEvent
from shared.messages import CaseAccepted, CaseReceived, CorrectionRequested, MissingMaterial

_NAMESPACE = uuid.UUID("0e7d3c39-8a54-4d6f-b1f5-2b8d1f6a9c21")


def missing_materials(received: CaseReceived) -> list[MissingMaterial]:
    """Every required material of the item that was not handed in, in catalogue order."""
    handed_in = set(received.materials)
    return [
        MissingMaterial(code=m.code, name_zh=m.name_zh, name_en=m.name_en)
        for m in ITEMS[received.item_code].required
        if m.code not in handed_in
    ]


def decide_on_receipt(event: StoredEvent) -> NewEvent:
    """``CaseAccepted`` or one ``CorrectionRequested`` for a ``CaseReceived`` event."""
    received = CaseReceived.model_validate(event.payload)
    missing = missing_materials(received)
    if missing:
        event_type = "CorrectionRequested"
        payload = CorrectionRequested(item_code=received.item_code, missing=missing).model_dump()
    else:
        event_type = "CaseAccepted"
        payload = CaseAccepted(item_code=received.item_code).model_dump()
    return NewEvent(
        # Derived from the cause, so a repeated decision is recognised as the same one.
        event_id=uuid.uuid5(_NAMESPACE, f"decision:{event.event_id}"),
        event_type=event_type,
        correlation_id=event.correlation_id,
        causation_id=str(event.event_id),
        payload=payload,
    )
