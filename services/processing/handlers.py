"""Processing's event handlers: plain functions of an event and a unit of work."""

from __future__ import annotations

import structlog

from services.processing.domain import decide_on_receipt
from shared.bus.consumer import ConsumerSpec, UnitOfWork
from shared.events import StoredEvent
from shared.lifecycle import CaseStatus, fold

log = structlog.get_logger("caseflow.processing")


async def on_case_received(event: StoredEvent, uow: UnitOfWork) -> None:
    """Check completeness of a received application and record the decision."""
    history = await uow.read_case(event.case_id)
    state = fold(history)
    if state.status is not CaseStatus.RECEIVED:
        log.info("already decided", case_id=str(event.case_id), status=state.status)
        return
    decision = decide_on_receipt(event)
    await uow.append(event.case_id, state.version, [decision], case_kind=event.case_kind)
    log.info("case decided", case_id=str(event.case_id), decision=decision.event_type)


CONSUMERS = (
    ConsumerSpec(
        name="processing",
        subjects=("caseflow.events.application.CaseReceived",),
        handler=on_case_received,
    ),
)
